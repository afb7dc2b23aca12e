"""Candidates evaluated in parallel worker processes on this machine (``--workers N``).

Each worker receives the evaluation context (teacher, distillation subset with the teacher's logits, validation
split) once, when it starts, and then only edits; it sends back one :class:`CandidateResult` per candidate. A
candidate trains with a fixed number of threads (``--candidate-threads``) whichever evaluator runs it, and is seeded
by its own architecture, so parallel and serial runs give the same results. A worker that dies (out of memory,
killed) costs its candidates one retry on a fresh pool; a candidate that fails twice is invalid (R = -1) with the
reason recorded, and the search goes on.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import torch

from n2n.errors import N2NError
from n2n.search.candidate import (
    CandidateResult,
    EvalContext,
    costliest_first,
    evaluate_candidate,
    invalid_result,
)
from n2n.surgery import Edits

log = logging.getLogger(__name__)

_WORKER_CTX: EvalContext | None = None


def _init_worker(ctx: EvalContext, threads: int, parent: int) -> None:
    global _WORKER_CTX
    _exit_with_parent(parent)
    torch.set_num_threads(threads)
    _WORKER_CTX = ctx


def _exit_with_parent(parent: int) -> None:
    """End this worker when the search process that started it is gone. A search killed without a chance to shut its
    pool down (SIGTERM, SIGKILL, out of memory) otherwise leaves its workers behind: they hang in interpreter shutdown
    once their queue closes. On Linux the kernel kills the worker (PR_SET_PDEATHSIG, which no Python code has to run
    for); elsewhere a thread polls for the parent."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0:  # 1 = PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the parent died before the request was in place (or before this worker ran)
                os._exit(1)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _evaluate_in_worker(edits: Edits) -> CandidateResult:
    assert _WORKER_CTX is not None, "worker used before its initializer ran"
    return evaluate_candidate(_WORKER_CTX, edits)


def default_workers(threads: int) -> int:
    """As many workers as fit the CPUs this process may use, ``threads`` each."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, threads))


class ProcessPoolEvaluator:
    """Evaluates a batch of candidates on ``workers`` processes; results come back in the order of the batch."""

    def __init__(
        self, ctx: EvalContext, workers: int, threads: int = 1, task: Callable[[Edits], CandidateResult] | None = None
    ) -> None:
        self.ctx, self.workers, self.threads = ctx, workers, threads
        self.task = task or _evaluate_in_worker  # a module-level function (it is sent to the workers by name)
        self._pool: ProcessPoolExecutor | None = None
        self._worked = False  # has any worker ever returned a result?

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: forking a process that already ran PyTorch's thread pools can deadlock
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.ctx, self.threads, os.getpid()),
            )
        return self._pool

    def _restart(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = None

    def evaluate(self, batch: Sequence[Edits]) -> list[CandidateResult]:
        """All candidates at once; those lost to a dying worker are retried one at a time on a fresh pool, so a
        candidate that kills its worker cannot take innocent ones down with it a second time."""
        results: dict[int, CandidateResult] = {}
        failed = self._run({i: batch[i] for i in costliest_first(self.ctx, batch, self.workers)}, results)
        if len(failed) < len(batch):
            self._worked = True
        if failed:
            log.warning(
                "%d candidate(s) lost in a worker (%s); retrying each once on a fresh pool",
                len(failed),
                next(iter(failed.values())),
            )
        twice: dict[int, tuple[str, float]] = {}
        for i in sorted(failed):
            self._restart()
            start = time.perf_counter()
            again = self._run({i: batch[i]}, results)
            if i in again:
                twice[i] = (again[i], start)
            else:
                self._worked = True
        if twice and not self._worked:
            raise N2NError(
                f"the {self.workers} worker processes could not start ({next(iter(twice.values()))[0]}). When "
                'calling n2n.compress from a script, put the call under `if __name__ == "__main__":` (workers are '
                "spawned and re-import the script); or set workers=1 (--workers 1) to evaluate in this process"
            )
        for i, (reason, start) in twice.items():
            log.warning("candidate %s failed twice in a worker; counting it as invalid", batch[i].key())
            results[i] = invalid_result(batch[i], reason, start)
        if twice:
            self._restart()
        return [results[i] for i in range(len(batch))]

    def _run(self, jobs: dict[int, Edits], results: dict[int, CandidateResult]) -> dict[int, str]:
        """Submit ``jobs`` to the pool; fills ``results`` and returns the reasons of the ones that failed."""
        pool = self._start()
        futures: dict[int, Future] = {i: pool.submit(self.task, edits) for i, edits in jobs.items()}
        failed: dict[int, str] = {}
        for i, future in futures.items():
            try:
                results[i] = future.result()
            except BrokenProcessPool:
                failed[i] = "worker process died (out of memory or killed)"
            except Exception as err:  # noqa: BLE001 - e.g. the context could not be sent to the worker
                failed[i] = f"{type(err).__name__}: {err}"
        return failed

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
