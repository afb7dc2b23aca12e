"""End-to-end benchmark of the README's targets: the real commands, timed, on 2 CPU cores.

Cases:
  demo   `n2n demo` (vgg11 width 0.5 on scikit-learn digits). Target: < 10 min, >= 5x fewer parameters,
         test accuracy within 1 point of the teacher's.
  mnist  `n2n train-teacher --arch vgg13 --width 0.5 --data mnist --epochs 3`, then `n2n compress` with default
         settings. Target: >= 20x fewer parameters within 0.5 points, compress under 1 hour.

Usage:
  python benchmarks/end_to_end.py demo
  python benchmarks/end_to_end.py mnist --data-dir ../shared/data/mnist [--work runs/bench] [--reuse-teacher]
  python benchmarks/end_to_end.py mnist --work runs/bench --existing   # tabulate a finished run again

Prints a table and writes benchmarks/results/<case>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
N2N = [sys.executable, "-m", "n2n.cli"]
TARGETS = {
    "demo": {"compression": 5.0, "max_drop_pts": 1.0, "max_seconds": 600.0},
    "mnist": {"compression": 20.0, "max_drop_pts": 0.5, "max_seconds": 3600.0},
}


def run(argv: list[str]) -> float:
    """Run an n2n command, streaming its output; returns its wall time in seconds."""
    print("$ n2n " + " ".join(argv[3:]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(argv, check=True)
    return time.perf_counter() - t0


def overhead(report: dict) -> dict[str, float]:
    """The run's wall time spent neither in candidate evaluation (training and scoring) nor in the fine-tune."""
    parts, wall = report["seconds"], report["wall_time_s"]
    inside = parts.get("candidates", 0.0) + parts.get("evaluation", 0.0) + parts.get("finetune", 0.0)
    return {"seconds": wall - inside, "share": (wall - inside) / wall, "scoring": parts.get("evaluation", 0.0) / wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=sorted(TARGETS))
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--work", default="runs/bench", help="directory for the teacher and the run")
    parser.add_argument("--reuse-teacher", action="store_true", help="mnist: keep an already trained teacher")
    parser.add_argument(
        "--existing",
        action="store_true",
        help="mnist: run nothing; tabulate the finished run in WORK/mnist/compress (its recorded command, wall time)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    work = Path(args.work) / args.case
    seconds: dict[str, float] = {}
    if args.case == "demo":
        shutil.rmtree(work, ignore_errors=True)
        seconds["demo"] = run([*N2N, "demo", "--out", str(work), "--seed", str(args.seed)])
        run_dir, total = work / "compress", seconds["demo"]
        commands = [f"n2n demo --seed {args.seed}"]
    else:
        teacher = work / "teacher"
        train = [
            "train-teacher",
            "--arch",
            "vgg13",
            "--width",
            "0.5",
            "--data",
            "mnist",
            "--data-dir",
            args.data_dir,
            "--epochs",
            "3",
            "--seed",
            str(args.seed),
            "--out",
            str(teacher),
            "--overwrite",
        ]
        if not (args.existing or args.reuse_teacher and (teacher / "spec.json").exists()):
            seconds["train_teacher"] = run([*N2N, *train])
        run_dir = work / "compress"
        compress = [
            "compress",
            "--teacher",
            str(teacher),
            "--data",
            "mnist",
            "--data-dir",
            args.data_dir,
            "--seed",
            str(args.seed),
            "--out",
            str(run_dir),
        ]
        if args.existing:  # the command the run recorded, and the wall time it reported
            recorded = json.loads((run_dir / "run.json").read_text())["command"]
            seconds["compress"] = json.loads((run_dir / "report.json").read_text())["wall_time_s"]
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
            seconds["compress"] = run([*N2N, *compress])
            recorded = "n2n " + " ".join(compress)
        total = seconds["compress"]
        commands = ["n2n " + " ".join(train), recorded]

    report = json.loads((run_dir / "report.json").read_text())
    t, s = report["teacher"], report["student"]
    drop = (t["test_accuracy"] - s["test_accuracy"]) * 100
    target = TARGETS[args.case]
    checks = {
        "compression": report["compression"] >= target["compression"],
        "accuracy": drop <= target["max_drop_pts"],
        "time": total <= target["max_seconds"],
    }
    result = {
        "case": args.case,
        "commands": commands,
        "teacher": {k: t[k] for k in ("params", "flops", "val_accuracy", "test_accuracy")},
        "student": {k: s[k] for k in ("params", "flops", "val_accuracy", "test_accuracy", "edits")},
        "compression": report["compression"],
        "flops_reduction": t["flops"] / max(1, s["flops"]),
        "accuracy_drop_pts": drop,
        "evaluations": report["evaluations"],
        "seconds": seconds,
        "search_seconds": report["seconds"],
        "measured_cost": report.get("cost"),
        "overhead": overhead(report),
        "targets": target,
        "met": checks,
        "machine": {
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
        },
    }
    rows = [
        ("teacher params", f"{t['params']:,}"),
        ("student params", f"{s['params']:,}"),
        ("compression", f"{report['compression']:.1f}x (target >= {target['compression']:.0f}x)"),
        ("FLOPs reduction", f"{result['flops_reduction']:.1f}x"),
        ("teacher test acc", f"{t['test_accuracy']:.2%}"),
        ("student test acc", f"{s['test_accuracy']:.2%}"),
        ("accuracy drop", f"{drop:+.2f} pts (target <= {target['max_drop_pts']})"),
        ("candidates evaluated", str(report["evaluations"])),
        *(
            (f"latency speed-up ({engine})", ", ".join(f"batch {b}: {x:.2f}x" for b, x in by_batch.items()))
            for engine, by_batch in (report.get("cost") or {}).get("speedup", {}).get("latency", {}).items()
        ),
        ("wall time", f"{total:.0f} s (target <= {target['max_seconds']:.0f} s)"),
        (
            "outside candidates",
            "{share:.1%} of the run's wall time ({seconds:.0f} s: teacher logits, start-up, policies, reports; "
            "candidate scoring is a further {scoring:.1%})".format(**result["overhead"]),
        ),
        ("all targets met", str(all(checks.values()))),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    out = HERE / "results" / f"{args.case}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
