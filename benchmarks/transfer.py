"""Policy transfer (paper section 4.3) at CPU scale: does a removal policy trained on a small teacher help a larger one?

1. Train two teachers on MNIST: a small one (vgg11) and a larger one (vgg19), same width, one epoch each.
2. Train the removal policy on the small teacher (`n2n compress --stages remove`).
3. On the larger teacher, run the removal stage from scratch and from the pre-trained policy (`--init-policy`),
   for 3 seeds each, and compare the mean reward over the first 10 policy updates.

The paper reports 0.81 (pre-trained) vs 0.50 (scratch) for ResNet-18 -> ResNet-34 and 0.52 vs -0.07 for
VGG-11 -> VGG-19 (CIFAR-10, GPU budget). Here everything is shrunk to fit about 30-40 minutes on 2 CPU cores.

Usage:
  python benchmarks/transfer.py [--data-dir ../shared/data/mnist] [--work runs/transfer] [--quick]

Prints a table and writes benchmarks/results/transfer.json (--quick: a tiny smoke run on digits, no JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from _n2n import N2N, run_quietly

HERE = Path(__file__).resolve().parent
FIRST_UPDATES = 10

#: The CPU-scale settings (the paper: 5-epoch candidates on the full CIFAR-10 training set, 100+ updates).
SETTINGS = {
    "data": "mnist",
    "max_train": 5000,
    "width": 0.25,
    "teacher_epochs": 1,
    "source_updates": 8,
    "target_updates": FIRST_UPDATES,
    "rollouts": 3,
    "steps": 10,
    "batch_size": 32,
    "candidate_examples": 1000,
    "max_step_scale": 1.0,  # every candidate trains the same steps (as when seeds 0-1 were measured)
    "seeds": [0, 1, 2],
}
QUICK = {
    **SETTINGS,
    "data": "digits",
    "max_train": None,
    "width": 0.125,
    "source_updates": 2,
    "target_updates": 2,
    "rollouts": 2,
    "steps": 3,
    "candidate_examples": 200,
    "seeds": [0],
}


def mean_reward(run_dir: Path, first: int) -> float:
    """Mean of the per-update mean rewards over the first ``first`` policy updates of ``run_dir``."""
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    means = [e["reward_mean"] for e in events if e["event"] == "update"][:first]
    return statistics.fmean(means)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--work", default="runs/transfer", help="directory for the teachers and the runs")
    parser.add_argument("--source", default="vgg11", help="the small teacher the policy is trained on")
    parser.add_argument("--target", default="vgg19", help="the larger teacher the policy is transferred to")
    parser.add_argument("--workers", default="2")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run on digits (writes no results)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds to run (default 0 1 2)")
    parser.add_argument(
        "--keep-rows",
        action="store_true",
        help="keep the rows of seeds not run now from the existing results/transfer.json (same settings only)",
    )
    parser.add_argument(
        "--summarise", action="store_true", help="run nothing: tabulate the seeds whose two runs have finished"
    )
    args = parser.parse_args()
    s = QUICK if args.quick else SETTINGS
    work = Path(args.work)
    data = ["--data", s["data"]] + (["--data-dir", args.data_dir] if s["data"] != "digits" else [])
    if s["max_train"]:
        data += ["--max-train", str(s["max_train"])]
    search = [
        "--stages", "remove", "--rollouts", str(s["rollouts"]), "--steps", str(s["steps"]),
        "--batch-size", str(s["batch_size"]), "--candidate-examples", str(s["candidate_examples"]),
        "--max-step-scale", str(s["max_step_scale"]), "--finetune-epochs", "0", "--workers", args.workers,
    ]  # fmt: skip
    seconds: dict[str, float] = {}
    t_start = time.perf_counter()

    # -- teachers
    for arch in () if args.summarise else (args.source, args.target):
        out = work / f"teacher_{arch}"
        if not (out / "model.safetensors").is_file():
            seconds[f"teacher_{arch}"] = run_quietly(
                [*N2N, "train-teacher", "--arch", arch, "--width", str(s["width"]), "--epochs",
                 str(s["teacher_epochs"]), *data, "--out", str(out)]
            )  # fmt: skip

    # -- the policy, trained on the small teacher
    source_run = work / "source"
    if not args.summarise and not (source_run / "policy_remove.json").is_file():
        seconds["source"] = run_quietly(
            [*N2N, "compress", "--teacher", str(work / f"teacher_{args.source}"), *data, *search,
             "--updates", str(s["source_updates"]), "--seed", "100", "--out", str(source_run)]
        )  # fmt: skip

    # -- the larger teacher: from scratch vs from the pre-trained policy
    rows = []
    seeds = args.seeds or s["seeds"]
    for seed in seeds:
        row: dict[str, float | int] = {"seed": seed}
        if args.summarise and not all(
            (work / f"{n}_{seed}" / "report.json").is_file() for n in ("scratch", "pretrained")
        ):
            continue
        for name, extra in (("scratch", []), ("pretrained", ["--init-policy", str(source_run)])):
            out = work / f"{name}_{seed}"
            if not (out / "report.json").is_file():
                seconds[f"{name}_{seed}"] = run_quietly(
                    [*N2N, "compress", "--teacher", str(work / f"teacher_{args.target}"), *data, *search,
                     "--updates", str(s["target_updates"]), "--seed", str(seed), *extra, "--out", str(out)]
                )  # fmt: skip
            row[name] = mean_reward(out, FIRST_UPDATES)
        rows.append(row)
        print(f"seed {seed}: scratch {row['scratch']:+.3f}  pretrained {row['pretrained']:+.3f}", flush=True)

    if not rows:
        print("no seed has finished both runs yet")
        return 1
    previous = HERE / "results" / "transfer.json"
    if args.keep_rows and previous.is_file():
        earlier = json.loads(previous.read_text())
        if earlier.get("settings") != s:
            print("--keep-rows: the existing results used other settings; not merging them")
        else:
            rows += [{**r, "earlier_run": True} for r in earlier["rows"] if r["seed"] not in seeds]
            rows.sort(key=lambda r: r["seed"])
    mean = {k: statistics.fmean(r[k] for r in rows) for k in ("scratch", "pretrained")}
    print(f"\n{args.source} -> {args.target} (width {s['width']}, {s['data']}): mean reward over the first "
          f"{min(FIRST_UPDATES, s['target_updates'])} updates")  # fmt: skip
    print(f"{'seed':>6} {'scratch':>10} {'pretrained':>11}")
    for r in rows:
        print(f"{r['seed']:>6} {r['scratch']:>+10.3f} {r['pretrained']:>+11.3f}")
    print(f"{'mean':>6} {mean['scratch']:>+10.3f} {mean['pretrained']:>+11.3f}")
    if args.quick:
        return 0
    result = {
        "source": args.source,
        "target": args.target,
        "settings": s,
        "rows": rows,
        "mean": mean,
        "paper": {"resnet18->resnet34": {"pretrained": 0.81, "scratch": 0.50},
                  "vgg11->vgg19": {"pretrained": 0.52, "scratch": -0.07}},
        "seconds": seconds,
        "wall_time_s": time.perf_counter() - t_start,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }  # fmt: skip
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "transfer.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
