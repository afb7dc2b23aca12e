"""The ``n2n`` command line: ``demo``, ``train-teacher``, ``compress``, ``evaluate``, ``export``, ``inspect``.

Every subcommand is a plain function taking typed arguments (tests call them directly); ``main`` only parses, shows
progress with rich, and turns :class:`~n2n.errors.N2NError` into a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from n2n.errors import ConfigError, Interrupted, N2NError
from n2n.files import check_out_dir, check_writable_dir, write_json
from n2n.train.compute import enable_huge_pages

console = Console(stderr=True)

DEMO_DEFAULTS = {"arch": "vgg11", "width": 0.5, "epochs": 15}
DATA_OPTIONS = ("image_size", "test_per_class", "augment")  # reader options of `n2n.load_data`, one flag each


# ---------------------------------------------------------------- progress display
class _Display:
    """Turns search events into rich progress bars."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = None
        self.best = None

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start":  # before the first candidate: what the student will be measured against
            weak = " (weak: check its training and preprocessing)" if event.get("weak_teacher") else ""
            self.progress.console.print(
                f"teacher: {event['teacher_params']:,} parameters, {event['teacher_val_accuracy']:.2%} validation "
                f"accuracy{weak}"
            )
        elif kind == "stage":
            self._restart(f"stage {event['stage']}", event["updates"])
            self.progress.update(self.task, completed=event.get("completed", 0))
        elif kind == "update":
            best = event.get("reward_best")
            desc = (
                f"stage {event['stage']}  mean R {event['reward_mean']:+.3f}  best R {best:+.3f}"
                if best is not None
                else f"stage {event['stage']}"
            )
            self.progress.update(self.task, advance=1, description=desc)
        elif kind == "finetune":
            self._restart(
                f"fine-tune ({event['params']:,} parameters)" if "params" in event else "fine-tune", event["steps"]
            )
        elif kind == "finetune_step":
            self.progress.update(self.task, completed=event["step"])

    def _restart(self, description: str, total: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=self.progress.tasks[self.task].total)
        self.task = self.progress.add_task(description, total=total)


class _LazyProgress(Progress):
    """A progress display that appears with its first bar: a command that fails before it shows anything prints its
    error on one line, with no empty display above it."""

    def __enter__(self) -> _LazyProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live.is_started:
            self.stop()

    def add_task(self, *args: Any, **kwargs: Any) -> Any:
        if not self.live.is_started:
            self.start()
        return super().add_task(*args, **kwargs)


def _progress() -> Progress:
    return _LazyProgress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


# ---------------------------------------------------------------- commands
def train_teacher_cmd(
    arch: str,
    data: str,
    data_dir: str | None,
    out: str,
    width: float = 1.0,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    max_train: int | None = None,
    recipe: str = "default",
    data_options: dict[str, Any] | None = None,
    device: str = "auto",
    overwrite: bool = False,
    normalize: str = "auto",
) -> dict[str, Any]:
    """Train a zoo teacher by ``recipe`` (explicit epochs, lr, batch size override it) and save it to ``out``.

    Its inputs are normalised by ``normalize`` (``auto``: the training split's statistics), which its spec records.
    """
    from n2n.data import load_data, parse_normalize
    from n2n.data.normalize import fixed_normalization
    from n2n.models.io import save_model
    from n2n.models.zoo import list_models
    from n2n.recipes import resolve_recipe
    from n2n.teacher import train_teacher
    from n2n.train.compute import Compute, resolve_device, resolve_precision

    target = resolve_device(device)
    compute = Compute(target, resolve_precision("auto", target))
    _check_seed(seed)
    check_out_dir(out, "spec.json", "a saved model", overwrite)

    if arch not in list_models():
        raise ConfigError(f"--arch must be one of {', '.join(list_models())}; got {arch!r}")
    if width <= 0:
        raise ConfigError(f"--width must be a positive number; got {width}")
    resolved = resolve_recipe(recipe, data, epochs=epochs, lr=lr, batch_size=batch_size)  # fails before loading
    choice = parse_normalize(normalize)
    bundle = load_data(data, data_dir, seed=seed, max_train=max_train, options=data_options)
    choice = "data" if choice == "auto" else choice
    bundle = bundle.normalized(fixed_normalization(choice, bundle.input_shape[0], bundle.stats, data))
    with _progress() as progress:
        task = progress.add_task(f"train {arch} on {data}", total=None)
        model, spec = train_teacher(
            arch,
            bundle,
            width=width,
            recipe=resolved,
            seed=seed,
            on_step=lambda s, total: progress.update(task, completed=s, total=total),
            compute=compute,
        )
    save_model(model, spec, out)
    from n2n.surgery import count_params

    metrics = {
        "params": count_params(model),
        "val_accuracy": spec.meta["val_accuracy"],
        "test_accuracy": spec.meta["test_accuracy"],
    }
    console.print(
        f"teacher saved to {out}: {metrics['params']:,} parameters, test accuracy {metrics['test_accuracy']:.2%}"
    )
    return metrics


