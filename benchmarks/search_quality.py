"""Search quality on MNIST: does the learned search beat guessing at the same compute?

For each seed, on one MNIST teacher:
  n2n      `n2n compress` (the two policies learn from the rewards);
  random   `n2n compress --search random`: uniform random actions, the same number of candidates, same fine-tune;
  uniform  `n2n baseline uniform --target-params P`: every layer keeps the same fraction, sized to the parameter
           count P of n2n's student, magnitude-pruned with Torch-Pruning, then the same fine-tune;
  scratch  `n2n baseline scratch --run N2N_RUN`: n2n's student architecture from a random initialisation, same
           fine-tune.
It reports the best reward each search found (the reward of its chosen student, as scored during the search) and
every student's parameters and test accuracy after the fine-tune.

The search settings are scaled down from the defaults so that 3 seeds of all four fit about an hour on 2 CPU
cores (a smaller teacher, shorter candidates, fewer updates): see SETTINGS.

Usage:
  python benchmarks/search_quality.py [--data-dir ../shared/data/mnist] [--work runs/quality] [--seeds 0 1 2]
  python benchmarks/search_quality.py --quick        # a tiny smoke run on digits (writes no results)
  python benchmarks/search_quality.py --summarise    # run nothing: tabulate what has finished
  python benchmarks/search_quality.py --work runs/q-batch --n2n-args "--advantage batch" --out search_quality_batch.json
      # a variant of the learned search against the same baselines (--search-args: options of both searches)
  python benchmarks/search_quality.py --work runs/q-long --search-args "--updates 24 --steps 20 --max-draws 4" \
      --out search_quality_long.json
      # three times the policy updates at a third of the steps per candidate: the same compute, more learning

Prints a table and writes benchmarks/results/search_quality.json. Finished runs are kept and not run again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

from _n2n import N2N, run_quietly

HERE = Path(__file__).resolve().parent
METHODS = ("n2n", "random", "uniform", "scratch")
SEARCHES = ("n2n", "random")

#: CPU-scale settings; everything else is n2n's default.
SETTINGS = {
    "data": "mnist",
    "max_train": 20000,
    "arch": "vgg11",
    "width": 0.25,
    "teacher_epochs": 2,
    "updates": 8,
    "rollouts": 5,
    "steps": 60,
    "candidate_examples": 5000,
    "finetune_epochs": 1,
    "finetune_min_steps": 600,
    "seeds": [0, 1, 2],
}
QUICK = {
    **SETTINGS,
    "data": "digits",
    "max_train": None,
    "width": 0.125,
    "teacher_epochs": 3,
    "updates": 2,
    "rollouts": 2,
    "steps": 5,
    "candidate_examples": 300,
    "finetune_min_steps": 20,
    "seeds": [0],
}


def summary(run_dir: Path, searched: bool = True) -> dict[str, float]:
    """The figures this benchmark compares, from a finished run's report.json (a baseline has no search reward)."""
    report = json.loads((run_dir / "report.json").read_text())
    student = report["student"]
    return {
        "params": student["params"],
        "compression": report["compression"],
        "test_accuracy": student["test_accuracy"],
        "teacher_test_accuracy": report["teacher"]["test_accuracy"],
        "search_reward": student.get("search_reward") if searched else None,
        **(late_rewards(run_dir) if searched else {}),
        "evaluations": report["evaluations"],
        "wall_time_s": report["wall_time_s"],
    }


def late_rewards(run_dir: Path) -> dict[str, float]:
    """Mean sampled reward over the second half of each stage's updates (``late_remove``, ``late_shrink``): whether
    a search's samples got better as it went on, which its single best reward does not show."""
    by_stage: dict[str, list[tuple[int, float]]] = {}
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == "update":
            by_stage.setdefault(event["stage"], []).append((event["update"], event["reward_mean"]))
    out = {}
    for stage, values in by_stage.items():
        half = max(u for u, _ in values) // 2 + 1
        out[f"late_{stage}"] = statistics.fmean(r for u, r in values if u >= half)
    return out


