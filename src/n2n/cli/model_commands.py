"""Commands on a saved model: ``inspect`` (what the search may change), ``evaluate`` (accuracy and cost) and
``export`` (ONNX or TorchScript, checked against PyTorch)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.markup import escape

from n2n.cli.display import analysis_table, console, cost_table, print_table
from n2n.errors import ConfigError, N2NError
from n2n.files import check_writable_dir


def inspect_cmd(
    teacher: str | None,
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

    if teacher is None:
        raise ConfigError("n2n inspect needs --teacher")
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
    print_table(
        analysis_table(
            f"{teacher}: {analysis.params:,} parameters, {2 * analysis.macs:,} FLOPs, "
            f"input {tuple(spec.input_shape)}, {analysis.num_outputs} outputs",
            result["layers"],
        )
    )
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


def check_shape(spec: Any, bundle: Any, who: str, what: str = "model") -> None:
    if tuple(bundle.input_shape) != tuple(spec.input_shape):
        raise N2NError(
            f"{who} takes inputs of shape {tuple(spec.input_shape)} but {bundle.name} has {tuple(bundle.input_shape)}: "
            f"pass the data set the {what} was trained on"
        )


def pick_normalization(choice: Any, model: Any, spec: Any, bundle: Any, who: str, config: Any = None) -> Any:
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


def evaluate_cmd(
    model_dir: str,
    data: str | None = "digits",
    data_dir: str | None = None,
    seed: int | None = None,
    teacher: str | None = None,
    latency: bool = True,
    data_options: dict[str, Any] | None = None,
    trust_code: bool = False,
    normalize: str = "auto",
) -> dict[str, Any]:
    """Test accuracy, parameters, FLOPs, file size and measured latency of a saved model (beside ``teacher``'s).

    Each model gets the normalization its ``spec.json`` records, unless ``normalize`` says otherwise; no ``data``
    means digits. Validation accuracy is measured on the split the model records (the one its run held out; seed 0
    for a model that records none), or on the split of ``seed`` when one is given.
    """
    from n2n.data import load_data, parse_normalize
    from n2n.measure import measure_cost, speedups
    from n2n.models.io import load_model
    from n2n.teacher import trained_split_seed
    from n2n.train.evaluate import accuracy

    data = data or "digits"
    choice = parse_normalize(normalize)
    models = {
        name: (directory, *load_model(directory, trust_code=trust_code))
        for name, directory in (("teacher", teacher), ("model", model_dir))
        if directory is not None
    }
    if seed is None:
        seed = trained_split_seed(models["model"][2], data) or 0
    bundle = load_data(data, data_dir, seed=seed, options=data_options)
    rows: dict[str, dict[str, Any]] = {}
    for name, (directory, model, spec) in models.items():
        check_shape(spec, bundle, directory)
        picked = pick_normalization(choice, model, spec, bundle, directory)
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
    print_table(cost_table(f"{model_dir} on {data}", rows, result.get("speedup")))
    return result


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
        check_shape(spec, bundle, model_dir)
        norm = pick_normalization(choice, model, spec, bundle, model_dir).normalization
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
