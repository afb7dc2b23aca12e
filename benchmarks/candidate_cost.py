"""Cost of candidate evaluation on 2 CPU cores: against a naive loop, its ranking fidelity, throughput, scaling.

Sections (each compares side by side in one run, interleaved and repeated; the machine is shared, so read ratios):
  cost      evaluations per minute of `evaluate_candidate` (cached teacher logits, default precision and memory
            format, in a process set up as the n2n command line sets it up: huge pages on) vs a naive loop (teacher
            forward at every step, fp32, contiguous, in a plain Python process), same candidates. Target >= 3x.
  fidelity  Spearman rank correlation between the cheap score (default candidate training, validation accuracy)
            and a 5-epoch score of the same 20 random candidates, and the cost ratio. Target >= 0.8.
  flops     achieved FLOP/s of candidate training vs a plain PyTorch loop of the same model (fwd+bwd = 3x fwd).
  scaling   evaluations per minute with 2 worker processes vs 1, same candidates. Target >= 1.7x.
  pool_huge_pages  (not in the default sections) two 2-worker pools, one with huge pages in its workers and one
            without, timed in turn on the same candidates: whether workers should inherit the command line's
            THP_MEM_ALLOC_ENABLE=1.
  scoring   time to score the validation split with each candidate (untrained, inherited weights) at inference
            batch sizes 64-1024 (min of the repeats), relative to 1024: what the CPU default of 128 rests on; and
            at the default batch with batch norms folded (accuracy(), what scoring does) vs unfolded.

Candidates train with n2n's default settings (steps, equal-compute scaling, batch, examples) unless told otherwise;
the naive loop gives each candidate the same number of steps.

Usage:
  python benchmarks/candidate_cost.py --teacher TEACHER_DIR --data-dir ../shared/data/mnist
  python benchmarks/candidate_cost.py --from-run RUN_DIR --data-dir ../shared/data/mnist --sections cost,scaling
      (times candidates that RUN_DIR's search evaluated, on its teacher)
  python benchmarks/candidate_cost.py --teacher T --timed-from benchmarks/results/candidate_cost.json ...
      (times the same candidates an earlier result of this benchmark timed)

Prints a table and writes benchmarks/results/candidate_cost.json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import multiprocessing
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from scipy.stats import spearmanr

from n2n.data import load_data
from n2n.models.io import load_model
from n2n.search.candidate import (
    EvalContext,
    SerialEvaluator,
    build_student,
    candidate_seed,
    candidate_steps,
    costliest_first,
    evaluate_candidate,
)
from n2n.search.parallel import ProcessPoolEvaluator
from n2n.search.setup import eval_context
from n2n.settings import CompressConfig
from n2n.surgery import Edits, analyze, count_macs
from n2n.train.compute import HUGE_PAGES_ENV, enable_huge_pages
from n2n.train.evaluate import accuracy, predict_logits
from n2n.train.fit import train_student
from n2n.train.losses import mse_distill_loss

HERE = Path(__file__).resolve().parent


def random_edits(ctx: EvalContext, analysis, n: int, seed: int) -> list[Edits]:
    """``n`` distinct random removal + shrink edits of the teacher (seeded) that build."""
    rng = random.Random(seed)
    out: dict[str, Edits] = {}
    while len(out) < n:
        removed = [layer.name for layer in analysis.layers if layer.removable and rng.random() < 0.15]
        keep = {
            layer.name: rng.choice((0.25, 0.5, 0.75, 1.0))
            for layer in analysis.layers
            if layer.shrinkable and layer.name not in removed
        }
        edits = Edits.make(removed=removed, keep=keep)
        try:
            build_student(ctx, edits)
        except Exception:  # noqa: BLE001 - an edit surgery rejects is not a candidate to time
            continue
        out[edits.key()] = edits
    return list(out.values())


def search_edits(run: Path, n: int, seed: int) -> list[Edits]:
    """``n`` distinct candidates a finished search evaluated (its events.jsonl), drawn seeded and evenly from its
    stages: the students a search really trains, whose sizes random edits do not match."""
    by_stage: dict[str, dict[str, Edits]] = {}
    for line in (run / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == "candidate" and not event.get("reason"):
            edits = Edits.from_dict(event["edits"])
            by_stage.setdefault(event["stage"], {})[edits.key()] = edits
    if not by_stage:
        raise SystemExit(f"{run / 'events.jsonl'} has no valid candidate events: is {run} a finished n2n run?")
    rng = random.Random(seed)
    pools = [rng.sample(list(c.values()), len(c)) for c in by_stage.values()]
    out: list[Edits] = []
    while len(out) < n and any(pools):
        for pool in pools:
            if pool and len(out) < n:
                out.append(pool.pop())
    return out


def recorded_edits(result: Path) -> list[Edits]:
    """The candidates an earlier result of this benchmark timed (its ``timed_candidates``), to time them again."""
    try:
        timed = json.loads(result.read_text())["timed_candidates"]
    except (OSError, json.JSONDecodeError, KeyError) as err:
        raise SystemExit(f"{result} is not a candidate_cost result with timed_candidates: {err}") from None
    return [Edits.from_dict(json.loads(entry["edits"])) for entry in timed]


def naive_candidate(ctx: EvalContext, edits: Edits) -> float:
    """The naive evaluation: teacher forward at every step for its logits, fp32, contiguous; the same number of
    steps as ``evaluate_candidate`` gives the candidate (equal-compute scaling included); scored as it is, batch norms
    unfolded, in batches of 256; returns accuracy."""
    s = ctx.settings
    torch.manual_seed(candidate_seed(s.seed, edits))
    student = build_student(ctx, edits).train()
    macs = count_macs(student, ctx.input_shape)
    opt = torch.optim.Adam(student.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    gen = torch.Generator().manual_seed(0)
    for _ in range(candidate_steps(s.steps, ctx.teacher_macs, macs, s.max_step_scale)):
        idx = torch.randint(0, ctx.x_train.shape[0], (s.batch_size,), generator=gen)
        with torch.no_grad():
            z = ctx.teacher(ctx.x_train[idx])
        loss = mse_distill_loss(student(ctx.x_train[idx]), z)
        opt.zero_grad()
        loss.backward()
        opt.step()
    logits = predict_logits(student, ctx.x_val, 256)
    return (logits.argmax(dim=1) == ctx.y_val).float().mean().item()


def timed(fn, *args) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


_CHILD_CTX: EvalContext | None = None


def _child_init(ctx: EvalContext) -> None:
    global _CHILD_CTX
    torch.set_num_threads(1)
    _CHILD_CTX = ctx


def _child_timed(loop: str, edits: Edits) -> float:
    return timed(evaluate_candidate if loop == "ours" else naive_candidate, _CHILD_CTX, edits)[0]


@contextlib.contextmanager
def _huge_pages_env(value: str):
    """``THP_MEM_ALLOC_ENABLE=value`` while processes start inside the block (PyTorch reads the variable once per
    process, so a setting needs processes of its own)."""
    before = os.environ.get(HUGE_PAGES_ENV)
    os.environ[HUGE_PAGES_ENV] = value
    try:
        yield
    finally:
        if before is None:
            del os.environ[HUGE_PAGES_ENV]
        else:
            os.environ[HUGE_PAGES_ENV] = before


def _process(ctx: EvalContext, huge_pages: str) -> ProcessPoolExecutor:
    """A one-process pool holding ``ctx``, its process started with ``THP_MEM_ALLOC_ENABLE=huge_pages``."""
    pool = ProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn"), initializer=_child_init, initargs=(ctx,)
    )
    with _huge_pages_env(huge_pages):
        pool.submit(int).result()  # the process starts here, with this environment
    return pool


def section_cost(ctx: EvalContext, cands: list[Edits], repeats: int, naive_huge_pages: bool) -> dict:
    """Each loop runs in a process of its own, one thread, one candidate at a time (never both at once): ours as the
    n2n command line runs it (huge pages on unless the environment says otherwise), the naive loop in a plain
    Python process (huge pages off, unless ``naive_huge_pages``)."""
    ours_env = os.environ.get(HUGE_PAGES_ENV, "1")
    naive_env = "1" if naive_huge_pages else "0"
    ours, naive = [], []
    pools = {"ours": _process(ctx, ours_env), "naive": _process(ctx, naive_env)}
    try:
        for _ in range(repeats):
            for e in cands:  # interleaved: each candidate both ways, one after the other
                naive.append(pools["naive"].submit(_child_timed, "naive", e).result())
                ours.append(pools["ours"].submit(_child_timed, "ours", e).result())
    finally:
        for pool in pools.values():
            pool.shutdown()
    return {
        "ours_evals_per_min": 60 * len(ours) / sum(ours),
        "naive_evals_per_min": 60 * len(naive) / sum(naive),
        "ratio": sum(naive) / sum(ours),
        "target": 3.0,
        "huge_pages": {"ours": ours_env, "naive": naive_env},
        "seconds": {"ours": ours, "naive": naive},
    }


def section_fidelity(ctx: EvalContext, cands: list[Edits], full_epochs: int) -> dict:
    n = ctx.x_train.shape[0]
    full = dataclasses.replace(
        ctx,
        settings=dataclasses.replace(
            ctx.settings, steps=math.ceil(full_epochs * n / ctx.settings.batch_size), max_step_scale=1.0
        ),
    )
    cheap_t, full_t, cheap, long = 0.0, 0.0, [], []
    for e in cands:
        t, r = timed(evaluate_candidate, ctx, e)
        cheap_t, cheap = cheap_t + t, cheap + [r.val_accuracy if r.valid else -1.0]
        t, r = timed(evaluate_candidate, full, e)
        full_t, long = full_t + t, long + [r.val_accuracy if r.valid else -1.0]
    rho = spearmanr(cheap, long).statistic
    return {
        "candidates": len(cands),
        "cheap_steps": ctx.settings.steps,
        "cheap_max_step_scale": ctx.settings.max_step_scale,
        "full_steps": full.settings.steps,
        "full_epochs": full_epochs,
        "examples": n,
        "spearman": float(rho),
        "cost_ratio": full_t / cheap_t,
        "cheap_scores": cheap,
        "full_scores": long,
        "target": 0.8,
    }


def section_flops(ctx: EvalContext, edits: Edits, steps: int, repeats: int) -> dict:
    s = ctx.settings
    macs = count_macs(build_student(ctx, edits), ctx.input_shape)
    flops = 3 * 2 * macs * s.batch_size * steps
    ours_t, plain_t = [], []
    for _ in range(repeats):
        student = build_student(ctx, edits)
        ours_t.append(
            timed(
                lambda m=student: train_student(
                    m,
                    ctx.x_train,
                    ctx.z_train,
                    steps=steps,
                    batch_size=s.batch_size,
                    lr=s.lr,
                    weight_decay=s.weight_decay,
                    generator=torch.Generator().manual_seed(0),
                    compute=s.compute,
                )
            )[0]
        )
        student = build_student(ctx, edits).train()

        def plain(m=student) -> None:
            opt = torch.optim.Adam(m.parameters(), lr=s.lr)
            for i in range(steps):
                j = (i * s.batch_size) % (ctx.x_train.shape[0] - s.batch_size)
                loss = mse_distill_loss(m(ctx.x_train[j : j + s.batch_size]), ctx.z_train[j : j + s.batch_size])
                opt.zero_grad()
                loss.backward()
                opt.step()

        plain_t.append(timed(plain)[0])
    return {
        "student_macs": macs,
        "ours_gflops": flops / min(ours_t) / 1e9,
        "plain_gflops": flops / min(plain_t) / 1e9,
        "ratio": min(plain_t) / min(ours_t),
    }


SCORING_BATCHES = (64, 128, 256, 1024)


def section_scoring(ctx: EvalContext, cands: list[Edits], repeats: int) -> dict:
    """Validation scoring time per inference batch size, summed over ``cands`` (each the min of ``repeats``), and at
    the default batch size with batch norms left unfolded (``predict_logits`` as it is, what scoring did before)."""
    compute = ctx.settings.compute
    default = compute.eval_batch_size
    best = {b: [math.inf] * len(cands) for b in (*SCORING_BATCHES, "unfolded")}
    students = [build_student(ctx, e) for e in cands]
    for _ in range(repeats):
        for i, student in enumerate(students):
            for b in SCORING_BATCHES:  # interleaved, so load changes hit every batch size alike
                t = timed(accuracy, student, ctx.x_val, ctx.y_val, b, compute)[0]
                best[b][i] = min(best[b][i], t)
            t = timed(predict_logits, student, ctx.x_val, default, compute)[0]
            best["unfolded"][i] = min(best["unfolded"][i], t)
    seconds = {b: sum(v) for b, v in best.items()}
    return {
        "seconds": {str(b): t for b, t in seconds.items()},
        "speedup_vs_1024": {str(b): seconds[1024] / seconds[b] for b in SCORING_BATCHES},
        "fold_speedup": seconds["unfolded"] / seconds[default],
        "default": default,
    }


def section_scaling(ctx: EvalContext, cands: list[Edits], repeats: int) -> dict:
    """``cands`` go to the evaluators costliest first, as a search's update hands them out."""
    one, two = [], []
    pool = ProcessPoolEvaluator(ctx, workers=2, threads=1)
    try:
        pool.evaluate(cands[:2])  # start the workers (context sent once) before timing
        for _ in range(repeats):
            one.append(timed(SerialEvaluator(ctx, 1).evaluate, cands)[0])
            two.append(timed(pool.evaluate, cands)[0])
    finally:
        pool.close()
    return {
        "workers1_evals_per_min": 60 * len(cands) * repeats / sum(one),
        "workers2_evals_per_min": 60 * len(cands) * repeats / sum(two),
        "ratio": sum(one) / sum(two),
        "target": 1.7,
    }


