"""Commands that train or search and write their results: ``train-teacher``, ``compress`` (new or resumed),
``baseline``, ``demo``, and ``report`` (a run's reports again, or several runs compared)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from n2n.cli.display import Display, console, print_summary, progress_display
from n2n.cli.model_commands import check_shape, pick_normalization
from n2n.errors import ConfigError, N2NError
from n2n.files import check_out_dir, check_writable_dir, write_json

DEMO_DEFAULTS = {"arch": "vgg11", "width": 0.5, "epochs": 15}


def train_teacher_cmd(
    arch: str,
    data: str | None,
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
    """Train a zoo teacher on ``data`` (None: digits) by ``recipe`` (explicit epochs, lr, batch size override it) and
    save it to ``out``.

    Its inputs are normalised by ``normalize`` (``auto``: the training split's statistics), which its spec records.
    """
    from n2n.data import load_data, parse_normalize
    from n2n.data.normalize import fixed_normalization
    from n2n.models.io import save_model
    from n2n.models.zoo import list_models
    from n2n.recipes import resolve_recipe
    from n2n.teacher import train_teacher
    from n2n.train.compute import Compute, resolve_device, resolve_precision

    data = data or "digits"
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
    with progress_display() as progress:
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
    data: str | None,
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
    """Compress ``teacher`` (saved model, zoo name or import path) on ``data`` (None: digits); writes ``out`` and
    returns ``report.json``.

    ``command`` (the command line that asked for it) is recorded in ``run.json`` for the report; ``normalize`` (see
    :func:`n2n.preprocess.choose_normalization`) in the teacher's and student's ``spec.json``.
    """
    check_writable_dir(out)
    from n2n.data import load_data, parse_normalize

    choice = parse_normalize(normalize)

    def split(seed: int) -> Any:
        return load_data(data or "digits", data_dir, seed=seed, max_train=max_train, options=data_options)

    bundle = split(config.seed)
    model, spec = _resolve_teacher(teacher, bundle, weights, teacher_kwargs, trust_pickle, trust_code)
    bundle = _split_as_teacher(bundle, spec, split)
    spec = _normalized_spec(choice, model, spec, bundle, config)
    source = _source(teacher, bundle, data_dir, max_train)
    if command is not None:
        source["command"] = command
    return run_compress(model, spec, source, out, config, resume=False, bundle=bundle, overwrite=overwrite)


def _check_seed(seed: int) -> None:
    if not 0 <= seed < 2**32:
        raise ConfigError(f"--seed must be an integer in [0, 2**32); got {seed}")


def _split_as_teacher(bundle: Any, spec: Any, split: Callable[[int], Any]) -> Any:
    """``bundle``, or the same data split again (``split(seed)``) as it was when n2n trained the teacher on it with
    another seed: no validation example may be one the teacher learnt from. ``--seed`` still seeds the search."""
    from n2n.teacher import trained_split_seed

    seed = trained_split_seed(spec, bundle.name)
    if seed is None or seed == bundle.split_seed:
        return bundle
    console.print(
        f"validation split: seed {seed}, the one the teacher held out when it was trained (--seed "
        f"{bundle.split_seed} seeds the rest)",
        highlight=False,
    )
    return split(seed)


def _source(teacher: str, bundle: Any, data_dir: str | None, max_train: int | None) -> dict[str, Any]:
    """What ``run.json`` records of a run's inputs: the teacher as given and how to load the same data again."""
    return {
        "teacher": teacher,
        "data": bundle.name,
        "data_dir": None if data_dir is None else str(Path(data_dir).resolve()),
        "max_train": max_train,
        "data_options": bundle.options,
        "split_seed": bundle.split_seed,
    }


def _resolve_teacher(
    teacher: str, bundle: Any, weights: str | None, teacher_kwargs: str | None, trust_pickle: bool, trust_code: bool
) -> tuple[Any, Any]:
    """``--teacher`` as given, built for ``bundle``'s inputs and classes."""
    from n2n.models.source import parse_kwargs, resolve_teacher

    return resolve_teacher(
        teacher,
        weights=weights,
        kwargs=parse_kwargs(teacher_kwargs),
        input_shape=tuple(bundle.input_shape),
        num_classes=bundle.num_classes,
        trust_pickle=trust_pickle,
        trust_code=trust_code,
    )


def _normalized_spec(choice: Any, model: Any, spec: Any, bundle: Any, config: Any) -> Any:
    """The teacher's spec with the normalization it gets on ``bundle``, which the student's spec then records."""
    check_shape(spec, bundle, "the teacher", "teacher")
    picked = pick_normalization(choice, model, spec, bundle, "the teacher", config)
    return replace(spec, normalization=picked.normalization.to_spec())


def baseline_cmd(
    kind: str,
    out: str,
    config: Any = None,
    run: str | None = None,
    teacher: str | None = None,
    weights: str | None = None,
    teacher_kwargs: str | None = None,
    trust_pickle: bool = False,
    trust_code: bool = False,
    data: str | None = "digits",
    data_dir: str | None = None,
    max_train: int | None = None,
    data_options: dict[str, Any] | None = None,
    command: str | None = None,
    overwrite: bool = False,
    normalize: str = "auto",
) -> dict[str, Any]:
    """`n2n baseline uniform|scratch`: a student made without the search, fine-tuned like the search's.

    ``uniform`` shrinks ``teacher`` on ``data`` (default digits) to ``config.target_params``; ``scratch`` takes the
    student, teacher, data and settings of the finished run ``run`` (``config`` unused). Like a search, it records its
    teacher, data and ``command`` in ``OUT/run.json`` (the report shows the command), and the normalization
    ``normalize`` chooses in the student's ``spec.json``.
    """
    from n2n.baselines import run_baseline, scratch_config, uniform_edits
    from n2n.data import load_data, load_recorded, parse_normalize, read_source
    from n2n.models.io import load_model
    from n2n.surgery import analyze

    check_out_dir(out, "report.json", "a finished run", overwrite)
    choice = parse_normalize(normalize)
    if kind == "uniform":
        if teacher is None or config is None or config.target_params is None:
            raise ConfigError("n2n baseline uniform needs --teacher and --target-params N (a positive integer)")

        def split(seed: int) -> Any:
            return load_data(data or "digits", data_dir, seed=seed, max_train=max_train, options=data_options)

        bundle = split(config.seed)
        model, spec = _resolve_teacher(teacher, bundle, weights, teacher_kwargs, trust_pickle, trust_code)
        bundle = _split_as_teacher(bundle, spec, split)
        edits = uniform_edits(model, analyze(model.eval(), bundle.input_shape, config.fix), config.target_params)
        source = _source(teacher, bundle, data_dir, max_train)
    else:
        if run is None:
            raise ConfigError("n2n baseline scratch needs --run RUN_DIR (a finished `n2n compress` run)")
        run_dir = Path(run)
        config, edits = scratch_config(run_dir)
        source = read_source(run_dir / "run.json")
        bundle = load_recorded(source, config.seed)
        model, spec = load_model(run_dir / "teacher", trust_code=trust_code)
        source = {k: v for k, v in source.items() if k != "command"}
    spec = _normalized_spec(choice, model, spec, bundle, config)
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json(Path(out) / "run.json", {**source, "baseline": kind, **({"command": command} if command else {})})
    with progress_display() as progress:
        report = run_baseline(kind, model, spec, bundle, config, out, edits, listener=Display(progress))
    print_summary(report)
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
    from n2n.settings_file import read_config

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
    return run_compress(model, spec, source, run_dir, config, resume=True)  # compress() validates it


def run_compress(
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
        check_shape(spec, bundle, "the teacher", "teacher")
    with progress_display() as progress:
        result = compress(
            model,
            spec,
            bundle,
            config,
            out,
            listener=Display(progress),
            resume=resume,
            overwrite=overwrite,
            record=None if resume else source,
        )
    print_summary(result.report)
    console.print(f"student saved to {Path(out) / 'student'}; report in {Path(out) / 'report.html'}")
    return result.report


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
    """One run: write its report.json, report.md and report.html again and show its summary (returns the report).
    Several runs: one comparison page ``comparison.html`` in ``out`` (default: the first run directory; returns its
    path)."""
    from n2n.report import rebuild_reports
    from n2n.reporting.html import write_comparison

    if len(runs) > 1:
        check_writable_dir(out or runs[0])
        page = write_comparison(runs, out or runs[0])
        console.print(f"{len(runs)} runs compared in {page}")
        return page
    if out is not None:
        raise ConfigError("--out is for comparing several runs; `n2n report RUN` writes its report into RUN")
    report = rebuild_reports(runs[0], trust_code=trust_code)
    if "status" in report:
        console.print(
            f"search not finished: {report['evaluations']} candidates so far; see {Path(runs[0]) / 'report.html'}"
        )
    else:
        print_summary(report)
        console.print(f"report in {Path(runs[0]) / 'report.html'}")
    return report
