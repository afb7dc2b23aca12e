"""Scaling through Ray: evaluations per minute on a two-node Ray cluster on localhost against a serial loop.

The same candidates (random shrinks of a vgg11 teacher on scikit-learn digits, default candidate settings) are
evaluated three ways, side by side in one run:
  serial      SerialEvaluator, one thread (``--workers 1``);
  pool2       ProcessPoolEvaluator with 2 local worker processes (``--workers 2``), for reference;
  ray         RayEvaluator on a fresh cluster of 2 nodes x 1 CPU started on this machine (``--ray-address``):
              "ray cold" is the first batch (workers start, import torch and fetch the context from the object
              store), "ray warm" the same batch again (what every later policy update of a search costs).
Each evaluator must give exactly the serial results. The machine may be shared: compare the ratios, and read the
load average recorded beside them.

Usage:
  python benchmarks/ray_scaling.py [--candidates 8] [--steps 150]

Prints a table and writes benchmarks/results/ray_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from n2n.compress import _context
from n2n.data import load_data
from n2n.search.candidate import CandidateResult, Evaluator, SerialEvaluator
from n2n.search.config import CompressConfig
from n2n.search.distill import predict_logits
from n2n.search.loop import actions_to_edits
from n2n.search.parallel import ProcessPoolEvaluator
from n2n.search.policies import RandomPolicy
from n2n.search.ray_eval import RayEvaluator
from n2n.search.ray_local import RAY_ENV, LocalRayCluster
from n2n.surgery import Edits, analyze
from n2n.teacher import train_teacher

HERE = Path(__file__).resolve().parent


def _timed(evaluator: Evaluator, batch: list[Edits]) -> tuple[list[CandidateResult], float]:
    start = time.perf_counter()
    results = evaluator.evaluate(batch)
    return results, time.perf_counter() - start


def _same(a: list[CandidateResult], b: list[CandidateResult]) -> bool:
    return [r._replace(seconds=0.0) for r in a] == [r._replace(seconds=0.0) for r in b]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--steps", type=int, default=150, help="distillation steps per candidate")
    args = parser.parse_args()
    os.environ.update(RAY_ENV)
    load_before = os.getloadavg()

    data = load_data("digits")
    teacher, _ = train_teacher("vgg11", data, width=0.5, epochs=3, seed=0)
    teacher.eval()
    cfg = CompressConfig(steps=args.steps, seed=0)
    analysis = analyze(teacher, data.input_shape)
    ctx = _context(teacher, analysis, data, cfg, predict_logits(teacher, data.train.x, cfg.eval_batch_size))
    policy, generator = RandomPolicy("shrink", cfg.fractions), torch.Generator().manual_seed(0)
    features, decidable = analysis.features(), analysis.shrinkable()
    batch = list(
        dict.fromkeys(
            actions_to_edits("shrink", analysis, policy.sample(features, decidable, generator).actions, cfg.fractions)
            for _ in range(args.candidates)
        )
    )

    rows: dict[str, dict] = {}
    serial, seconds = _timed(SerialEvaluator(ctx, threads=1), batch)
    rows["serial"] = {"seconds": seconds}
    pool = ProcessPoolEvaluator(ctx, workers=2, threads=1)
    try:
        results, seconds = _timed(pool, batch)
        rows["pool2"] = {"seconds": seconds, "same_as_serial": _same(results, serial)}
    finally:
        pool.close()
    with LocalRayCluster(nodes=2, cpus=1) as cluster:
        evaluator = RayEvaluator(ctx, cluster.address, threads=1)
        try:
            for name in ("ray cold", "ray warm"):
                results, seconds = _timed(evaluator, batch)
                rows[name] = {
                    "seconds": seconds,
                    "same_as_serial": _same(results, serial),
                    "nodes": len(evaluator.nodes),
                }
        finally:
            evaluator.close()
    for row in rows.values():
        row["evals_per_min"] = 60 * len(batch) / row["seconds"]
        row["ratio_to_serial"] = rows["serial"]["seconds"] / row["seconds"]

    report = {
        "candidates": len(batch),
        "steps": args.steps,
        "teacher": "vgg11 width 0.5 on digits",
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "rows": rows,
    }
    print(
        f"{len(batch)} candidates, {args.steps} steps each; load average before {load_before[0]:.1f}, "
        f"after {report['load_average_after'][0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'evaluator':<10} {'seconds':>8} {'evals/min':>10} {'x serial':>9} {'same':>5}")
    for name, row in rows.items():
        print(
            f"{name:<10} {row['seconds']:>8.1f} {row['evals_per_min']:>10.1f} {row['ratio_to_serial']:>9.2f} "
            f"{str(row.get('same_as_serial', '-')):>5}"
        )
    out = HERE / "results" / "ray_scaling.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
