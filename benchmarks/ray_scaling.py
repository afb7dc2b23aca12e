"""Scaling through Ray: evaluations per minute on a two-node Ray cluster on localhost against a serial loop.

The same candidates (random shrinks of a vgg11 teacher on scikit-learn digits) are evaluated two ways, side by side:
  serial      SerialEvaluator, one thread (``--workers 1``);
  ray         RayEvaluator on a fresh cluster of 2 nodes x 1 CPU started on this machine (``--ray-address``):
              "ray cold" is the first batch (workers start, import torch and fetch the context from the object
              store), then "ray" is the same batch again (what every later policy update of a search costs).
Serial and warm Ray batches alternate for ``--rounds`` rounds, so that a change in the load of a shared machine
hits both; each round gives a ratio. Every evaluation must give exactly the serial results. The (1-minute) load
average is recorded beside every timing.

Usage:
  python benchmarks/ray_scaling.py [--candidates 6] [--steps 60] [--rounds 2]

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

from n2n.data import load_data
from n2n.search.candidate import CandidateResult, Evaluator, SerialEvaluator
from n2n.search.policies import RandomPolicy
from n2n.search.ray_eval import RayEvaluator
from n2n.search.ray_local import RAY_ENV, LocalRayCluster
from n2n.search.setup import eval_context
from n2n.search.stages import actions_to_edits
from n2n.settings import CompressConfig
from n2n.surgery import Edits, analyze
from n2n.teacher import train_teacher
from n2n.train.evaluate import predict_logits

HERE = Path(__file__).resolve().parent


def _timed(evaluator: Evaluator, batch: list[Edits]) -> tuple[list[CandidateResult], float]:
    start = time.perf_counter()
    results = evaluator.evaluate(batch)
    return results, time.perf_counter() - start


def _same(a: list[CandidateResult], b: list[CandidateResult]) -> bool:
    return [r._replace(seconds=0.0) for r in a] == [r._replace(seconds=0.0) for r in b]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=6)
    parser.add_argument("--steps", type=int, default=60, help="distillation steps per candidate")
    parser.add_argument("--rounds", type=int, default=2, help="alternating serial / warm Ray timings")
    args = parser.parse_args()
    os.environ.update(RAY_ENV)
    load_before = os.getloadavg()

    data = load_data("digits")
    teacher, _ = train_teacher("vgg11", data, width=0.5, epochs=3, seed=0)
    teacher.eval()
    cfg = CompressConfig(steps=args.steps, seed=0)
    analysis = analyze(teacher, data.input_shape)
    ctx = eval_context(teacher, analysis, data, cfg, predict_logits(teacher, data.train.x, cfg.eval_batch_size))
    policy, generator = RandomPolicy("shrink", cfg.fractions), torch.Generator().manual_seed(0)
    features, decidable = analysis.features(), analysis.shrinkable()
    batch = list(
        dict.fromkeys(
            actions_to_edits("shrink", analysis, policy.sample(features, decidable, generator).actions, cfg.fractions)
            for _ in range(args.candidates)
        )
    )

    serial_evaluator = SerialEvaluator(ctx, threads=1)
    serial, _ = _timed(serial_evaluator, batch)  # the reference results (and warm-up of this process)
    timings: dict[str, list[dict]] = {"serial": [], "ray cold": [], "ray": []}

    def record(name: str, results: list[CandidateResult], seconds: float) -> None:
        same = _same(results, serial)
        timings[name].append({"seconds": seconds, "load": os.getloadavg()[0], "same_as_serial": same})

    with LocalRayCluster(nodes=2, cpus=1) as cluster:
        evaluator = RayEvaluator(ctx, cluster.address, threads=1)
        try:
            record("ray cold", *_timed(evaluator, batch))
            for _ in range(args.rounds):
                record("serial", *_timed(serial_evaluator, batch))
                record("ray", *_timed(evaluator, batch))
            nodes = len(evaluator.nodes)
        finally:
            evaluator.close()
    rows = {}
    for name, runs in timings.items():
        seconds = sum(r["seconds"] for r in runs) / len(runs)
        rows[name] = {"seconds": seconds, "evals_per_min": 60 * len(batch) / seconds, "runs": runs}
        rows[name]["ratio_to_serial"] = rows["serial"]["seconds"] / seconds
    rows["ray"]["round_ratios"] = [
        s["seconds"] / r["seconds"] for s, r in zip(timings["serial"], timings["ray"], strict=True)
    ]

    report = {
        "candidates": len(batch),
        "steps": args.steps,
        "rounds": args.rounds,
        "teacher": "vgg11 width 0.5 on digits",
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray_nodes_used": nodes,
        "all_same_as_serial": all(r["same_as_serial"] for runs in timings.values() for r in runs),
        "rows": rows,
    }
    print(
        f"{len(batch)} candidates x {args.steps} steps, {args.rounds} rounds; load average before "
        f"{load_before[0]:.1f}, after {report['load_average_after'][0]:.1f} on {os.cpu_count()} CPUs; Ray used "
        f"{nodes} nodes; all results identical to serial: {report['all_same_as_serial']}"
    )
    print(f"{'evaluator':<10} {'seconds':>8} {'evals/min':>10} {'x serial':>9}  per round")
    for name, row in rows.items():
        per_round = ", ".join(f"{r:.2f}" for r in row.get("round_ratios", []))
        print(
            f"{name:<10} {row['seconds']:>8.1f} {row['evals_per_min']:>10.1f} "
            f"{row['ratio_to_serial']:>9.2f}  {per_round}"
        )
    out = HERE / "results" / "ray_scaling.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
