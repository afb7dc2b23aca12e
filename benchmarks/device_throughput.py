"""Candidate evaluations per minute on one device, one candidate at a time against several at once (issue 24).

Small students leave a large GPU almost idle: a candidate's step is a few small kernels, so its time goes to
launching them. This benchmark evaluates the same seeded random candidates (n2n's default candidate settings:
steps, equal-compute scaling, batch, examples) with ``--workers`` processes sharing the device, 1 meaning serial in
this process, and reports evaluations per minute for each, with the GPU's utilisation sampled meanwhile (through
NVML, when nvidia-ml-py is installed). Run on the CPU with the same candidates (``--device cpu``), its figures are the
2-core machine's side of the comparison; the first k candidates are the same for any ``--candidates`` >= k.

Usage:
  python benchmarks/device_throughput.py --teacher T --data-dir ../shared/data/mnist --device cuda --workers 1,4,16
  python benchmarks/device_throughput.py --teacher T --data-dir ../shared/data/mnist --device cpu --workers 1,2 \\
      --candidates 4

Prints a table and writes the JSON to --json (default benchmarks/results/device_throughput_<device>.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import torch

from n2n.data import load_data
from n2n.models.io import load_model
from n2n.search.candidate import SerialEvaluator, build_student, costliest_first
from n2n.search.parallel import ProcessPoolEvaluator
from n2n.search.setup import eval_context
from n2n.settings import CompressConfig
from n2n.surgery import analyze, count_macs
from n2n.train.compute import enable_huge_pages

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _n2n import commit, machine  # noqa: E402
from candidate_cost import random_edits  # noqa: E402


class Utilisation:
    """The GPU's utilisation (percent of time a kernel ran), sampled every 0.2 s while in a ``with`` block; None
    where NVML is not there."""

    def __init__(self, device: str) -> None:
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._handle = None
        if device == "cuda":
            try:
                import pynvml

                pynvml.nvmlInit()
                self._nvml = pynvml
                self._handle = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
            except Exception:  # noqa: BLE001 - NVML absent or refused: no utilisation, the timing still holds
                self._handle = None

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)

    def __enter__(self) -> Utilisation:
        if self._handle is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._handle is not None:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="teacher directory (n2n train-teacher --out)")
    ap.add_argument("--data", default="mnist", help="data set, as n2n's --data (default mnist)")
    ap.add_argument("--data-dir", help="its files, as n2n's --data-dir")
    ap.add_argument("--device", default="cuda", choices=("cpu", "cuda", "mps"))
    ap.add_argument("--workers", default="1,4,16", help="comma-separated worker counts (1: serial in this process)")
    ap.add_argument("--candidates", type=int, default=32, help="seeded random candidates timed at each count")
    ap.add_argument("--serial-candidates", type=int, help="of those, how many the serial run times (default: all)")
    ap.add_argument("--json", type=Path, help="where to write the figures")
    args = ap.parse_args()
    enable_huge_pages()
    torch.set_num_threads(1)
    teacher, _ = load_model(args.teacher)
    data = load_data(args.data, args.data_dir, seed=0)
    cfg = CompressConfig(device=args.device).validate()
    analysis = analyze(teacher.eval(), data.input_shape)
    t0 = time.perf_counter()
    ctx = eval_context(teacher, analysis, data, cfg)
    setup_s = time.perf_counter() - t0
    cands = random_edits(ctx, analysis, args.candidates, seed=0)
    record: dict = {
        "command": " ".join(sys.argv),
        "commit": commit(),
        "machine": machine(),
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else args.device,
        "context_seconds": setup_s,
        "candidate_settings": {
            "steps": ctx.settings.steps,
            "batch_size": ctx.settings.batch_size,
            "max_step_scale": ctx.settings.max_step_scale,
            "examples": len(ctx.x_train),
            "val_examples": len(ctx.x_val),
            "precision": ctx.settings.compute.precision,
        },
        "candidates": [{"edits": e.key(), "macs": count_macs(build_student(ctx, e), ctx.input_shape)} for e in cands],
        "runs": [],
    }
    print(f"{'workers':>8}{'candidates':>12}{'seconds':>10}{'evals/min':>11}{'GPU util %':>12}", flush=True)
    for workers in (int(w) for w in args.workers.split(",")):
        batch = cands[: args.serial_candidates or len(cands)] if workers == 1 else cands
        batch = [batch[i] for i in costliest_first(ctx, batch, workers)]
        if workers == 1:
            evaluator = SerialEvaluator(ctx, 1)
            evaluator.evaluate(batch[:1])  # warm-up: CUDA context, kernels, allocator
        else:
            evaluator = ProcessPoolEvaluator(ctx, workers, 1)
            evaluator.evaluate(cands[:workers])  # start every worker (context sent, CUDA initialised) before timing
        try:
            with Utilisation(args.device) as util:
                t0 = time.perf_counter()
                results = evaluator.evaluate(batch)
                seconds = time.perf_counter() - t0
        finally:
            evaluator.close()
        run = {
            "workers": workers,
            "candidates": len(batch),
            "seconds": seconds,
            "evals_per_min": 60 * len(batch) / seconds,
            "gpu_utilisation_pct": util.mean,
            "per_candidate_s": {r.edits.key(): r.seconds for r in results},
            "invalid": sum(not r.valid for r in results),
        }
        record["runs"].append(run)
        util_text = "-" if util.mean is None else f"{util.mean:.0f}"
        print(f"{workers:>8}{len(batch):>12}{seconds:>10.1f}{run['evals_per_min']:>11.1f}{util_text:>12}", flush=True)
        out = args.json or Path(__file__).resolve().parent / "results" / f"device_throughput_{args.device}.json"
        out.write_text(json.dumps(record, indent=2) + "\n")  # after each count, so a cut-short run keeps what it timed


if __name__ == "__main__":
    main()