def mean_of(rows: list[dict], method: str, key: str) -> float | None:
    values = [r[method][key] for r in rows if r.get(method) and r[method].get(key) is not None]
    return statistics.fmean(values) if values else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(HERE.parent.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--work", default="runs/quality", help="directory for the teacher and the runs")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds to run (default 0 1 2)")
    parser.add_argument("--workers", default="2")
    parser.add_argument("--quick", action="store_true", help="a tiny smoke run on digits (writes no results)")
    parser.add_argument("--summarise", action="store_true", help="run nothing: tabulate the finished seeds")
    parser.add_argument("--search-args", default="", help="extra `n2n compress` options of both searches")
    parser.add_argument("--n2n-args", default="", help="extra `n2n compress` options of the learned search only")
    parser.add_argument("--out", default="search_quality.json", help="file name under benchmarks/results/")
    args = parser.parse_args()
    s = QUICK if args.quick else SETTINGS
    seeds = args.seeds or s["seeds"]
    work = Path(args.work) / ("quick" if args.quick else "mnist")
    data = ["--data", s["data"]] + (["--data-dir", args.data_dir] if s["data"] != "digits" else [])
    if s["max_train"]:
        data += ["--max-train", str(s["max_train"])]
    finetune = ["--finetune-epochs", str(s["finetune_epochs"]), "--finetune-min-steps", str(s["finetune_min_steps"])]
    search = [
        "--updates", str(s["updates"]), "--rollouts", str(s["rollouts"]), "--steps", str(s["steps"]),
        "--candidate-examples", str(s["candidate_examples"]), "--workers", args.workers, *finetune,
    ]  # fmt: skip
    seconds: dict[str, float] = {}
    t_start = time.perf_counter()

    teacher = work / "teacher"
    if not args.summarise and not (teacher / "model.safetensors").is_file():
        seconds["teacher"] = run_quietly(
            [*N2N, "train-teacher", "--arch", s["arch"], "--width", str(s["width"]), "--epochs",
             str(s["teacher_epochs"]), *data, "--seed", "0", "--out", str(teacher)]
        )  # fmt: skip

    rows = []
    for seed in seeds:
        dirs = {m: work / f"{m}_{seed}" for m in METHODS}
        if args.summarise:
            done = {m: d for m, d in dirs.items() if (d / "report.json").is_file()}
            row = {"seed": seed, **{m: summary(d, m in SEARCHES) for m, d in done.items()}}
            if len(row) > 1:
                rows.append(row)
            continue
        common = ["--seed", str(seed)]
        for method in SEARCHES:
            if not (dirs[method] / "report.json").is_file():
                extra = shlex.split(args.search_args)
                extra += ["--search", "random"] if method == "random" else shlex.split(args.n2n_args)
                seconds[f"{method}_{seed}"] = run_quietly(
                    [*N2N, "compress", "--teacher", str(teacher), *data, *search, *extra, *common,
                     "--out", str(dirs[method])]
                )  # fmt: skip
        target = summary(dirs["n2n"])["params"]
        if not (dirs["uniform"] / "report.json").is_file():
            seconds[f"uniform_{seed}"] = run_quietly(
                [*N2N, "baseline", "uniform", "--teacher", str(teacher), "--target-params", str(target), *data,
                 *finetune, *common, "--out", str(dirs["uniform"])]
            )  # fmt: skip
        if not (dirs["scratch"] / "report.json").is_file():
            seconds[f"scratch_{seed}"] = run_quietly(
                [*N2N, "baseline", "scratch", "--run", str(dirs["n2n"]), *data, *finetune, *common,
                 "--out", str(dirs["scratch"])]
            )  # fmt: skip
        rows.append({"seed": seed, **{m: summary(d, m in SEARCHES) for m, d in dirs.items()}})

    print(f"\nsearch quality ({s['arch']} x{s['width']} on {s['data']}, {s['updates']} updates x {s['rollouts']} "
          f"rollouts per stage, {s['steps']} steps per candidate)")  # fmt: skip
    if args.search_args or args.n2n_args:
        print(f"options on top: both searches {args.search_args!r}, n2n only {args.n2n_args!r}")
    print(f"{'seed':>5} {'method':>8} {'best reward':>12} {'params':>9} {'compression':>12} {'test acc':>9}")
    for r in rows:
        for m in METHODS:
            if m in r:
                v = r[m]
                reward = "" if v["search_reward"] is None else f"{v['search_reward']:.4f}"
                print(f"{r['seed']:>5} {m:>8} {reward:>12} {v['params']:>9,} {v['compression']:>11.1f}x "
                      f"{100 * v['test_accuracy']:>8.2f}%")  # fmt: skip
    keys = ("search_reward", "late_remove", "late_shrink", "params", "test_accuracy")
    mean = {m: {k: mean_of(rows, m, k) for k in keys} for m in METHODS}
    print(f"{'mean':>5}")
    for m in METHODS:
        v = mean[m]
        if v["params"] is None:
            continue
        reward = "" if v["search_reward"] is None else f"{v['search_reward']:.4f}"
        print(f"{'':>5} {m:>8} {reward:>12} {v['params']:>9,.0f} {'':>12} {100 * v['test_accuracy']:>8.2f}%")
    if mean["n2n"]["search_reward"] is not None and mean["random"]["search_reward"] is not None:
        verdict = "beats" if mean["n2n"]["search_reward"] > mean["random"]["search_reward"] else "does NOT beat"
        print(f"n2n's mean best reward {verdict} random search at equal evaluations")
    for m in SEARCHES:
        v = mean[m]
        if v.get("late_shrink") is not None:
            print(f"{m}: mean sampled reward in the second half of each stage: remove {v['late_remove']:.3f}, "
                  f"shrink {v['late_shrink']:.3f}")  # fmt: skip
    if args.quick:
        return 0
    path = HERE / "results" / args.out
    if args.summarise and path.is_file():  # keep the measured times of the run that produced the rows
        before = json.loads(path.read_text())
        seconds, elapsed = before.get("seconds", {}), before.get("wall_time_s")
    else:
        elapsed = time.perf_counter() - t_start
    result = {
        "settings": s,
        "search_args": args.search_args,
        "n2n_args": args.n2n_args,
        "seeds": seeds,
        "rows": rows,
        "mean": mean,
        "seconds": seconds,
        "wall_time_s": elapsed,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
    }
    (HERE / "results").mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
