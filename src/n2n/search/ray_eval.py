"""Candidates evaluated as Ray tasks on an existing cluster (``--ray-address ADDRESS|auto``).

The evaluation context (teacher, distillation subset with the teacher's logits, validation split) goes into Ray's
object store once per run; each candidate is then one task that receives a reference to it and the candidate's
edits. A task trains with ``--candidate-threads`` threads (and asks Ray for that many CPUs, plus a GPU when
``--device`` is cuda and the cluster has GPUs) and candidates are seeded by their own architecture, so a Ray run
gives the same results as a serial one. A task that fails or is lost (its worker or node died) is retried once by
Ray; a second failure makes the candidate invalid (R = -1) with the reason recorded, and the search goes on.

Ray is imported lazily, so n2n works without it. Every node runs the tasks' code from its own installed n2n: on one
machine the same virtual environment serves all nodes; on several machines install n2n (``pip install
'n2n[ray]'``) in the same Python version on each.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

import torch

from n2n.errors import ConfigError, N2NError
from n2n.search.candidate import (
    CandidateResult,
    EvalContext,
    costliest_first,
    evaluate_candidate,
    invalid_result,
)
from n2n.surgery import Edits
from n2n.train.compute import HUGE_PAGES_ENV

log = logging.getLogger(__name__)

Task = Callable[[EvalContext, Edits], CandidateResult]
_ADDRESS = re.compile(r"^(auto|(ray://)?[\w.\-\[\]:]+:\d+)$")


def check_address(address: str) -> None:
    """Raise ConfigError unless ``address`` reads as ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``."""
    if not _ADDRESS.match(address):
        raise ConfigError(
            f"--ray-address must be auto, HOST:PORT (the head node's GCS address, e.g. 10.0.0.1:6379) or "
            f"ray://HOST:PORT; got {address!r}"
        )


def probe_address(address: str, timeout: float = 5.0) -> None:
    """Raise ConfigError unless something listens at ``HOST:PORT`` (``ray.init`` would wait a long time for it).

    ``auto`` is left to Ray, which fails at once when this machine runs no cluster.
    """
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"--ray-address {address}: nothing answers there ({err.strerror or err}); start the cluster with "
            "`ray start --head` and pass the address it prints"
        ) from None


def import_ray() -> ModuleType:
    """The ``ray`` module, or a ConfigError telling how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray-address needs Ray: pip install 'n2n[ray]'") from None
    return ray


def task_options(
    cluster: Mapping[str, float], threads: int, device: str, huge_pages: str | None = None
) -> dict[str, Any]:
    """Ray options of one candidate task.

    Args:
        cluster: the cluster's total resources (``ray.cluster_resources()``).
        threads: the CPU threads a candidate trains with (the task asks for as many CPUs).
        device: the device candidates train on (``--device``: "cpu", "cuda" or "mps"); a GPU is requested only for
            cuda and only when the cluster has one.
        huge_pages: the search process's ``THP_MEM_ALLOC_ENABLE``, if set: tasks run with the same (Ray does not
            pass the driver's environment on to its workers).

    Returns:
        Keyword arguments of ``RemoteFunction.options``: resources, one retry for any failure, tasks spread over nodes,
        and the huge-page setting as a runtime environment variable.
    """
    options: dict[str, Any] = {
        "num_cpus": threads,
        "num_gpus": 1 if device == "cuda" and cluster.get("GPU", 0) >= 1 else 0,
        "max_retries": 1,  # a lost task (worker or node died) runs once more ...
        "retry_exceptions": True,  # ... and so does one that raised (evaluate_candidate itself never raises)
        "scheduling_strategy": "SPREAD",
    }
    if huge_pages is not None:
        options["runtime_env"] = {"env_vars": {HUGE_PAGES_ENV: huge_pages}}
    return options