def compress_cmd(
    teacher: str,
    data: str,
    data_dir: str | None,
    out: str,
    config: Any,
    max_train: int | None = None,
    weights: str | None = None,
    teacher_kwargs: str | None = None,
    trust_pickle: bool = False,
    data_options: dict[str, Any] | None = None,
    command: str | None = None,
    trust_code: bool = False,
    overwrite: bool = False,
    normalize: str = "auto",
) -> dict[str, Any]:
    """Compress ``teacher`` (saved model, zoo name or import path); writes ``out`` and returns ``report.json``.

    ``command`` (the command line that asked for it) is recorded in ``run.json`` for the report; ``normalize`` (see
    :func:`n2n.preprocess.choose_normalization`) in the teacher's and student's ``spec.json``.
    """
    check_writable_dir(out)
    from n2n.data import load_data, parse_normalize
    from n2n.models.source import parse_kwargs, resolve_teacher

    config.validate()
    choice = parse_normalize(normalize)
    bundle = load_data(data, data_dir, seed=config.seed, max_train=max_train, options=data_options)
    model, spec = resolve_teacher(
        teacher,
        weights=weights,
        kwargs=parse_kwargs(teacher_kwargs),
        input_shape=tuple(bundle.input_shape),
        num_classes=bundle.num_classes,
        trust_pickle=trust_pickle,
        trust_code=trust_code,
    )
    _check_shape(spec, bundle, "the teacher", "teacher")
    picked = _choose_normalization(choice, model, spec, bundle, "the teacher", config)
    spec = replace(spec, normalization=picked.normalization.to_spec())
    source = _source(teacher, bundle, data_dir, max_train)
    if command is not None:
        source["command"] = command
    return _run_compress(model, spec, source, out, config, resume=False, bundle=bundle, overwrite=overwrite)


def inspect_cmd(
    teacher: str,
    input_shape: str | None,
    weights: str | None = None,
    teacher_kwargs: str | None = None,
    fix: list[str] | None = None,
    as_json: bool = False,
    trust_pickle: bool = False,
    trust_code: bool = False,
) -> dict[str, Any]:
    """What the search can change in ``teacher``, layer by layer, with the reason for every fixed layer."""
    from n2n.models.source import parse_kwargs, resolve_teacher
    from n2n.surgery import analyze, unmatched_patterns

    shape = _shape(input_shape) if input_shape else None
    if shape is None and not Path(teacher, "spec.json").is_file():
        raise ConfigError("--input-shape C,H,W is needed unless --teacher is a saved n2n model (e.g. 3,32,32)")
    kwargs = parse_kwargs(teacher_kwargs)
    model, spec = resolve_teacher(
        teacher,
        weights=weights,
        kwargs=kwargs,
        input_shape=shape,
        num_classes=kwargs.get("num_classes", 10),
        trust_pickle=trust_pickle,
        require_weights=False,
        trust_code=trust_code,
    )
    if shape is not None and tuple(shape) != tuple(spec.input_shape):
        raise ConfigError(f"{teacher} takes inputs of shape {tuple(spec.input_shape)}; drop --input-shape or match it")
    analysis = analyze(model, spec.input_shape, fix=tuple(fix or ()))
    unmatched = unmatched_patterns(analysis, tuple(fix or ()))
    if unmatched:
        raise ConfigError(f"--fix {unmatched[0]!r} matches none of the layers of {teacher} (drop it or fix the name)")
    result = analysis_report(analysis)
    if as_json:
        print(json.dumps(result, indent=2))
        return result
    table = Table(
        title=f"{teacher}: {analysis.params:,} parameters, {2 * analysis.macs:,} FLOPs, "
        f"input {tuple(spec.input_shape)}, {analysis.num_outputs} outputs"
    )
    for col, justify in (
        ("#", "right"),
        ("layer", "left"),
        ("type", "left"),
        ("output", "left"),
        ("params", "right"),
        ("FLOPs", "right"),
        ("remove", "left"),
        ("shrink", "left"),
    ):
        table.add_column(col, justify=justify)
    for row in result["layers"]:
        table.add_row(
            str(row["index"]),
            row["name"],
            row["type"],
            "x".join(map(str, row["output_shape"])),
            f"{row['params']:,}",
            f"{row['flops']:,}",
            row["remove"],
            row["shrink"],
        )
    Console(width=None if sys.stdout.isatty() else 200).print(table)  # piped output: one row per line
    counts = result["summary"]
    console.print(
        f"{counts['removable']} of {counts['layers']} layers removable, {counts['shrinkable']} shrink "
        f"decisions, {counts['fixed']} fixed"
    )
    return result


def analysis_report(analysis: Any) -> dict[str, Any]:
    """``n2n inspect --json``: the analysis as plain data, with one word and a reason per stage and layer."""
    layers = []
    for layer in analysis.layers:
        shrink = "yes" if layer.shrinkable else f"no: {layer.shrink_reason}"
        layers.append(
            {
                "index": layer.index,
                "name": layer.name,
                "type": layer.kind,
                "output_shape": list(layer.output_shape),
                "params": layer.params,
                "flops": 2 * layer.macs,
                "removable": layer.removable,
                "remove": "yes" if layer.removable else f"no: {layer.remove_reason}",
                "shrinkable": layer.shrinkable,
                "shrink": shrink,
                "coupled": list(layer.coupled),
            }
        )
    fixed = sum(not (row["removable"] or row["shrinkable"]) for row in layers)
    return {
        "input_shape": list(analysis.input_shape),
        "outputs": analysis.num_outputs,
        "params": analysis.params,
        "flops": 2 * analysis.macs,
        "layers": layers,
        "summary": {
            "layers": len(layers),
            "removable": sum(r["removable"] for r in layers),
            "shrinkable": sum(r["shrinkable"] for r in layers),
            "fixed": fixed,
        },
    }


