"""How stable is the latency a search measures per candidate? (``--max-latency-ms``, ``--objective latency``)

A latency constraint decides which students are feasible, so its measurement must give the same answer for the
same student twice. A search measures each candidate once, in its worker, right after training it, while the other
workers train theirs. This benchmark measures each ``--model`` ``--times`` times in those conditions (a process
training a small CNN on every other core meanwhile, unless ``--no-load``) under each timing variant, interleaved,
and reports the spread of the repeated measurements: max/min ratio and the coefficient of variation, with the
seconds one measurement costs. Variants:

- ``median-50``: the median of at most 50 calls in 0.3 s (n2n's search timing before this benchmark);
- ``min-50``: the fastest of those calls;
- ``median-0.3s``: the median of every call in 0.3 s (small models reach the budget instead of stopping after 50
  calls of a fraction of a millisecond);
- ``min-0.3s``: the fastest of those (n2n's ``SEARCH_TIMING`` since).

Usage:
  python benchmarks/search_timing.py --input 1,28,28 --model uniform=runs/fl/uniform/student --model n2n=... \\
      --json benchmarks/results/search_timing.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _n2n import commit, machine  # noqa: E402

from n2n.measure import TimingSettings, torch_latency_ms  # noqa: E402
from n2n.models.io import load_model  # noqa: E402


def _busy(stop, shape) -> None:
    """A candidate's training on one core, as a search's other worker does, until ``stop`` is set."""
    torch.set_num_threads(1)
    model = nn.Sequential(nn.Conv2d(shape[0], 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))  # fmt: skip
    opt = torch.optim.Adam(model.parameters())
    x, y = torch.randn(128, *shape), torch.randint(0, 10, (128,))
    while not stop.is_set():
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


CAPPED = TimingSettings(warmup=2, min_repeats=5, max_repeats=50, budget_s=0.3, threads=1)
VARIANTS = {
    "median-50": CAPPED,
    "min-50": dataclasses.replace(CAPPED, statistic="min"),
    "median-0.3s": dataclasses.replace(CAPPED, max_repeats=100_000),
    "min-0.3s": dataclasses.replace(CAPPED, max_repeats=100_000, statistic="min"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, metavar="NAME=DIR", help="a saved model (repeatable)")
    p.add_argument("--input", required=True, help="one sample's shape, e.g. 1,28,28")
    p.add_argument("--times", type=int, default=15, help="measurements of each model per variant")
    p.add_argument("--no-load", action="store_true", help="measure on an otherwise idle machine")
    p.add_argument("--json", required=True)
    args = p.parse_args()
    shape = tuple(int(v) for v in args.input.split(","))
    models = {}
    for spec in args.model:
        name, _, path = spec.partition("=")
        models[name] = load_model(path)[0].eval()
    stop = multiprocessing.get_context("spawn").Event()
    others = max(0, len(os.sched_getaffinity(0)) - 1) if not args.no_load else 0
    load = [multiprocessing.get_context("spawn").Process(target=_busy, args=(stop, shape)) for _ in range(others)]
    for proc in load:
        proc.start()
    time.sleep(3 if load else 0)  # let the load start training
    figures: dict = {name: {v: [] for v in VARIANTS} for name in models}
    cost: dict = {v: [] for v in VARIANTS}
    try:
        for _ in range(args.times):
            for name, model in models.items():
                for variant, timing in VARIANTS.items():
                    t0 = time.perf_counter()
                    figures[name][variant].append(torch_latency_ms(model, shape, 1, timing))
                    cost[variant].append(time.perf_counter() - t0)
    finally:
        stop.set()
        for proc in load:
            proc.join()
    rows = []
    print(f"{'model':<16}{'variant':<13}{'median ms':>10}{'max/min':>9}{'CV %':>7}{'s each':>8}")
    for name in models:
        for variant in VARIANTS:
            ms = figures[name][variant]
            row = {
                "model": name,
                "variant": variant,
                "median_ms": statistics.median(ms),
                "max_over_min": max(ms) / min(ms),
                "cv_pct": 100 * statistics.pstdev(ms) / statistics.mean(ms),
                "seconds_per_measurement": statistics.mean(cost[variant]),
                "measurements_ms": ms,
            }
            rows.append(row)
            print(
                f"{name:<16}{variant:<13}{row['median_ms']:>10.3f}{row['max_over_min']:>9.2f}{row['cv_pct']:>7.1f}"
                f"{row['seconds_per_measurement']:>8.3f}"
            )
    record = {
        "benchmark": "search_timing",
        "command": " ".join(sys.argv),
        "commit": commit(),
        "machine": machine(),
        "load_processes": others,
        "variants": {v: dataclasses.asdict(t) for v, t in VARIANTS.items()},
        "rows": rows,
    }
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
