"""Latency of saved students side by side, measured in interleaved rounds (issue 22, item 4).

A latency measured once per model at different moments of a long benchmark follows the machine's load more than the
model (the same architecture measured twice in ``frontier.py`` differed 2x beside other jobs). Here every model is
measured once per round, the rounds interleave the models, and each figure is the median over the rounds, so a load
that comes and goes touches every model alike; the ratios to ``--baseline`` are the figures to read.

Usage (the frontier benchmark's run directories; ``hand`` CNNs are rebuilt at their widths, untrained weights time
the same)::

    python benchmarks/latency_rounds.py --input 1,28,28 --classes 10 \\
        --model n2n-20K=runs/frontier/n2n-20000-s0/student --model uniform-20K=runs/frontier/uniform-20000-s0/student \\
        --hand hand-20K=8,16,32 --baseline uniform-20K --json benchmarks/results/latency_rounds.json

Each model gets batch-1 and batch-64 latency, PyTorch eager and onnxruntime, one thread, with its parameters and
multiply-accumulates.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _n2n import commit, machine  # noqa: E402
from _small_cnn import SmallCNN  # noqa: E402

from n2n.measure import TimingSettings, measure_cost  # noqa: E402
from n2n.models.io import load_model  # noqa: E402

TIMING = TimingSettings(warmup=3, min_repeats=10, max_repeats=200, budget_s=0.5, threads=1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", default=[], metavar="NAME=DIR", help="a saved model (repeatable)")
    p.add_argument(
        "--hand",
        action="append",
        default=[],
        metavar="NAME=A,B,C",
        help="a hand-designed CNN of benchmarks/_small_cnn.py at these widths (repeatable)",
    )
    p.add_argument("--input", required=True, help="one sample's shape, e.g. 1,28,28")
    p.add_argument("--classes", type=int, default=10, help="outputs of the --hand CNNs")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--baseline", help="the model the others' speed-ups are relative to")
    p.add_argument("--json", required=True)
    args = p.parse_args(argv)
    names = [spec.split("=", 1)[0] for spec in [*args.model, *args.hand]]
    if not names or any("=" not in spec for spec in [*args.model, *args.hand]):
        p.error("give at least one --model NAME=DIR or --hand NAME=A,B,C")
    if len(set(names)) != len(names):
        p.error("model names must be distinct")
    if args.baseline and args.baseline not in names:
        p.error(f"--baseline {args.baseline!r} is none of {', '.join(names)}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    shape = tuple(int(d) for d in args.input.split(","))
    models = {}
    for spec in args.model:
        name, path = spec.split("=", 1)
        models[name] = load_model(path)[0].eval()
    for spec in args.hand:
        name, widths = spec.split("=", 1)
        a, b, c = (int(w) for w in widths.split(","))
        models[name] = SmallCNN((a, b, c), shape[0], args.classes).eval()
    started = time.perf_counter()
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in models}
    for round_ in range(args.rounds):
        order = list(models) if round_ % 2 == 0 else list(reversed(models))  # no model always first or last
        for name in order:
            samples[name].append(measure_cost(models[name], shape, True, TIMING))
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    rows = []
    for name, costs in samples.items():
        latency = {
            runtime: {
                batch: statistics.median(c["latency_ms"][runtime][batch] for c in costs)
                for batch in costs[0]["latency_ms"][runtime]
            }
            for runtime in costs[0]["latency_ms"]
            if all(runtime in c["latency_ms"] for c in costs)
        }
        rows.append({"model": name, "params": costs[0]["params"], "macs": costs[0]["macs"], "latency_ms": latency})
    base = next((r for r in rows if r["model"] == args.baseline), None)
    if base is not None:
        for row in rows:
            row["speedup"] = {
                runtime: {b: base["latency_ms"][runtime][b] / ms for b, ms in per_batch.items()}
                for runtime, per_batch in row["latency_ms"].items()
                if runtime in base["latency_ms"]
            }
    result = {
        "benchmark": "latency_rounds",
        "command": " ".join(["python", "benchmarks/latency_rounds.py", *sys.argv[1:]]),
        "commit": commit(),
        "machine": machine(),
        "input": list(shape),
        "rounds": args.rounds,
        "baseline": args.baseline,
        "wall_time_s": time.perf_counter() - started,
        "rows": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print("\n| model | params | MACs | torch b1 ms | torch b64 ms | onnxruntime b1 ms | onnxruntime b64 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        cells = []
        for runtime in ("torch", "onnxruntime"):
            for b in ("1", "64"):
                ms = row["latency_ms"].get(runtime, {}).get(b)
                up = row.get("speedup", {}).get(runtime, {}).get(b)
                cells.append("" if ms is None else f"{ms:.3f}" + ("" if up is None else f" ({up:.2f}x)"))
        print(f"| {row['model']} | {row['params']:,} | {row['macs']:,} | " + " | ".join(cells) + " |")
    return result


if __name__ == "__main__":
    main()