def _check_seed(seed: int) -> None:
    if not 0 <= seed < 2**32:
        raise ConfigError(f"--seed must be an integer in [0, 2**32); got {seed}")


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(
            f"--input-shape must be integers like 3,32,32 (channels,height,width); got {text!r}"
        ) from None
    if not shape or any(d < 1 for d in shape):
        raise ConfigError(f"--input-shape must be positive integers like 3,32,32; got {text!r}")
    return shape


def _check_shape(spec: Any, bundle: Any, who: str, what: str = "model") -> None:
    if tuple(bundle.input_shape) != tuple(spec.input_shape):
        raise N2NError(
            f"{who} takes inputs of shape {tuple(spec.input_shape)} but {bundle.name} has {tuple(bundle.input_shape)}: "
            f"pass the data set the {what} was trained on"
        )


def _choose_normalization(choice: Any, model: Any, spec: Any, bundle: Any, who: str, config: Any = None) -> Any:
    """The normalization ``model`` gets on ``bundle`` (:func:`n2n.preprocess.choose_normalization`); one line says
    which when it was measured, and warns when ``--normalize`` replaces a different recorded one."""
    from n2n.preprocess import choose_normalization
    from n2n.train.compute import CPU

    batch_size, compute = (None, CPU) if config is None else (config.eval_batch_size, config.compute())
    picked = choose_normalization(choice, model, spec, bundle, batch_size, compute)
    if picked.val_accuracy:
        scores = ", ".join(f"{name} {acc:.1%}" for name, acc in picked.val_accuracy.items())
        console.print(
            f"normalization: {picked.name}, the best validation accuracy of {who} on {bundle.name} ({scores}); "
            "--normalize chooses another",
            soft_wrap=True,
            highlight=False,
        )
    if picked.overrides:
        given = choice if isinstance(choice, str) else picked.normalization.describe()
        console.print(
            f"[yellow]warning:[/] --normalize {escape(given)} replaces the normalization {escape(who)} records "
            f"({escape(picked.recorded.describe())})",
            soft_wrap=True,
            highlight=False,
        )
    return picked


def _source(teacher: str, bundle: Any, data_dir: str | None, max_train: int | None) -> dict[str, Any]:
    """What ``run.json`` records of a run's inputs: the teacher as given and how to load the same data again."""
    return {
        "teacher": teacher,
        "data": bundle.name,
        "data_dir": None if data_dir is None else str(Path(data_dir).resolve()),
        "max_train": max_train,
        "data_options": bundle.options,
    }


def baseline_cmd(args: argparse.Namespace, command: str | None = None) -> dict[str, Any]:
    """`n2n baseline uniform|scratch`: a student made without the search, fine-tuned like the search's.

    Like a search, it records its teacher, data and ``command`` in ``OUT/run.json`` (the report shows the command),
    and the normalization ``--normalize`` chooses in the student's ``spec.json``.
    """
    from n2n.baselines import run_baseline, scratch_config, uniform_edits
    from n2n.data import load_data, load_recorded, parse_normalize, read_source
    from n2n.models.io import load_model
    from n2n.models.source import parse_kwargs, resolve_teacher
    from n2n.surgery import analyze

    if args.out is None:
        raise ConfigError("n2n baseline needs --out")
    check_out_dir(args.out, "report.json", "a finished run", args.overwrite)
    choice = parse_normalize(args.normalize or "auto")
    if args.kind == "uniform":
        config = _config_from(args)
        if args.teacher is None or config.target_params is None:
            raise ConfigError("n2n baseline uniform needs --teacher and --target-params N (a positive integer)")
        bundle = load_data(
            args.data or "digits",
            args.data_dir,
            seed=config.seed,
            max_train=args.max_train,
            options=_data_options(args),
        )
        model, spec = resolve_teacher(
            args.teacher,
            weights=args.weights,
            kwargs=parse_kwargs(args.teacher_kwargs),
            input_shape=tuple(bundle.input_shape),
            num_classes=bundle.num_classes,
            trust_pickle=args.trust_pickle,
            trust_code=args.trust_code,
        )
        edits = uniform_edits(model, analyze(model.eval(), bundle.input_shape, config.fix), config.target_params)
        source = _source(args.teacher, bundle, args.data_dir, args.max_train)
    else:
        if args.run is None:
            raise ConfigError("n2n baseline scratch needs --run RUN_DIR (a finished `n2n compress` run)")
        run = Path(args.run)
        config, edits = scratch_config(run)
        source = read_source(run / "run.json")
        bundle = load_recorded(source, config.seed)
        model, spec = load_model(run / "teacher", trust_code=args.trust_code)
        source = {k: v for k, v in source.items() if k != "command"}
    _check_shape(spec, bundle, "the teacher", "teacher")
    picked = _choose_normalization(choice, model, spec, bundle, "the teacher", config)
    spec = replace(spec, normalization=picked.normalization.to_spec())
    Path(args.out).mkdir(parents=True, exist_ok=True)
    record = {**source, "baseline": args.kind, **({"command": command} if command else {})}
    write_json(Path(args.out) / "run.json", record)
    with _progress() as progress:
        report = run_baseline(args.kind, model, spec, bundle, config, args.out, edits, listener=_Display(progress))
    _summary(report)
    return report