def _run(task: Task, ctx: EvalContext, edits: Edits, threads: int) -> tuple[CandidateResult, str]:
    """The body of a candidate task (``ctx`` arrives resolved from the object store); also returns the node id."""
    import ray

    torch.set_num_threads(threads)  # results depend on the thread count: keep it the serial run's
    return task(ctx, edits), ray.get_runtime_context().get_node_id()


class RayEvaluator:
    """Evaluates a batch of candidates as Ray tasks; results come back in the order of the batch.

    Attributes:
        nodes: how many candidate tasks finished on each node (by node id), for logs and tests.
    """

    def __init__(self, ctx: EvalContext, address: str, threads: int = 1, task: Task = evaluate_candidate) -> None:
        self.ray = import_ray()
        self.ctx, self.address, self.threads, self.task = ctx, address, threads, task
        self._owns_connection = not self.ray.is_initialized()  # reuse (and leave open) a caller's connection
        if self._owns_connection:
            try:
                self.ray.init(address=address, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise N2NError(
                    f"cannot connect to the Ray cluster at {address!r} ({str(err).splitlines()[0]}): start one with "
                    "`ray start --head` or pass the head node's address to --ray-address"
                ) from None
        try:
            cpus = max((n["Resources"].get("CPU", 0) for n in self.ray.nodes() if n["Alive"]), default=0)
            if cpus < threads:
                raise N2NError(
                    f"--candidate-threads {threads} asks for more CPUs per candidate than any node of the Ray "
                    f"cluster has ({cpus:g}): lower it or add bigger nodes"
                )
            resources = self.ray.cluster_resources()
            options = task_options(resources, threads, ctx.settings.compute.device, os.environ.get(HUGE_PAGES_ENV))
            self._slots = max(1, int(resources.get("CPU", 1) // threads))  # candidates the cluster runs at once
            self._remote = self.ray.remote(_run).options(**options)
            self._ctx_ref = self.ray.put(ctx)  # once per run; every task reads it from the object store
        except BaseException:
            self.close()
            raise
        self.nodes: Counter[str] = Counter()
        self._worked = False  # has any task ever returned a result?
        log.info("evaluating candidates on the Ray cluster at %s (%s)", address, options)

    def evaluate(self, batch: Sequence[Edits]) -> list[CandidateResult]:
        """All candidates at once; each task is retried once by Ray before its candidate counts as invalid."""
        start = time.perf_counter()
        order = costliest_first(self.ctx, batch, self._slots)  # Ray starts queued tasks in the order they came
        refs = {i: self._remote.remote(self.task, self._ctx_ref, batch[i], self.threads) for i in order}
        results: list[CandidateResult] = []
        failures: list[str] = []
        for i, edits in enumerate(batch):
            try:
                result, node = self.ray.get(refs[i])
            except self.ray.exceptions.RayError as err:
                reason = f"Ray task failed twice: {_describe(err)}"
                log.warning("candidate %s: %s", edits.key(), reason)
                failures.append(reason)
                results.append(invalid_result(edits, reason, start))
                continue
            self._worked = True
            self.nodes[node] += 1
            results.append(result)
        if failures and not self._worked:
            raise N2NError(
                f"no candidate task has run on the Ray cluster at {self.address} ({failures[0]}): every node needs "
                "n2n installed (pip install 'n2n[ray]') with the same Python version as this one"
            )
        return results

    def close(self) -> None:
        """Disconnect from the cluster (when this evaluator connected); the cluster itself keeps running."""
        if getattr(self, "nodes", None):
            log.info("Ray ran %d candidate tasks on %d node(s)", sum(self.nodes.values()), len(self.nodes))
        if self._owns_connection and self.ray.is_initialized():
            self.ray.shutdown()


def _describe(err: BaseException) -> str:
    """``Type: first line`` of a Ray error, or of the exception a task raised (RayTaskError wraps it)."""
    cause = getattr(err, "cause", None)
    err = cause if isinstance(cause, BaseException) else err
    lines = [line for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"