def section_pool_huge_pages(ctx: EvalContext, cands: list[Edits], repeats: int) -> dict:
    """Two 2-worker pools side by side, one whose workers run with huge pages and one without, timed on ``cands``
    in the order A B B A per repeat, so that drifting machine load falls on both alike."""
    pools = {}
    try:
        for value in ("1", "0"):
            pools[value] = ProcessPoolEvaluator(ctx, workers=2, threads=1)
            with _huge_pages_env(value):
                pools[value].evaluate(cands[:2])  # both workers start here, with this environment
        walls: dict[str, list[float]] = {"1": [], "0": []}
        for _ in range(repeats):
            for value in ("1", "0", "0", "1"):
                walls[value].append(timed(pools[value].evaluate, cands)[0])
    finally:
        for pool in pools.values():
            pool.close()
    per_min = {v: 60 * len(cands) * len(w) / sum(w) for v, w in walls.items()}
    return {
        "with_evals_per_min": per_min["1"],
        "without_evals_per_min": per_min["0"],
        "ratio": per_min["1"] / per_min["0"],
        "seconds": {"with": walls["1"], "without": walls["0"]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", help="teacher directory (default with --from-run: that run's teacher)")
    ap.add_argument("--data-dir", required=True, help="MNIST IDX files")
    ap.add_argument(
        "--from-run",
        type=Path,
        help="a finished n2n run on this teacher: the cost and scaling sections time candidates its search evaluated "
        "(evenly from its stages) instead of random edits",
    )
    ap.add_argument(
        "--timed-from",
        type=Path,
        help="an earlier result JSON of this benchmark: time the candidates it timed (on the same teacher)",
    )
    ap.add_argument(
        "--max-train", type=int, help="training examples loaded, 10%% held out for validation (default all)"
    )
    ap.add_argument(
        "--examples", type=int, help="examples candidates (and the 5-epoch score) train on (default: n2n's)"
    )
    ap.add_argument("--steps", type=int, help="candidate steps (default: n2n's)")
    ap.add_argument("--max-step-scale", type=float, help="equal-compute step scaling (default: n2n's)")
    ap.add_argument("--batch-size", type=int, help="candidate batch size (default: n2n's)")
    ap.add_argument("--candidates", type=int, default=20, help="random candidates of the fidelity section")
    ap.add_argument("--cost-candidates", type=int, default=4, help="candidates of the cost and scaling sections")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--sections", default="cost,fidelity,flops,scaling")
    ap.add_argument("--out", default="candidate_cost.json", help="file name under benchmarks/results/")
    ap.add_argument(
        "--naive-huge-pages",
        action="store_true",
        help="run the naive loop with PyTorch's huge-page allocation too (default: off, as in a plain Python process)",
    )
    args = ap.parse_args()
    enable_huge_pages()  # as the n2n command line does, before the first large tensor
    teacher_dir = args.teacher
    if teacher_dir is None:
        if args.from_run is None:
            ap.error("give --teacher, or --from-run with a run whose run.json names its teacher")
        teacher_dir = json.loads((args.from_run / "run.json").read_text())["teacher"]
    torch.set_num_threads(1)
    teacher, _ = load_model(teacher_dir)
    data = load_data("mnist", args.data_dir, seed=0, max_train=args.max_train)
    given = {
        "steps": args.steps,
        "max_step_scale": args.max_step_scale,
        "batch_size": args.batch_size,
        "candidate_examples": args.examples,
    }
    cfg = CompressConfig(**{k: v for k, v in given.items() if v is not None}).validate()
    analysis = analyze(teacher.eval(), data.input_shape)
    ctx = eval_context(teacher, analysis, data, cfg, predict_logits(teacher, data.train.x, 1024))
    cands = random_edits(ctx, analysis, args.candidates, seed=0)
    if args.timed_from is not None:
        timed_cands = recorded_edits(args.timed_from)
    elif args.from_run is not None:
        timed_cands = search_edits(args.from_run, args.cost_candidates, seed=0)
    else:
        timed_cands = cands[: args.cost_candidates]
    timed_cands = [timed_cands[i] for i in costliest_first(ctx, timed_cands, 1)]  # as parallel evaluators order them
    load = os.getloadavg()
    results: dict = {
        "settings": {
            **vars(args),
            "teacher": str(teacher_dir),
            "from_run": args.from_run and str(args.from_run),
            "timed_from": args.timed_from and str(args.timed_from),
        },
        "candidate_settings": {k: v for k, v in dataclasses.asdict(ctx.settings).items() if k != "compute"},
        "val_examples": len(data.val),
        "timed_candidates": [
            {"edits": e.key(), "macs": count_macs(build_student(ctx, e), ctx.input_shape)} for e in timed_cands
        ],
        "teacher_macs": ctx.teacher_macs,
        "load_before": load,
        "compute": dataclasses.asdict(ctx.settings.compute),
    }
    sections = args.sections.split(",")
    if "cost" in sections:
        results["cost"] = section_cost(ctx, timed_cands, args.repeats, args.naive_huge_pages)
    if "flops" in sections:
        results["flops"] = section_flops(ctx, timed_cands[0], ctx.settings.steps, args.repeats)
    if "scaling" in sections:
        results["scaling"] = section_scaling(ctx, timed_cands, args.repeats)
    if "pool_huge_pages" in sections:
        results["pool_huge_pages"] = section_pool_huge_pages(ctx, timed_cands, args.repeats)
    if "scoring" in sections:
        results["scoring"] = section_scoring(ctx, timed_cands, max(3, args.repeats))
    if "fidelity" in sections:
        results["fidelity"] = section_fidelity(ctx, cands, 5)
    results["load_after"] = os.getloadavg()
    print(f"{'measure':<44}{'value':>12}{'target':>10}")
    rows = [
        ("cost: evals/min ours / naive", "cost", "ratio"),
        ("fidelity: Spearman cheap vs 5-epoch", "fidelity", "spearman"),
        ("fidelity: cost ratio 5-epoch / cheap", "fidelity", "cost_ratio"),
        ("flops: ours GFLOP/s", "flops", "ours_gflops"),
        ("flops: plain loop GFLOP/s", "flops", "plain_gflops"),
        ("scaling: evals/min 2 workers / 1", "scaling", "ratio"),
        ("2 workers: evals/min huge pages on / off", "pool_huge_pages", "ratio"),
    ]
    for label, sec, key in rows:
        if sec in results:
            target = results[sec].get("target", "") if key in ("ratio", "spearman") else ""
            print(f"{label:<44}{results[sec][key]:>12.3f}{target!s:>10}")
    for b, x in results.get("scoring", {}).get("speedup_vs_1024", {}).items():
        print(f"{'scoring: speed-up of batch ' + b + ' vs 1024':<44}{x:>12.3f}")
    if "scoring" in results:
        print(f"{'scoring: speed-up of folded batch norms':<44}{results['scoring']['fold_speedup']:>12.3f}")
    print(f"load average before {load[0]:.1f}, after {results['load_after'][0]:.1f} (2 cores)")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