def resume_cmd(run_dir: str, trust_code: bool = False, tensorboard: str | None = None) -> dict[str, Any]:
    """Continue the interrupted search in ``run_dir`` with its own teacher copy, data and settings.

    What the run directory records is data, not instructions: a teacher that names code to import needs
    ``trust_code``, and a recorded TensorBoard directory outside ``run_dir`` is refused unless ``tensorboard`` (given
    on the command line) replaces it.
    """
    from n2n.data import read_source
    from n2n.files import inside
    from n2n.models.io import load_model
    from n2n.search.config import read_config

    run = Path(run_dir)
    if not (run / "run.json").is_file() or not (run / "config.json").is_file():
        raise N2NError(f"{run} is not an n2n run directory (run.json and config.json are needed)")
    source = read_source(run / "run.json")
    config = read_config(run / "config.json")
    if tensorboard is not None:
        config = replace(config, tensorboard=tensorboard)
    elif config.tensorboard is not None and not inside(config.tensorboard, run):
        raise ConfigError(
            f"{run / 'config.json'} logs to {config.tensorboard}, outside the run directory; n2n writes there only "
            "when you say so: add --tensorboard DIR to the --resume command"
        )
    check_writable_dir(run, "--resume")
    model, spec = load_model(run / "teacher", trust_code=trust_code)
    return _run_compress(model, spec, source, run_dir, config.validate(), resume=True)


