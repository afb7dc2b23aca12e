"""Issue 22: which final fine-tune (and initialisation) makes n2n's students beat a hand-designed CNN of their size?

For each student (the teacher's spec plus edits, built with n2n's own surgery so it inherits the teacher's weights
exactly as ``n2n compress`` does) this runs fine-tune recipes side by side, in one process, on the same splits
(``load_data(..., seed=0)``) and with the same seeds, together with two from-scratch baselines:

- ``hand-cnn-5ep``: the hand-designed CNN of issue 22 (``benchmarks/_small_cnn.py``) sized to the student's
  parameter count (within 5%), cross-entropy only, Adam + OneCycle peaking at 3e-3, batch 128, 5 epochs;
- ``arch-scratch-5ep``: the student's architecture re-initialised and trained exactly like the hand CNN
  (Liu et al. 2019's check).

Every run keeps the checkpoint that was best on the validation split (measured 10 times, n2n's cadence) and reports
its test accuracy. The recipe ``n2n`` calls n2n's own ``train_student`` exactly as ``compress.finetune_student`` does;
``--check-n2n`` also calls ``compress.finetune_student`` itself once to confirm the figure. Results are merged into the
JSON (``--out``) keyed by student, recipe and seed, so the grid can be run in parts.

Measured on one thread: an epoch over the 54,000 training images takes about 45 s for s109k, 60 s for s73k6 and the
73K hand CNN, 17 s for s20k; the teacher's training logits take about 100 s once (cached next to the teacher).
``--table`` prints the table of an existing JSON. Example::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/finetune_recipes.py --teacher /work/runs/frontier/teacher \\
        --data-dir /work/shared/data/mnist --students s109k --recipes n2n oc5-mse oc5-kl --seeds 0 1
    .venv/bin/python benchmarks/finetune_recipes.py --table
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import types
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _small_cnn import COMPUTE, SmallCNN, fit_widths, recalibrate_bn, small_cnn_params, train_from_scratch  # noqa: E402

from n2n.data import load_data  # noqa: E402
from n2n.models.io import load_model  # noqa: E402
from n2n.search.candidate import _reinitialise, build_student  # noqa: E402
from n2n.surgery import Edits, analyze, count_params  # noqa: E402
from n2n.surgery.transforms import folded, relus_in_place  # noqa: E402
from n2n.train.evaluate import accuracy, predict_logits  # noqa: E402
from n2n.train.fit import Diverged, train_student  # noqa: E402
from n2n.train.losses import distill_loss  # noqa: E402

#: the students: edits relative to the teacher (vgg13 x0.5 on MNIST; layer names are its ``features.<i>`` convs)
_S109K_REMOVED = ["features.14", "features.17", "features.21", "features.28", "features.3", "features.31", "features.7"]
STUDENTS: dict[str, tuple[str, Edits]] = {
    # the student of n2n's default search (benchmarks/results/mnist.json): 3 convs, 32-64-154 channels
    "s109k": (
        "n2n default search's student (benchmarks/results/mnist.json)",
        Edits.make(_S109K_REMOVED, {"features.24": 0.6}),
    ),
    # the same 3-conv shape, its last conv kept at 0.4 (the size of issue 22's 80K default student)
    "s79k": (
        "by hand: s109k with features.24 kept at 0.4 (32-64-102 channels)",
        Edits.make(_S109K_REMOVED, {"features.24": 0.4}),
    ),
    # 6 convs at half width: the hand CNN's shape (16,16,32,32,64,64) but no conv biases and the teacher's 4 pools
    "s73k6": (
        "by hand: the teacher's first 6 convs, every one kept at 0.5 (16-16-32-32-64-64 channels)",
        Edits.make(
            ["features.21", "features.24", "features.28", "features.31"],
            {f"features.{i}": 0.5 for i in (0, 3, 7, 10, 14, 17)},
        ),
    ),
    # the 3-conv shape near the paper's 20K limit
    "s20k": (
        "by hand: s109k's 3 convs kept at 0.5, 0.5, 0.2 (16-32-51 channels)",
        Edits.make(_S109K_REMOVED, {"features.0": 0.5, "features.10": 0.5, "features.24": 0.2}),
    ),
}


@dataclass(frozen=True)
class Recipe:
    """A fine-tune of an inherited (or re-initialised) student: ``CE + kd_weight * distill`` (``loss``: mse, kl or
    ce = no distillation term), Adam without weight decay, ``schedule`` cosine (n2n: decay from ``lr`` to 0) or
    onecycle (OneCycleLR peaking at ``lr``), n2n's step count ``max(epochs * ceil(N / batch), min_steps)``.

    ``augment`` shift2 moves each training image by a random (dy, dx) in [-2, 2]^2 (edge pixels replicated, i.e.
    MNIST's black background); ``targets`` online computes the teacher's logits per batch on the (augmented) inputs,
    fixed reuses the logits of the unaugmented images computed once. ``bn_recal`` re-estimates the batch norms'
    statistics on 50 batches before training. ``exact_n2n`` runs n2n's own ``train_student``.
    """

    epochs: int = 3
    schedule: str = "cosine"
    lr: float = 1e-3
    loss: str = "mse"
    kd_weight: float = 1.0
    temperature: float = 4.0
    augment: str = "none"
    targets: str = "fixed"
    init: str = "inherit"
    bn_recal: bool = False
    min_steps: int = 1000
    exact_n2n: bool = False


N2N = Recipe(exact_n2n=True)
OC = Recipe(epochs=5, schedule="onecycle", lr=3e-3)
RECIPES: dict[str, Recipe] = {
    "n2n": N2N,  # today's fine-tune: 3 epochs, cosine from 1e-3, CE + 1 * MSE, inherited weights
    "n2n-mine": replace(N2N, exact_n2n=False),  # the same through this file's trainer (a check of it)
    "cos5-mse": replace(N2N, epochs=5, exact_n2n=False),
    "cos10-mse": replace(N2N, epochs=10, exact_n2n=False),
    "oc3-mse": replace(OC, epochs=3),
    "oc5-mse": OC,
    "oc5-mse-kd0.1": replace(OC, kd_weight=0.1),
    "oc5-mse-kd0.3": replace(OC, kd_weight=0.3),
    "oc5-mse-kd3": replace(OC, kd_weight=3.0),
    "oc5-ce": replace(OC, loss="ce", kd_weight=0.0),
    "oc5-kl": replace(OC, loss="kl"),
    "oc5-kl-kd3": replace(OC, loss="kl", kd_weight=3.0),
    "oc5-kl-kd0.3": replace(OC, loss="kl", kd_weight=0.3),
    "oc5-kl-T1": replace(OC, loss="kl", temperature=1.0),
    "oc5-kl-lr1e-3": replace(OC, loss="kl", lr=1e-3),
    "oc5-mse-lr1e-3": replace(OC, lr=1e-3),
    "oc5-kl-bnrecal": replace(OC, loss="kl", bn_recal=True),
    "oc5-mse-bnrecal": replace(OC, bn_recal=True),
    "oc5-kl-reinit": replace(OC, loss="kl", init="reinit"),
    "oc5-mse-reinit": replace(OC, init="reinit"),
    "oc5-kl-aug-fixed": replace(OC, loss="kl", augment="shift2"),
    "oc5-kl-aug-online": replace(OC, loss="kl", augment="shift2", targets="online"),
    "oc5-mse-aug-fixed": replace(OC, augment="shift2"),
    "oc5-mse-aug-online": replace(OC, augment="shift2", targets="online"),
    "oc5-ce-aug": replace(OC, loss="ce", kd_weight=0.0, augment="shift2"),
    "oc10-kl": replace(OC, loss="kl", epochs=10),
    "oc10-mse": replace(OC, epochs=10),
    "oc10-kl-aug-online": replace(OC, loss="kl", epochs=10, augment="shift2", targets="online"),
    "oc10-mse-aug-online": replace(OC, epochs=10, augment="shift2", targets="online"),
}
BASELINES = {
    "hand-cnn-5ep": "issue 22's hand-designed CNN at the student's size, CE only, Adam OneCycle 3e-3, 5 epochs",
    "hand-cnn-3ep": "the same for 3 epochs (n2n's fine-tune length)",
    "hand-cnn-10ep": "the same for 10 epochs",
    "hand-cnn-5ep-aug": "hand-cnn-5ep with the shift2 augmentation of the recipes",
    "arch-scratch-5ep": "the student's architecture re-initialised, trained exactly like hand-cnn-5ep",
    "arch-scratch-5ep-aug": "arch-scratch-5ep with the shift2 augmentation",
}


def shift(x: torch.Tensor, generator: torch.Generator, pixels: int = 2) -> torch.Tensor:
    """Each image of ``x`` (N, C, H, W) moved by a random (dy, dx) in [-pixels, pixels]^2, edges replicated."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pixels,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * pixels + 1, (n, 2), generator=generator)
    rows = offsets[:, 0, None] + torch.arange(h)
    cols = offsets[:, 1, None] + torch.arange(w)
    batch = torch.arange(n)[:, None, None]
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def finetune(
    student: nn.Module,
    data: Any,
    recipe: Recipe,
    seed: int,
    z_train: torch.Tensor,
    teacher_fast: nn.Module,
    batch_size: int = 128,
) -> dict[str, Any]:
    """Fine-tune ``student`` (in place) with ``recipe``; the best-on-validation weights are kept (measured before
    training and 10 times along it, as n2n does). Returns the figures."""
    compute = COMPUTE
    student = compute.model(student)
    n = data.train.x.shape[0]
    steps = max(recipe.epochs * math.ceil(n / batch_size), recipe.min_steps)
    gen = torch.Generator().manual_seed(seed)
    figures: dict[str, Any] = {"steps": steps}
    if recipe.bn_recal:
        figures["val_before_recal"] = accuracy(student, data.val.x, data.val.y, compute=compute)
        recalibrate_bn(student, data.train.x, generator=torch.Generator().manual_seed(seed))
    best_acc = accuracy(student, data.val.x, data.val.y, compute=compute)
    figures["val_at_start"] = best_acc
    best_state = {k: v.clone() for k, v in student.state_dict().items()}
    every = max(1, steps // 10)
    curve: list[tuple[int, float]] = [(0, best_acc)]
    best_step = 0

    def on_step(step: int) -> None:
        nonlocal best_acc, best_state, best_step
        if (step + 1) % every == 0 or step + 1 == steps:
            acc = accuracy(student, data.val.x, data.val.y, compute=compute)
            curve.append((step + 1, acc))
            if acc >= best_acc:
                best_acc, best_step = acc, step + 1
                best_state = {k: v.clone() for k, v in student.state_dict().items()}

    loss_fn = distill_loss("mse" if recipe.loss == "ce" else recipe.loss, recipe.temperature)
    t0 = time.perf_counter()
    try:
        if recipe.exact_n2n:  # n2n's code path, with the arguments compress.finetune_student passes
            train_student(
                student,
                data.train.x,
                z_train,
                steps=steps,
                batch_size=batch_size,
                lr=recipe.lr,
                weight_decay=0.0,
                generator=gen,
                labels=data.train.y,
                loss_fn=loss_fn,
                kd_weight=recipe.kd_weight,
                on_step=on_step,
                compute=compute,
            )
        else:
            _train(student, data, recipe, steps, batch_size, gen, z_train, teacher_fast, loss_fn, on_step)
    except Diverged as err:
        figures["diverged"] = str(err)
    figures["train_seconds"] = time.perf_counter() - t0
    student.load_state_dict(best_state)
    student = student.to("cpu", memory_format=torch.contiguous_format).eval()
    figures.update(
        val_accuracy=best_acc,
        best_step=best_step,
        test_accuracy=accuracy(student, data.test.x, data.test.y),
        val_curve=curve,
    )
    # a BN recalibration of the chosen weights, measured on the side (choose it only when validation says so)
    recalibrate_bn(student, data.train.x, generator=torch.Generator().manual_seed(seed))
    figures["val_after_end_recal"] = accuracy(student, data.val.x, data.val.y)
    figures["test_after_end_recal"] = accuracy(student, data.test.x, data.test.y)
    return figures


def _train(student, data, recipe, steps, batch_size, gen, z_train, teacher_fast, loss_fn, on_step) -> None:
    """n2n's ``train_student`` loop (same batch order, loss and Adam) with a choice of schedule, augmentation and
    per-batch teacher targets. With the n2n recipe it gives the same weights as ``train_student``."""
    compute = COMPUTE
    student.train()
    opt = torch.optim.Adam(student.parameters(), lr=recipe.lr, weight_decay=0.0)
    if recipe.schedule == "cosine":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(1, steps))))
    elif recipe.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps)
    else:
        raise ValueError(recipe.schedule)
    aug_gen = torch.Generator().manual_seed(gen.initial_seed() + 7919)  # the data order stays n2n's
    n = data.train.x.shape[0]
    order, pos = torch.randperm(n, generator=gen), 0
    with relus_in_place(student):
        for step in range(steps):
            if pos + batch_size > n:
                order, pos = torch.randperm(n, generator=gen), 0
            idx = order[pos : pos + batch_size]
            pos += batch_size
            x = data.train.x[idx]
            if recipe.augment == "shift2":
                x = shift(x, aug_gen)
            xb = compute.batch(x)
            if recipe.targets == "online" and recipe.loss != "ce":
                with torch.no_grad():
                    target = teacher_fast(xb).float()
            else:
                target = z_train[idx]
            out = student(xb).float()
            loss = F.cross_entropy(out, data.train.y[idx])
            if recipe.loss != "ce" and recipe.kd_weight:
                loss = loss + recipe.kd_weight * loss_fn(out, target)
            value = loss.item()
            if not math.isfinite(value):
                raise Diverged(f"loss became {value} at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            on_step(step)


def check_trainer(student_fn, data, z_train, teacher_fast, steps: int = 30) -> float:
    """Largest weight difference between n2n's ``train_student`` and this file's trainer (n2n recipe) after
    ``steps`` steps from the same start (0.0: identical)."""
    a, b = COMPUTE.model(student_fn()), COMPUTE.model(student_fn())
    recipe = replace(N2N, exact_n2n=False, min_steps=steps, epochs=0)
    train_student(
        a,
        data.train.x,
        z_train,
        steps=steps,
        batch_size=128,
        lr=1e-3,
        weight_decay=0.0,
        generator=torch.Generator().manual_seed(0),
        labels=data.train.y,
        kd_weight=1.0,
        compute=COMPUTE,
    )
    _train(
        b,
        data,
        recipe,
        steps,
        128,
        torch.Generator().manual_seed(0),
        z_train,
        teacher_fast,
        distill_loss("mse"),
        lambda s: None,
    )
    return max(
        (p - q).abs().max().item()
        for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=False)
        if p.is_floating_point()
    )


