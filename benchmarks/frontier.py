"""n2n on the accuracy-against-size plane, next to what a user would do instead (issue 22), side by side in one run.

At each size in ``--sizes`` and for each seed, with the same teacher, data and fine-tune epochs:

- ``n2n``: ``n2n compress --target-params N`` at default settings (``--front 1``: the other front students do not
  change the chosen one, and cost a fine-tune each);
- ``random``: the same with ``--search random`` (the same number of evaluations);
- ``uniform``: ``n2n baseline uniform --target-params N`` (one keep-fraction for every layer through Torch-Pruning's
  dependency graph), with n2n's fine-tune;
- ``hand@n2n``: the same hand-designed CNN sized to the parameters n2n's student came out at (a student under its
  target is compared with a CNN of its own size as well as with one of the target's);
- ``hand``: the hand-designed CNN of ``_small_cnn.py`` sized to N (within 5%), trained from scratch with
  cross-entropy for as many steps as n2n's fine-tune (its epochs, or more on a small data set where
  ``--finetune-min-steps`` sets the length) and for 5 epochs (``hand-5ep``, only when those differ);
- ``n2n-arch``: n2n's student architecture, re-initialised and trained exactly as the hand-designed CNN (Liu et al.
  2019's check: does the search find an architecture, or only good inherited weights?).

Test accuracy is the reported figure; every choice (checkpoint, student) is made on the validation split. Each
point also gets batch-1 and batch-64 latency, PyTorch eager and onnxruntime, one thread. Results, commands and
settings go to ``--json``; ``--plot`` draws accuracy against parameters (log scale), one line per method.

Usage (MNIST, a teacher trained with ``n2n train-teacher``)::

    python benchmarks/frontier.py --teacher runs/mnist/teacher --data mnist --data-dir ../shared/data/mnist \\
        --sizes 20000,75000,120000 --seeds 0,1 --runs runs/frontier --json benchmarks/results/frontier_mnist.json \\
        --plot docs/frontier_mnist.png

``--merge A.json B.json --json OUT`` combines runs made in pieces (by seed or method) into one summary and plot.

``--quick`` shrinks every budget to a smoke test (minutes on digits); its figures say nothing about quality.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _n2n import N2N, commit, machine, run_quietly  # noqa: E402
from _small_cnn import SmallCNN, fit_widths, train_from_scratch  # noqa: E402

from n2n.data import load_data  # noqa: E402
from n2n.measure import TimingSettings, measure_cost  # noqa: E402
from n2n.models.io import load_model  # noqa: E402
from n2n.settings import CompressConfig  # noqa: E402

METHODS = ("n2n", "random", "uniform", "hand", "n2n-arch")
#: one thread, as a deployed model on a small device would run; enough repeats for a stable median
TIMING = TimingSettings(warmup=3, min_repeats=10, max_repeats=200, budget_s=1.0, threads=1)
#: --quick: the smallest budgets that still run every step of every method
QUICK = [
    "--updates",
    "2",
    "--rollouts",
    "3",
    "--steps",
    "5",
    "--candidate-examples",
    "300",
    "--finetune-epochs",
    "1",
    "--finetune-min-steps",
    "20",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", help="a saved n2n teacher (n2n train-teacher --out DIR)")
    p.add_argument("--data", default="digits")
    p.add_argument("--data-dir")
    p.add_argument("--sizes", default="20000,75000,120000", help="parameter targets, comma-separated")
    p.add_argument("--seeds", default="0,1", help="seeds, comma-separated")
    p.add_argument("--methods", default=",".join(METHODS), help=f"a subset of {','.join(METHODS)}")
    p.add_argument("--runs", help="directory for the n2n run directories")
    p.add_argument("--json", required=True, help="where to write every figure")
    p.add_argument("--plot", help="where to write the accuracy-against-parameters plot (PNG)")
    p.add_argument(
        "--n2n-args",
        default="",
        help="extra options for n2n's and random search's `n2n compress` (e.g. '--removal-scoring partway'), for an "
        "A/B of a setting; recorded in each point's command",
    )
    p.add_argument(
        "--variant",
        help="a name for the --n2n-args setting: n2n's and random search's points become 'n2n:NAME' and "
        "'random:NAME' and their runs 'n2n-NAME-SIZE-sSEED', so that they merge beside the default's and are paired "
        "with every other method",
    )
    p.add_argument("--quick", action="store_true", help="smoke-test budgets (figures mean nothing)")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurements")
    p.add_argument(
        "--reuse",
        action="store_true",
        help="keep n2n, random and uniform runs already finished in --runs (their report.json) instead of running "
        "them again, so an interrupted benchmark continues; their wall time is the one their report recorded",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="run nothing: combine the points of earlier runs of this benchmark (pieces by seed or method, on one "
        "teacher) into --json, with the summary, the table and --plot",
    )
    p.add_argument(
        "--plot-methods",
        help="comma-separated: the methods the plot draws (default: all), so a merged result with many variants "
        "stays readable; the JSON and the table keep every method",
    )
    p.add_argument(
        "--merge-seeds",
        help="with --merge: keep only these seeds (comma-separated), so that every method is averaged over the same "
        "seeds",
    )
    p.add_argument(
        "--rename",
        nargs="+",
        default=[],
        metavar="OLD=NEW",
        help="with --merge: relabel a method, e.g. n2n=n2n@a0f3576 n2n:long=n2n when a variant has become the "
        "default (every point keeps the command it ran)",
    )
    args = p.parse_args(argv)
    if not args.merge and not (args.teacher and args.runs):
        p.error("--teacher and --runs are required (unless --merge)")
    if args.variant is not None and not args.variant.replace("-", "").replace("_", "").isalnum():
        p.error(f"--variant {args.variant!r}: use letters, digits, '-' and '_' (it names run directories)")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.merge:
        return merge(args)
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = args.methods.split(",")
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    extra = QUICK if args.quick else []
    defaults = CompressConfig()
    common = ["--teacher", args.teacher, "--data", args.data] + (["--data-dir", args.data_dir] if args.data_dir else [])
    teacher, _ = load_model(args.teacher)
    teacher_params = sum(p.numel() for p in teacher.parameters())
    points: list[dict[str, Any]] = []
    started = time.perf_counter()

    def record(method: str, size: int, seed: int, model: torch.nn.Module, figures: dict, **more: Any) -> None:
        latency = {} if args.no_latency else measure_cost(model, input_shape, True, TIMING)["latency_ms"]
        point = {
            "method": method,
            "size": size,
            "seed": seed,
            "params": sum(p.numel() for p in model.parameters()),
            "val_accuracy": figures["val_accuracy"],
            "test_accuracy": figures["test_accuracy"],
            "latency_ms": latency,
            **more,
        }
        points.append(point)
        print(
            f"{method:10s} size {size:>8,} seed {seed}: {point['params']:>8,} parameters, test "
            f"{point['test_accuracy']:.2%} (val {point['val_accuracy']:.2%})",
            flush=True,
        )
        write(args, points, sizes, seeds, teacher_params, time.perf_counter() - started)

    trained: dict[tuple, tuple[torch.nn.Module, dict]] = {}

    def hand_cnn(widths: tuple[int, int, int], n_epochs: int, seed: int) -> tuple[torch.nn.Module, dict]:
        """A hand CNN trained from scratch, once per (widths, epochs, seed): hand@n2n often has hand's widths."""
        if (widths, n_epochs, seed) not in trained:
            model = SmallCNN(widths, input_shape[0], data.num_classes)
            trained[widths, n_epochs, seed] = model, train_from_scratch(model, data, epochs=n_epochs, seed=seed)
        return trained[widths, n_epochs, seed]

    for seed in seeds:
        data = load_data(args.data, args.data_dir, seed=seed)
        input_shape = tuple(data.input_shape)
        # as many steps as n2n's fine-tune takes: its epochs, but at least --finetune-min-steps (small data sets)
        per_epoch = max(1, len(data.train) // defaults.batch_size)
        epochs = 1 if args.quick else max(defaults.finetune_epochs, math.ceil(defaults.finetune_min_steps / per_epoch))
        for size in sizes:
            for method, search in (("n2n", "rl"), ("random", "random")):
                if method not in methods and not (method == "n2n" and "n2n-arch" in methods):
                    continue
                name = method if args.variant is None else f"{method}:{args.variant}"
                run = runs / f"{name.replace(':', '-')}-{size}-s{seed}"
                more = ["--front", "1", "--search", search, *shlex.split(args.n2n_args), *extra]
                cmd = command(common, ["compress"], run, seed, size, more)
                done = args.reuse and (run / "report.json").is_file()
                seconds = None if done else run_quietly(cmd)
                report = json.loads((run / "report.json").read_text())
                seconds = report["wall_time_s"] if seconds is None else seconds
                student, _ = load_model(run / "student")
                if method in methods:
                    record(
                        name,
                        size,
                        seed,
                        student,
                        report["student"],
                        seconds=seconds,
                        evaluations=report["evaluations"],
                        command=" ".join(["n2n", *cmd[len(N2N) :]]),
                    )
                if method == "n2n" and "hand" in methods:  # the hand CNN at the size n2n's student came out at
                    n = sum(p.numel() for p in student.parameters())
                    widths = fit_widths(n, input_shape[0], data.num_classes)
                    model, figures = hand_cnn(widths, epochs, seed)
                    record(
                        f"hand@{name}",
                        size,
                        seed,
                        model,
                        figures,
                        seconds=figures["seconds"],
                        epochs=epochs,
                        widths=list(widths),
                    )
                if method == "n2n" and "n2n-arch" in methods:
                    fresh, _ = load_model(run / "student")
                    figures = train_from_scratch(fresh, data, epochs=epochs, seed=seed)
                    suffix = "" if args.variant is None else f":{args.variant}"
                    record(f"n2n-arch{suffix}", size, seed, fresh, figures, seconds=figures["seconds"], epochs=epochs)
            if "uniform" in methods:
                run = runs / f"uniform-{size}-s{seed}"
                cmd = command(common, ["baseline", "uniform"], run, seed, size, extra)
                done = args.reuse and (run / "report.json").is_file()
                seconds = None if done else run_quietly(cmd)
                report = json.loads((run / "report.json").read_text())
                seconds = report.get("wall_time_s") if seconds is None else seconds
                record(
                    "uniform",
                    size,
                    seed,
                    load_model(run / "student")[0],
                    report["student"],
                    seconds=seconds,
                    command=" ".join(["n2n", *cmd[len(N2N) :]]),
                )
            if "hand" in methods:
                widths = fit_widths(size, input_shape[0], data.num_classes)
                for label, n in (("hand", epochs), ("hand-5ep", 5)):
                    if label == "hand-5ep" and (n == epochs or args.quick):
                        continue
                    model, figures = hand_cnn(widths, n, seed)
                    record(label, size, seed, model, figures, seconds=figures["seconds"], epochs=n, widths=list(widths))
    result = write(args, points, sizes, seeds, teacher_params, time.perf_counter() - started)
    show(result, args)
    return result


def merge(args: argparse.Namespace) -> dict[str, Any]:
    """One result from several runs of the benchmark on the same teacher and data: their points, the commands and
    commits each came from, and the summary over all of them. A point measured twice (same method, size and seed)
    is an error rather than a silent double count."""
    parts = [json.loads(Path(f).read_text()) for f in args.merge]
    for key in ("teacher", "data", "teacher_params"):
        values = {str(part.get(key)) for part in parts}
        if len(values) > 1:
            raise SystemExit(
                f"--merge: the runs differ in {key} ({', '.join(sorted(values))}); merge runs of one setup"
            )
    renames = dict(_rename(text) for text in args.rename)
    keep_seeds = None if args.merge_seeds is None else {int(seed) for seed in args.merge_seeds.split(",")}
    points, seen = [], {}
    for point in (point for part in parts for point in part["points"]):
        point = {**point, "method": renames.get(point["method"], point["method"])}
        if keep_seeds is not None and point["seed"] not in keep_seeds:
            continue
        key = (point["method"], point["size"], point["seed"])
        if key in seen:  # measured twice: one point if the seeded runs agree, else which to keep is not ours to say
            if (seen[key]["params"], seen[key]["test_accuracy"]) == (point["params"], point["test_accuracy"]):
                continue
            raise SystemExit(
                f"--merge: {key[0]} at {key[1]:,} seed {key[2]} is in more than one run, with different figures"
            )
        seen[key] = point
        points.append(point)
    result = {
        "benchmark": "frontier",
        "merged": [  # a merged input brings the runs it was merged from
            piece
            for f, part in zip(args.merge, parts, strict=True)
            for piece in part.get("merged", [{"file": f, "command": part.get("command"), "commit": part.get("commit")}])
        ],
        "renamed": renames,
        "merged_seeds": None if keep_seeds is None else sorted(keep_seeds),
        "teacher": parts[0]["teacher"],
        "teacher_params": parts[0]["teacher_params"],
        "data": parts[0]["data"],
        "sizes": sorted({p["size"] for p in points}),
        "seeds": sorted({p["seed"] for p in points}),
        "quick": any(part["quick"] for part in parts),
        "machine": parts[0]["machine"],
        "wall_time_s": sum(part["wall_time_s"] for part in parts),
        "points": points,
        "summary": summarise(points),
        "paired": paired(points),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    show(result, args)
    return result


def _rename(text: str) -> tuple[str, str]:
    old, sep, new = text.partition("=")
    if not (sep and old and new):
        raise SystemExit(f"--rename {text!r}: write OLD=NEW, e.g. n2n:long=n2n")
    return old, new


def command(common: list[str], words: list[str], run: Path, seed: int, size: int, extra: list[str]) -> list[str]:
    """The n2n command line of one point: ``words`` (the subcommand) for ``size`` parameters and ``seed``."""
    return [
        *N2N,
        *words,
        *common,
        "--out",
        str(run),
        "--overwrite",
        "--seed",
        str(seed),
        "--target-params",
        str(size),
        *extra,
    ]


def summarise(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, size): mean and every seed's test accuracy, mean parameters and latencies."""
    rows = []
    for key in dict.fromkeys((p["method"], p["size"]) for p in points):
        group = [p for p in points if (p["method"], p["size"]) == key]
        row = {
            "method": key[0],
            "size": key[1],
            "seeds": len(group),
            "params": round(statistics.mean(p["params"] for p in group)),
            "test_accuracy": statistics.mean(p["test_accuracy"] for p in group),
            "test_accuracies": [p["test_accuracy"] for p in group],
            "val_accuracy": statistics.mean(p["val_accuracy"] for p in group),
        }
        for runtime in ("torch", "onnxruntime"):
            for batch in ("1", "64"):
                values = [p["latency_ms"].get(runtime, {}).get(batch) for p in group]
                if all(v is not None for v in values) and values:
                    row[f"{runtime}_b{batch}_ms"] = statistics.mean(values)
        rows.append(row)
    return rows


def paired(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (reference, size, method): the reference's test accuracy minus the method's, seed by seed, over the seeds
    both have. The references are ``n2n`` and each ``n2n:VARIANT`` (``--variant``).

    Seeds pair the two methods' runs (one data order, one search seed), so the mean difference and its standard
    error say more than two means over different seed sets: a lead smaller than about two standard errors is a tie.
    """
    accuracy = {(p["method"], p["size"], p["seed"]): p["test_accuracy"] for p in points}
    methods = dict.fromkeys((p["method"], p["size"]) for p in points)
    references = [m for m in dict.fromkeys(m for m, _ in methods) if m == "n2n" or m.startswith("n2n:")]
    rows = []
    for i, reference in enumerate(references):  # each pair of references once: n2n:X minus n2n is n2n minus n2n:X
        rows += _paired_with(accuracy, [key for key in methods if key[0] not in references[: i + 1]], reference)
    return rows


def _paired_with(accuracy: dict[tuple, float], methods: list[tuple], reference: str) -> list[dict[str, Any]]:
    rows = []
    for method, size in methods:
        seeds = sorted(s for m, n, s in accuracy if (m, n) == (method, size) and (reference, size, s) in accuracy)
        diffs = [accuracy[reference, size, s] - accuracy[method, size, s] for s in seeds]
        if not diffs:
            continue
        rows.append(
            {
                "reference": reference,
                "size": size,
                "method": method,
                "seeds": seeds,
                "differences": diffs,
                "mean_difference": statistics.mean(diffs),
                "stderr": statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None,
                "ahead": sum(d > 0 for d in diffs),
                "behind": sum(d < 0 for d in diffs),
            }
        )
    return rows


def write(args: argparse.Namespace, points: list, sizes: list, seeds: list, teacher_params: int, wall: float) -> dict:
    result = {
        "benchmark": "frontier",
        "command": " ".join(["python", "benchmarks/frontier.py", *sys.argv[1:]]),
        "commit": commit(),
        "teacher": args.teacher,
        "teacher_params": teacher_params,
        "data": args.data,
        "sizes": sizes,
        "seeds": seeds,
        "quick": args.quick,
        "machine": machine(),
        "wall_time_s": wall,
        "points": points,
        "summary": summarise(points),
        "paired": paired(points),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    return result


def show(result: dict[str, Any], args: argparse.Namespace) -> None:
    """The summary table on stdout and, with ``--plot``, the plot."""
    print_table(result)
    if args.plot:
        plot(result, Path(args.plot), None if args.plot_methods is None else args.plot_methods.split(","))


def print_table(result: dict[str, Any]) -> None:
    print("\n| size | method | params | test accuracy (mean) | seeds | torch b1 ms | onnxruntime b1 ms |")
    print("|---:|---|---:|---:|---|---:|---:|")
    for row in sorted(result["summary"], key=lambda r: (r["size"], -r["test_accuracy"])):
        seeds = ", ".join(f"{a:.2%}" for a in row["test_accuracies"])
        torch_ms, ort_ms = row.get("torch_b1_ms"), row.get("onnxruntime_b1_ms")
        print(
            f"| {row['size']:,} | {row['method']} | {row['params']:,} | {row['test_accuracy']:.2%} | {seeds} | "
            f"{'' if torch_ms is None else f'{torch_ms:.3f}'} | {'' if ort_ms is None else f'{ort_ms:.3f}'} |"
        )
    print("\n| size | minus | seeds | mean difference (points) | standard error | ahead / behind |")
    print("|---:|---|---|---:|---:|---|")
    for row in sorted(paired(result["points"]), key=lambda r: (r["size"], r["reference"], r["method"])):
        stderr = "" if row["stderr"] is None else f"{100 * row['stderr']:.3f}"
        print(
            f"| {row['size']:,} | {row['reference']} minus {row['method']} | {', '.join(map(str, row['seeds']))} | "
            f"{100 * row['mean_difference']:+.3f} | {stderr} | {row['ahead']} / {row['behind']} |"
        )


def plot(result: dict[str, Any], path: Path, methods: list[str] | None = None) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for method in methods or dict.fromkeys(r["method"] for r in result["summary"]):
        rows = sorted((r for r in result["summary"] if r["method"] == method), key=lambda r: r["params"])
        ax.plot([r["params"] for r in rows], [100 * r["test_accuracy"] for r in rows], marker="o", label=method)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (log scale)")
    ax.set_ylabel("test accuracy (%), mean over seeds")
    ax.set_title(f"{result['data']}: accuracy against size")
    ax.grid(True, alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    main()