def _run_compress(
    model: Any,
    spec: Any,
    source: dict[str, Any],
    out: str,
    config: Any,
    resume: bool,
    bundle: Any = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    from n2n.compress import compress
    from n2n.data import load_recorded

    if bundle is None:  # a resumed run: its data loaded again (a new run's was checked by compress_cmd)
        bundle = load_recorded(source, config.seed)
        _check_shape(spec, bundle, "the teacher", "teacher")
    with _progress() as progress:
        result = compress(
            model,
            spec,
            bundle,
            config,
            out,
            listener=_Display(progress),
            resume=resume,
            overwrite=overwrite,
            record=None if resume else source,
        )
    _summary(result.report)
    console.print(f"student saved to {Path(out) / 'student'}; report in {Path(out) / 'report.html'}")
    return result.report


def evaluate_cmd(
    model_dir: str,
    data: str,
    data_dir: str | None,
    seed: int = 0,
    teacher: str | None = None,
    latency: bool = True,
    data_options: dict[str, Any] | None = None,
    trust_code: bool = False,
    normalize: str = "auto",
) -> dict[str, Any]:
    """Test accuracy, parameters, FLOPs, file size and measured latency of a saved model (beside ``teacher``'s).

    Each model gets the normalization its ``spec.json`` records, unless ``normalize`` says otherwise.
    """
    from n2n.data import load_data, parse_normalize
    from n2n.measure import measure_cost, speedups
    from n2n.models.io import load_model
    from n2n.train.distill import accuracy

    choice = parse_normalize(normalize)
    bundle = load_data(data, data_dir, seed=seed, options=data_options)
    rows: dict[str, dict[str, Any]] = {}
    for name, directory in (("teacher", teacher), ("model", model_dir)):
        if directory is None:
            continue
        model, spec = load_model(directory, trust_code=trust_code)
        _check_shape(spec, bundle, directory)
        picked = _choose_normalization(choice, model, spec, bundle, directory)
        inputs = bundle.normalized(picked.normalization)
        rows[name] = {
            **measure_cost(model, tuple(spec.input_shape), latency=latency),
            "val_accuracy": accuracy(model, inputs.val.x, inputs.val.y),
            "test_accuracy": accuracy(model, inputs.test.x, inputs.test.y),
            "normalization": picked.normalization.to_spec(),
        }
    result = dict(rows["model"])
    if "teacher" in rows:
        result["teacher"] = rows["teacher"]
        result["speedup"] = speedups(rows["teacher"], rows["model"])
    table = cost_table(f"{model_dir} on {data}", rows, result.get("speedup"))
    Console(width=None if sys.stdout.isatty() else 200).print(table)  # piped output: one row per line
    return result


def cost_table(title: str, rows: dict[str, dict[str, Any]], speedup: dict[str, Any] | None) -> Table:
    """Parameters, FLOPs, file size, latencies and accuracy per model, with a ratio row when ``speedup`` is given."""
    latency_cols = [(rt, b) for rt, per in next(iter(rows.values()))["latency_ms"].items() for b in per]
    table = Table(title=title)
    for col in ("", "params", "FLOPs", "file", *[f"{rt} b{b} ms" for rt, b in latency_cols], "test accuracy"):
        table.add_column(col, justify="right")
    for name, r in rows.items():
        lat = [r["latency_ms"].get(rt, {}).get(b) for rt, b in latency_cols]
        table.add_row(
            name,
            f"{r['params']:,}",
            f"{r['flops']:,}",
            f"{r['file_bytes'] / 1024:,.0f} KiB",
            *["" if v is None else f"{v:.3f}" for v in lat],
            f"{r['test_accuracy']:.2%}" if "test_accuracy" in r else "",
        )
    if speedup is not None:
        lat = [speedup["latency"].get(rt, {}).get(b) for rt, b in latency_cols]
        table.add_row(
            "speed-up",
            f"{speedup['params']:.1f}x",
            f"{speedup['macs']:.1f}x",
            f"{speedup['file_bytes']:.1f}x",
            *["" if v is None else f"{v:.2f}x" for v in lat],
            "",
        )
    return table


def export_cmd(
    model_dir: str,
    fmt: str,
    out: str | None = None,
    data: str | None = None,
    data_dir: str | None = None,
    atol: float = 1e-4,
    trust_code: bool = False,
    normalize: str = "auto",
    bake: bool = False,
) -> dict[str, Any]:
    """Export a saved model to ONNX or TorchScript and check it numerically against the PyTorch model.

    The check runs on test images of ``data`` (or of ``digits`` when the model was trained on it and no data is
    given), normalised as the model records (or as ``normalize`` says), otherwise on seeded random inputs of the
    model's input shape. ``bake`` puts the normalization into the file, which then takes pixels in [0, 1].
    """
    from n2n.data import Normalization, load_data, parse_normalize
    from n2n.data.normalize import fixed_normalization
    from n2n.export import EXPORTERS, export_model
    from n2n.models.io import load_model

    choice = parse_normalize(normalize)
    if fmt not in EXPORTERS:
        raise ConfigError(f"--format must be one of {', '.join(EXPORTERS)}; got {fmt!r}")
    if out is not None:
        if str(out).strip() == "" or Path(out).is_dir():
            raise ConfigError(f"--out {out!r} must name the file to write (e.g. student.onnx)")
        check_writable_dir(Path(out).parent, "--out")
    model, spec = load_model(model_dir, trust_code=trust_code)
    data = data or ("digits" if spec.meta.get("data") == "digits" else None)
    inputs, norm = None, Normalization.from_spec(spec.normalization)
    if data is not None:
        bundle = load_data(data, data_dir)
        _check_shape(spec, bundle, model_dir)
        norm = _choose_normalization(choice, model, spec, bundle, model_dir).normalization
        channels = bundle.input_shape[0]
        inputs = bundle.normalized(Normalization.identity(channels) if bake else norm).test.x
    elif choice != "auto":
        if not bake:
            raise ConfigError("--normalize sets the inputs of the check on --data, or with --bake-normalization")
        norm = fixed_normalization(choice, spec.input_shape[0], None, model_dir)
    if bake and norm is None:
        raise ConfigError(
            f"{model_dir} records no normalization to bake: pass --normalize, or --data to measure the best one"
        )
    target = Path(out) if out else Path(model_dir) / f"model{EXPORTERS[fmt].suffix}"
    baked = norm if bake else None
    result = export_model(model, tuple(spec.input_shape), fmt, target, data=inputs, atol=atol, bake=baked)
    diffs = ", ".join(f"batch {b}: {d:.2e}" for b, d in result.max_abs_diff.items())
    takes = f"; it takes pixels in [0, 1] and normalises them ({baked.describe()})" if baked else ""
    console.print(
        f"{fmt} model written to {result.path}; max abs difference vs PyTorch on "
        f"{data + ' test images' if data else 'random inputs'}: {diffs} (<= {atol:g}){takes}",
        soft_wrap=True,
    )
    return {
        "path": str(result.path),
        "format": fmt,
        "max_abs_diff": result.max_abs_diff,
        "inputs": data or "random",
        "baked_normalization": None if baked is None else baked.to_spec(),
    }


def demo_cmd(
    out: str = "runs/demo", config: Any = None, command: str | None = None, overwrite: bool = False
) -> dict[str, Any]:
    """Train a teacher on scikit-learn's digits and compress it: the embedded default, no download."""
    check_out_dir(out, "compress/report.json", "a finished demo", overwrite)
    teacher_dir = Path(out) / "teacher"
    console.print(f"[bold]n2n demo[/]: {DEMO_DEFAULTS['arch']} (width {DEMO_DEFAULTS['width']}) on scikit-learn digits")
    train_teacher_cmd(
        DEMO_DEFAULTS["arch"],
        "digits",
        None,
        str(teacher_dir),
        width=DEMO_DEFAULTS["width"],
        epochs=DEMO_DEFAULTS["epochs"],
        seed=config.seed,
        overwrite=True,  # the demo's own teacher, trained again each time
    )
    return compress_cmd(
        str(teacher_dir), "digits", None, str(Path(out) / "compress"), config, command=command, overwrite=overwrite
    )


def report_cmd(runs: list[str], out: str | None = None, trust_code: bool = False) -> dict[str, Any] | Path:
    """One run: write its report.json, report.md and report.html again (returns the report). Several runs: one
    comparison page ``comparison.html`` in ``out`` (default: the first run directory; returns its path)."""
    from n2n.report import rebuild_reports
    from n2n.reporting.html import write_comparison

    if len(runs) > 1:
        check_writable_dir(out or runs[0])
        return write_comparison(runs, out or runs[0])
    if out is not None:
        raise ConfigError("--out is for comparing several runs; `n2n report RUN` writes its report into RUN")
    return rebuild_reports(runs[0], trust_code=trust_code)


def _summary(report: dict[str, Any]) -> None:
    t, s = report["teacher"], report["student"]
    table = Table(title="n2n: teacher vs student")
    for col in ("", "params", "FLOPs", "test accuracy"):
        table.add_column(col, justify="right")
    table.add_row("teacher", f"{t['params']:,}", f"{t['flops']:,}", f"{t['test_accuracy']:.2%}")
    table.add_row("student", f"{s['params']:,}", f"{s['flops']:,}", f"{s['test_accuracy']:.2%}")
    table.add_row(
        "ratio",
        f"{report['compression']:.1f}x",
        f"{t['flops'] / max(1, s['flops']):.1f}x",
        f"{report['accuracy_change'] * 100:+.2f} pts",
    )
    Console().print(table)
    front = [row for row in report.get("front") or [] if not row.get("chosen")]
    if front:
        sizes = ", ".join(f"{row['path']} ({row['params']:,} parameters, {row['test_accuracy']:.2%})" for row in front)
        console.print(f"other sizes saved: {sizes}")
    console.print(f"{report['evaluations']} candidates evaluated, wall time {report['wall_time_s']:.0f} s")


# ---------------------------------------------------------------- argument parsing
def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per CompressConfig field, with its help text and default."""
    from n2n.search.config import CompressConfig

    defaults = CompressConfig()
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML file of settings (names as below, dashes or "
        "underscores); options given on the command line override it",
    )
    for f in fields(CompressConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f"{f.metadata['help']} (default: {default})"
        if f.name == "fix":
            parser.add_argument(flag, action="append", default=None, metavar="PATTERN", help=help_text + "; repeatable")
        elif f.name == "fractions":
            parser.add_argument(flag, type=_fraction_list, default=None, metavar="F,F,...", help=help_text)
        elif isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        else:
            kind = _scalar_type(f.type, default)
            parser.add_argument(flag, type=kind, default=None, choices=f.metadata.get("choices"), help=help_text)


def _scalar_type(annotation: Any, default: Any) -> type:
    if default is not None:
        return type(default)
    text = str(annotation)
    return float if "float" in text else int if "int" in text else str


def _fraction_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 0.25,0.5,1.0; got {text!r}"
        ) from None


def _config_type() -> type:
    from n2n.search.config import CompressConfig

    return CompressConfig


def _config_from(args: argparse.Namespace) -> Any:
    from n2n.search.config import CompressConfig

    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        values = _read_config_file(args.config)
    given = {f.name: getattr(args, f.name) for f in fields(CompressConfig) if getattr(args, f.name, None) is not None}
    if "fix" in given:
        given["fix"] = tuple(given["fix"])
    values.update(given)  # options on the command line override the file
    checked = CompressConfig.from_mapping(values, where="settings")  # types checked, names normalised
    explicit = {k: getattr(checked, k) for k in (str(key).replace("-", "_") for key in values) if k != "protocol"}
    return CompressConfig.preset(checked.protocol, **explicit).validate()


def _read_config_file(path: str) -> dict[str, Any]:
    """A YAML (or JSON) file of settings, keys as in `n2n compress --help` (dashes or underscores)."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"--config {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--config {path} is not UTF-8 text (a YAML or JSON file of settings is)") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"--config {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path} must map setting names to values (e.g. 'updates: 20')")
    from n2n.search.config import CompressConfig

    checked = CompressConfig.from_mapping(values, where=f"--config {path}").to_dict()
    return {name: checked[name] for name in (str(key).replace("-", "_") for key in values)}


def _data_options(args: argparse.Namespace) -> dict[str, Any]:
    """The reader options given on the command line (``--image-size`` ...), for ``load_data(options=...)``."""
    return {k: getattr(args, k) for k in DATA_OPTIONS if getattr(args, k, None) is not None}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit code 2, like every other user error
        console.print(
            f"[red]error:[/] {message} (see `{self.prog} --help`)", soft_wrap=True, markup=True, highlight=False
        )
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from n2n.data.augment import list_policies
    from n2n.recipes import list_recipes

    parser = _Parser(
        prog="n2n",
        description="Compress a trained PyTorch classifier into a smaller student by "
        "reinforcement learning (N2N learning, ICLR 2018).",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def data_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data",
            default=None,
            help="data set name: digits (embedded), mnist, fashion-mnist, kmnist, cifar10, cifar100, "
            "cifar100-coarse, svhn, caltech256, imagefolder, npz (default: digits)",
        )
        p.add_argument(
            "--data-dir", default=None, help="directory holding the data set's files, or the .npz file (not for digits)"
        )
        p.add_argument(
            "--max-train", type=int, default=None, help="use at most this many training examples (quick runs)"
        )
        p.add_argument(
            "--image-size",
            type=int,
            default=None,
            metavar="PIXELS",
            help="imagefolder, caltech256: shorter side resized, then center-cropped to this (default: 64)",
        )
        p.add_argument(
            "--test-per-class",
            type=int,
            default=None,
            help="imagefolder (without train/ and test/), caltech256: test images per class (default: 25)",
        )
        p.add_argument(
            "--augment",
            default=None,
            choices=list_policies(),
            help="training augmentation (default: the data set's own: crop_flip for CIFAR, caltech256 and "
            "imagefolder, crop for svhn, none otherwise)",
        )
        normalize_option(p)

    def normalize_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--normalize",
            default=None,
            metavar="auto|data|none|imagenet|MEAN,STD",
            help="what the model gets of pixels scaled to [0, 1]: data (standardised with the training split's "
            "mean and std), none (as they are), imagenet (ImageNet's mean and std, RGB), or MEAN,STD (e.g. 0.5,0.25; "
            "per channel M1/M2/M3,S1/S2/S3). Default auto: what the model's spec.json records; a teacher that "
            "records none gets the best of data, none and imagenet on the validation split; train-teacher: data",
        )

    p = sub.add_parser("demo", help="train a teacher on scikit-learn's digits and compress it (no download)")
    p.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    p.add_argument("--overwrite", action="store_true", help="replace what --out already holds")
    _add_config_options(p)

    p = sub.add_parser("train-teacher", help="train a zoo architecture with cross-entropy and save it")
    p.add_argument("--arch", required=True, help="architecture: lenet5, vgg11, vgg13, vgg16, vgg19, resnet18, resnet34")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier of every layer (default: 1.0)")
    p.add_argument(
        "--recipe",
        default="default",
        choices=list_recipes(),
        help="training schedule: default (3 epochs of Adam, lr 0.001 cosine-decayed, batch 128: for CPUs) or "
        "paper (the paper's schedule for --data, e.g. 150 epochs for CIFAR; see docs/REPRODUCE.md)",
    )
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the recipe's)")
    p.add_argument("--lr", type=float, default=None, help="initial learning rate (default: the recipe's)")
    p.add_argument("--batch-size", type=int, default=None, help="mini-batch size (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--out", required=True, help="directory to save the teacher to")
    p.add_argument("--overwrite", action="store_true", help="replace a model --out already holds")
    p.add_argument(
        "--device",
        default="auto",
        help="where to train: auto (cuda if available, else mps, else cpu), cpu, cuda, mps (default: auto)",
    )
    data_options(p)

    def teacher_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--teacher",
            help="the teacher: a saved n2n model directory, a zoo name (vgg13, ...) with "
            "--weights, or an import path 'package.module:build_function' (torchvision:NAME and "
            "timm:NAME when those are installed)",
        )
        p.add_argument("--weights", help="the teacher's trained weights: .safetensors or a PyTorch state dict file")
        p.add_argument(
            "--teacher-kwargs",
            metavar="JSON",
            help="keyword arguments for the teacher's builder, e.g. '{\"num_classes\": 10}'",
        )
        p.add_argument(
            "--trust-pickle",
            action="store_true",
            help="allow --weights files that need full unpickling (runs code from the file: only for files you trust)",
        )
        trust_code_option(p)

    def trust_code_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--trust-code",
            action="store_true",
            help="let a saved model or run whose spec.json names the author's own builder (module:function) import "
            "and run it; zoo architectures never need it (only for files you trust)",
        )

    def overwrite_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--overwrite", action="store_true", help="replace what --out already holds")

    p = sub.add_parser("compress", help="search for a smaller student of a trained teacher")
    teacher_options(p)
    p.add_argument("--out", help="run directory to write")
    overwrite_option(p)
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the interrupted search in RUN_DIR with its own teacher "
        "copy, data and settings (give no other option)",
    )
    data_options(p)
    _add_config_options(p)

    p = sub.add_parser("baseline", help="baselines with the same data and fine-tune: uniform shrink, or scratch")
    p.add_argument(
        "kind",
        choices=("uniform", "scratch"),
        help="uniform: one keep-fraction for every layer, sized "
        "to --target-params; scratch: the student of --run re-initialised and trained from scratch",
    )
    p.add_argument("--run", help="scratch: a finished `n2n compress` run directory")
    teacher_options(p)
    p.add_argument("--out", help="directory to write the baseline's student and report to")
    overwrite_option(p)
    data_options(p)
    _add_config_options(p)

    p = sub.add_parser(
        "report",
        help="write report.json, report.md and report.html of a run directory again (also mid-run), or compare runs",
    )
    p.add_argument(
        "run", nargs="+", help="run directory of `n2n compress` or `n2n baseline`; several: one comparison page"
    )
    p.add_argument("--out", help="several runs: directory for comparison.html (default: the first run directory)")
    trust_code_option(p)

    p = sub.add_parser("inspect", help="list the teacher's layers with what the search may change and why not")
    teacher_options(p)
    p.add_argument(
        "--input-shape", metavar="C,H,W", help="one input's shape, e.g. 3,32,32 (not needed for a saved n2n model)"
    )
    p.add_argument("--fix", action="append", metavar="PATTERN", help="glob of layer names to hold fixed; repeatable")
    p.add_argument("--json", action="store_true", help="print the analysis as JSON")

    p = sub.add_parser("evaluate", help="accuracy, parameters, FLOPs, file size and latency of a saved model")
    p.add_argument("model", help="saved model directory (a teacher, or RUN_DIR/student)")
    p.add_argument("--teacher", metavar="MODEL_DIR", help="a saved model to compare with, side by side (speed-ups)")
    p.add_argument(
        "--latency", action=argparse.BooleanOptionalAction, default=True, help="measure latency (default: on)"
    )
    trust_code_option(p)
    data_options(p)

    p = sub.add_parser("export", help="export a saved model to ONNX or TorchScript, checked against PyTorch")
    p.add_argument("model", help="saved model directory (a teacher, or RUN_DIR/student)")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"), help="onnx or torchscript")
    p.add_argument("--out", help="file to write (default: MODEL_DIR/model.onnx or MODEL_DIR/model.pt)")
    p.add_argument("--atol", type=float, default=1e-4, help="largest allowed absolute logit difference (1e-4)")
    p.add_argument("--data", default=None, help="data set whose test images the check runs on (default: random)")
    p.add_argument("--data-dir", default=None, help="directory holding the data set's files")
    normalize_option(p)
    p.add_argument(
        "--bake-normalization",
        action="store_true",
        help="put the model's normalization into the exported file, which then takes pixels in [0, 1]",
    )
    trust_code_option(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    enable_huge_pages()  # before the first large tensor (see its docs)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("train-teacher", "evaluate"):
        args.data = args.data or "digits"
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        command = shlex.join(["n2n", *(sys.argv[1:] if argv is None else argv)])
        if args.command == "demo":
            demo_cmd(args.out, _config_from(args), command=command, overwrite=args.overwrite)
        elif args.command == "train-teacher":
            train_teacher_cmd(
                args.arch,
                args.data,
                args.data_dir,
                args.out,
                width=args.width,
                epochs=args.epochs,
                lr=args.lr,
                batch_size=args.batch_size,
                seed=args.seed,
                max_train=args.max_train,
                recipe=args.recipe,
                data_options=_data_options(args),
                device=args.device,
                overwrite=args.overwrite,
                normalize=args.normalize or "auto",
            )
        elif args.command == "compress" and args.resume:
            given = [
                a
                for a in (
                    "teacher",
                    "weights",
                    "teacher_kwargs",
                    "out",
                    "data",
                    "data_dir",
                    "max_train",
                    "config",
                    "normalize",
                )
                + tuple(_data_options(args))
                if getattr(args, a) is not None
            ]
            given += [
                f.name
                for f in fields(_config_type())
                if getattr(args, f.name, None) is not None and f.name != "tensorboard"
            ]
            given += ["overwrite"] if args.overwrite else []
            if given:
                raise ConfigError(
                    "--resume takes the teacher, data and settings from the run directory; drop "
                    + ", ".join("--" + g.replace("_", "-") for g in given)
                )
            resume_cmd(args.resume, trust_code=args.trust_code, tensorboard=args.tensorboard)
        elif args.command == "compress":
            args.data = args.data or "digits"
            if args.teacher is None or args.out is None:
                raise ConfigError("n2n compress needs --teacher and --out (or --resume RUN_DIR)")
            compress_cmd(
                args.teacher,
                args.data,
                args.data_dir,
                args.out,
                _config_from(args),
                max_train=args.max_train,
                weights=args.weights,
                teacher_kwargs=args.teacher_kwargs,
                trust_pickle=args.trust_pickle,
                data_options=_data_options(args),
                command=command,
                trust_code=args.trust_code,
                overwrite=args.overwrite,
                normalize=args.normalize or "auto",
            )
        elif args.command == "baseline":
            baseline_cmd(args, command=command)
        elif args.command == "report":
            report = report_cmd(args.run, args.out, trust_code=args.trust_code)
            if isinstance(report, Path):
                console.print(f"{len(args.run)} runs compared in {report}")
            elif "status" in report:
                console.print(
                    f"search not finished: {report['evaluations']} candidates so far; "
                    f"see {Path(args.run[0]) / 'report.html'}"
                )
            else:
                _summary(report)
                console.print(f"report in {Path(args.run[0]) / 'report.html'}")
        elif args.command == "inspect":
            if args.teacher is None:
                raise ConfigError("n2n inspect needs --teacher")
            inspect_cmd(
                args.teacher,
                args.input_shape,
                args.weights,
                args.teacher_kwargs,
                args.fix,
                args.json,
                args.trust_pickle,
                trust_code=args.trust_code,
            )
        elif args.command == "evaluate":
            evaluate_cmd(
                args.model,
                args.data,
                args.data_dir,
                teacher=args.teacher,
                latency=args.latency,
                data_options=_data_options(args),
                trust_code=args.trust_code,
                normalize=args.normalize or "auto",
            )
        elif args.command == "export":
            export_cmd(
                args.model,
                args.format,
                args.out,
                args.data,
                args.data_dir,
                args.atol,
                trust_code=args.trust_code,
                normalize=args.normalize or "auto",
                bake=args.bake_normalization,
            )
    except Interrupted as err:
        console.print(f"[yellow]{escape(str(err))}[/]", soft_wrap=True, highlight=False)
        return 130
    except N2NError as err:
        if args.debug:
            raise
        console.print(f"[red]error:[/] {escape(str(err))}", soft_wrap=True, highlight=False)
        return 2
    except OSError as err:  # the disk filled up, a file vanished, permissions changed while n2n ran
        if args.debug:
            raise
        where = f"{err.filename}: " if err.filename else ""
        console.print(f"[red]error:[/] {escape(where + (err.strerror or str(err)))}", soft_wrap=True, highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
