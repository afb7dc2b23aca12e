"""Compress hand-written gallery networks (not from our zoo) end to end on scikit-learn's digits.

For each model: train it as a teacher with cross-entropy, save its weights as safetensors, then run the real command
line exactly as a user with their own network would:

    n2n compress --teacher gallery:build --teacher-kwargs '{"name": "..."}' --weights W --data digits --out RUN

Prints a table (teacher vs student parameters and test accuracy) and writes benchmarks/results/gallery.json.

Usage: python benchmarks/gallery.py [--models mobilenetv2,densenet,senet] [--updates 6] [--work runs/gallery]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from gallery import build  # noqa: E402

import n2n  # noqa: E402
from n2n.recipes import Recipe  # noqa: E402
from n2n.teacher import train_classifier  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mobilenetv2,densenet,senet,bottleneck")
    parser.add_argument("--updates", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=30, help="teacher training epochs")
    parser.add_argument("--work", default="runs/gallery")
    args = parser.parse_args()

    data = n2n.load_data("digits")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "tests"), os.environ.get("PYTHONPATH", "")])}
    rows = []
    for name in args.models.split(","):
        work = Path(args.work) / name
        work.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        teacher = build(name)
        train_classifier(teacher, data, Recipe(epochs=args.epochs), seed=0)
        weights = work / "teacher.safetensors"
        save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(weights))
        run = work / "run"
        argv = [
            sys.executable,
            "-m",
            "n2n.cli",
            "compress",
            "--teacher",
            "gallery:build",
            "--teacher-kwargs",
            json.dumps({"name": name}),
            "--weights",
            str(weights),
            "--data",
            "digits",
            "--out",
            str(run),
            "--updates",
            str(args.updates),
        ]
        print("$ n2n " + " ".join(argv[3:]), flush=True)
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, env=env)
        report = json.loads((run / "report.json").read_text())
        rows.append(
            {
                "model": name,
                "teacher_params": report["teacher"]["params"],
                "student_params": report["student"]["params"],
                "compression": report["compression"],
                "teacher_test_accuracy": report["teacher"]["test_accuracy"],
                "student_test_accuracy": report["student"]["test_accuracy"],
                "removed": report["student"]["edits"]["removed"],
                "evaluations": report["evaluations"],
                "seconds": time.perf_counter() - t0,
            }
        )
    print(
        f"\n{'model':<12} {'teacher':>9} {'student':>9} {'ratio':>7} {'teacher acc':>12} {'student acc':>12} {'s':>6}"
    )
    for r in rows:
        print(
            f"{r['model']:<12} {r['teacher_params']:>9,} {r['student_params']:>9,} {r['compression']:>6.1f}x "
            f"{r['teacher_test_accuracy']:>12.2%} {r['student_test_accuracy']:>12.2%} {r['seconds']:>6.0f}"
        )
    out = HERE / "results" / "gallery.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"data": "digits", "updates": args.updates, "rows": rows}, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