def check_n2n(teacher, data, edits: Edits) -> dict[str, Any]:
    """``n2n.compress.finetune_student`` itself, default settings, on ``edits`` (one thread, serial)."""
    from n2n.compress import finetune_student
    from n2n.search.setup import eval_context
    from n2n.settings import CompressConfig

    cfg = CompressConfig(workers=1, candidate_threads=1).validate()
    t0 = time.perf_counter()
    ctx = eval_context(teacher, analyze(teacher, data.input_shape), data, cfg)
    seconds: dict[str, float] = {}
    student, final = finetune_student(ctx, data, cfg, edits, lambda event: None, None, seconds)
    return {**final, "seconds": time.perf_counter() - t0, "finetune_seconds": seconds.get("finetune")}


def summarize(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per student and recipe: mean (and per-seed) test and validation accuracy and wall seconds over the seeds."""
    groups: dict[str, dict[str, Any]] = {}
    for key, run in record["runs"].items():
        student, recipe, seed = key.split("|")
        g = groups.setdefault(
            f"{student}|{recipe}",
            {"student": student, "recipe": recipe, "seeds": [], "test": [], "val": [], "seconds": []},
        )
        g["seeds"].append(int(seed))
        g["test"].append(run["test_accuracy"])
        g["val"].append(run["val_accuracy"])
        g["seconds"].append(run["seconds"])
    for g in groups.values():
        for k in ("test", "val", "seconds"):
            g[f"mean_{k}"] = sum(g[k]) / len(g[k])
    return groups


def print_table(record: dict[str, Any]) -> None:
    groups = summarize(record)
    students = record.get("students", {})
    print("| student | recipe | seeds | test % (mean) | per seed | val % (mean) | wall s (mean) |")
    print("|---|---|---|---|---|---|---|")
    for g in sorted(groups.values(), key=lambda g: (g["student"], -g["mean_test"])):
        params = students.get(g["student"], {}).get("params", "?")
        per_seed = ", ".join(f"{100 * t:.2f}" for t in g["test"])
        print(
            f"| {g['student']} ({params:,}) | {g['recipe']} | {len(g['seeds'])} | {100 * g['mean_test']:.2f} | "
            f"{per_seed} | {100 * g['mean_val']:.2f} | {g['mean_seconds']:.0f} |"
        )


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["--table"]:  # print the table of an existing JSON and stop
        path = Path(sys.argv[2] if len(sys.argv) > 2 else Path(__file__).parent / "results" / "finetune_recipes.json")
        print_table(json.loads(path.read_text()))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--students", nargs="+", default=["s109k"], choices=list(STUDENTS))
    parser.add_argument(
        "--recipes",
        nargs="+",
        default=["n2n", "oc5-mse", "oc5-kl", "hand-cnn-5ep"],
        choices=list(RECIPES) + list(BASELINES),
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "finetune_recipes.json"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--check-trainer", action="store_true", help="compare this trainer with train_student")
    parser.add_argument(
        "--check-n2n", action="store_true", help="also run compress.finetune_student on the first student"
    )
    parser.add_argument("--force", action="store_true", help="rerun entries already in --out")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    out = Path(args.out)
    record: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    record.setdefault("commands", [])
    record["commands"].append("OMP_NUM_THREADS={} python {}".format(args.threads, " ".join(sys.argv)))
    record.setdefault("runs", {})
    record["recipes"] = {k: asdict(v) for k, v in RECIPES.items()}
    record["baselines"] = BASELINES
    record["threads"] = args.threads

    def save() -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=1) + "\n")

    data = load_data(args.data, args.data_dir, seed=0)
    teacher, spec = load_model(args.teacher)
    teacher = teacher.eval()
    analysis = analyze(teacher, data.input_shape)
    cache = Path(args.teacher).parent / (Path(args.teacher).name + "_train_logits.pt")
    t0 = time.perf_counter()
    if cache.is_file():  # computed by an earlier invocation: the time recorded is that one's
        z_train, logits_seconds = torch.load(cache)
    else:
        z_train = predict_logits(teacher, data.train.x, compute=COMPUTE)  # as n2n's fine-tune: unfolded, batch 128
        logits_seconds = time.perf_counter() - t0
        torch.save((z_train, logits_seconds), cache)
    teacher_fast = COMPUTE.model(folded(teacher) or teacher).eval()  # per-batch targets: folded BN, ~1e-6 apart
    record["teacher"] = {
        "dir": args.teacher,
        "params": count_params(teacher),
        "val_accuracy": accuracy(teacher, data.val.x, data.val.y),
        "test_accuracy": accuracy(teacher, data.test.x, data.test.y),
        "train_logits_seconds": logits_seconds,
    }
    record["data"] = {"name": args.data, "train": len(data.train), "val": len(data.val), "test": len(data.test)}
    print(
        f"teacher: val {record['teacher']['val_accuracy']:.4f} test {record['teacher']['test_accuracy']:.4f}; "
        f"train logits {logits_seconds:.0f}s",
        flush=True,
    )
    ctx = types.SimpleNamespace(
        teacher=teacher,
        example=data.val.x[:2],
        protected=tuple(analysis.protected()),
        settings=types.SimpleNamespace(reinit=False),
    )
    students = record.setdefault("students", {})
    for name in args.students:
        what, edits = STUDENTS[name]
        params = count_params(build_student(ctx, edits))
        widths = fit_widths(params, data.input_shape[0], data.num_classes)
        students[name] = {
            "what": what,
            "edits": edits.to_dict(),
            "params": params,
            "hand_cnn_widths": widths,
            "hand_cnn_params": small_cnn_params(widths, data.input_shape[0], data.num_classes),
        }
    save()

    if args.check_trainer:
        edits = STUDENTS[args.students[0]][1]
        diff = check_trainer(lambda: build_student(ctx, edits), data, z_train, teacher_fast)
        record["trainer_check"] = {"student": args.students[0], "steps": 30, "max_weight_difference": diff}
        print(f"trainer check: max weight difference after 30 steps {diff:.3g}", flush=True)
        save()
    if args.check_n2n:
        name = args.students[0]
        try:
            result = check_n2n(teacher, data, STUDENTS[name][1])
        except Exception as err:  # compress.py is being edited elsewhere: record, do not stop the grid
            result = {"error": f"{type(err).__name__}: {err}"}
        record["n2n_finetune_check"] = {"student": name, **result}
        print(f"compress.finetune_student on {name}: {result}", flush=True)
        save()

    for seed in args.seeds:
        for name in args.students:
            edits = STUDENTS[name][1]
            for rname in args.recipes:
                key = f"{name}|{rname}|{seed}"
                if key in record["runs"] and not args.force:
                    continue
                t0 = time.perf_counter()
                if rname in BASELINES:
                    epochs = int(rname.split("-")[2][:-2])
                    if rname.startswith("hand-cnn"):
                        model = SmallCNN(
                            tuple(students[name]["hand_cnn_widths"]), data.input_shape[0], data.num_classes
                        )
                    else:
                        torch.manual_seed(seed)
                        model = build_student(ctx, edits)
                    augment = shift if rname.endswith("-aug") else None
                    figures = train_from_scratch(model, data, epochs=epochs, seed=seed, augment=augment)
                else:
                    recipe = RECIPES[rname]
                    torch.manual_seed(seed)  # as compress.finetune_student: torch.manual_seed(cfg.seed), then build
                    student = build_student(ctx, edits)
                    if recipe.init == "reinit":
                        _reinitialise(student)
                    figures = finetune(student, data, recipe, seed, z_train, teacher_fast)
                figures["seconds"] = time.perf_counter() - t0
                record["runs"][key] = figures
                save()
                print(
                    f"{key}: test {figures['test_accuracy']:.4f} val {figures['val_accuracy']:.4f} "
                    f"({figures['seconds']:.0f}s)",
                    flush=True,
                )
    record["summary"] = summarize(record)
    save()
    print_table(record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
