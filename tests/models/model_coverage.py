"""Model coverage: torchvision and timm classifiers through ``analyze`` (``n2n inspect``), random edits and a reload.

Needs torchvision and timm, which do not import beside the CPU torch of ``.venv``: ``scripts/test-models`` makes
``.venv-models`` (torch 2.14.1, torchvision 0.29.1, timm) and runs ``tests/models``. This file is also a script:
``python tests/models/model_coverage.py [NAME ...]`` prints one JSON line per model (the README's coverage table).
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from n2n.errors import ModelError, SurgeryError
from n2n.models.io import ModelSpec, load_model, save_model
from n2n.models.source import build_imported
from n2n.surgery import Edits, analyze, apply_edits, count_params

#: model -> (input side, builder keyword arguments besides num_classes). Input sides are the smallest common ones a
#: network accepts (maxvit_t's 7x7 partitions need 224; alexnet's pools 64; inception_v3's stem 75).
TORCHVISION: dict[str, tuple[int, dict[str, Any]]] = {
    "resnet18": (32, {}),
    "resnet34": (32, {}),
    "resnet50": (32, {}),
    "resnext50_32x4d": (32, {}),
    "wide_resnet50_2": (32, {}),
    "mobilenet_v2": (32, {}),
    "mobilenet_v3_small": (32, {}),
    "mobilenet_v3_large": (32, {}),
    "efficientnet_b0": (32, {}),
    "efficientnet_v2_s": (32, {}),
    "regnet_x_400mf": (32, {}),
    "regnet_y_400mf": (32, {}),
    "densenet121": (32, {}),
    "googlenet": (32, {"aux_logits": True, "init_weights": True}),
    "inception_v3": (80, {"aux_logits": True, "init_weights": True}),
    "shufflenet_v2_x1_0": (32, {}),
    "squeezenet1_0": (32, {}),
    "alexnet": (64, {}),
    "vgg11_bn": (32, {}),
    "mnasnet0_5": (32, {}),
    "convnext_tiny": (32, {}),
    "vit_b_16": (32, {"image_size": 32}),
    "swin_t": (32, {}),
    "maxvit_t": (224, {}),
    "resnet101": (32, {}),
}
TIMM: dict[str, tuple[int, dict[str, Any]]] = {
    "resnet18": (32, {}),
    "efficientnet_b0": (32, {}),
    "mobilenetv3_small_100": (32, {}),
    "regnetx_002": (32, {}),
    "levit_128s": (64, {"img_size": 64}),
    "vit_tiny_patch16_224": (32, {"img_size": 32}),
    "deit_tiny_patch16_224": (32, {"img_size": 32}),
    "convnext_atto": (32, {}),
    "mobilevit_xs": (64, {}),
    "efficientvit_b0": (64, {}),
    "ghostnet_100": (32, {}),
    "rexnet_100": (32, {}),
    "mixnet_s": (32, {}),
    "mobilenetv2_100": (32, {}),
    "lcnet_050": (32, {}),
    "dla34": (32, {}),
    "resnet26d": (32, {}),
    "ese_vovnet19b_dw": (32, {}),
}
#: every model as its ``--teacher`` import path
MODELS: dict[str, tuple[int, dict[str, Any]]] = {
    **{f"torchvision:{name}": case for name, case in TORCHVISION.items()},
    **{f"timm:{name}": case for name, case in TIMM.items()},
}
EDIT_SETS = 5  # per model: 2 removal sets, 2 shrink sets, 1 removal then shrink (as compress's two stages)
TYPED = (SurgeryError, ModelError)


@dataclass
class Coverage:
    """What one model gave."""

    model: str
    inspected: bool = False
    refused: str = ""  # the one-line typed error that refused the whole model
    layers: int = 0
    removable: int = 0
    shrinkable: int = 0
    working: int = 0
    rejected: list[str] = field(default_factory=list)
    reloaded: int = 0  # working students saved and reloaded to the same eval outputs
    seconds: float = 0.0


def build(model: str) -> tuple[nn.Module, tuple[int, int, int], dict[str, Any]]:
    """The network with 10 classes and seeded random weights, its input shape and its ``arch`` record."""
    side, kwargs = MODELS[model]
    kwargs = {"num_classes": 10, **kwargs}
    torch.manual_seed(0)
    net = build_imported(model, kwargs).eval()
    return net, (3, side, side), {"source": "import", "target": model, "kwargs": kwargs}


def sample_edits(analysis: Any, rng: random.Random, kind: str) -> Edits:
    """Random edits from what ``analyze`` offers: removals (p=0.3 each) and/or keep-fractions (p=0.5 each)."""
    removed = (
        [layer.name for layer in analysis.layers if layer.removable and rng.random() < 0.3] if "remove" in kind else []
    )
    keep = (
        {
            layer.name: rng.choice([0.25, 0.5, 0.75])
            for layer in analysis.layers
            if layer.shrinkable and rng.random() < 0.5
        }
        if "shrink" in kind
        else {}
    )
    return Edits.make(removed, keep)


def check_student(student: nn.Module, x: torch.Tensor) -> None:
    """Forward and backward run in training mode; eval-mode outputs are finite (10 logits per sample)."""
    student.train()
    student(x).float().sum().backward()
    student.eval()
    with torch.no_grad():
        out = student(x)
    assert out.shape == (x.shape[0], 10), out.shape
    assert torch.isfinite(out).all()


def check_reload(
    student: nn.Module, edits: Edits, shape: tuple[int, ...], arch: dict[str, Any], x: torch.Tensor
) -> None:
    """A saved student reloads (spec = architecture + edits) to the same eval-mode outputs."""
    spec = ModelSpec(arch=arch, input_shape=shape, num_classes=10, edits=edits)
    with tempfile.TemporaryDirectory() as tmp:
        save_model(student, spec, tmp)
        reloaded, _ = load_model(tmp, trust_code=True)
    with torch.no_grad():
        want, got = student.eval()(x), reloaded.eval()(x)
    assert torch.allclose(want, got, atol=1e-5, rtol=1e-4), (want - got).abs().max()


def cover(model: str, edit_sets: int = EDIT_SETS, seed: int = 0) -> Coverage:
    """Inspect ``model``, apply ``edit_sets`` random edit sets, reload each working student. Untyped errors raise."""
    start = time.perf_counter()
    result = Coverage(model)
    try:
        net, shape, arch = build(model)
        analysis = analyze(net, shape)
    except TYPED as err:
        result.refused = str(err).splitlines()[0]
        result.seconds = time.perf_counter() - start
        return result
    result.inspected = True
    result.layers = len(analysis.layers)
    result.removable = sum(layer.removable for layer in analysis.layers)
    result.shrinkable = sum(layer.shrinkable for layer in analysis.layers)
    rng = random.Random(seed)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(seed))
    kinds = ["remove", "remove", "shrink", "shrink", "remove+shrink"]
    for i in range(edit_sets):
        kind = kinds[i % len(kinds)]
        try:
            edits = sample_edits(analysis, rng, kind)
            if kind == "remove+shrink":  # stage 2 decides on the layers of the stage-1 student
                stage1 = apply_edits(net, Edits.make(edits.removed), x, analysis.protected())
                edits = Edits.make(
                    edits.removed, dict(sample_edits(analyze(stage1, shape, check_removals=False), rng, "shrink").keep)
                )
            if not edits.removed and not edits.keep:
                continue
            student = apply_edits(net, edits, x, analysis.protected())
        except TYPED as err:
            result.rejected.append(str(err).splitlines()[0])
            continue
        assert count_params(student) < count_params(net)
        check_student(student, x)
        check_reload(student, edits, shape, arch, x)
        result.working += 1
        result.reloaded += 1
    result.seconds = time.perf_counter() - start
    return result


def table(path: str) -> str:
    """The README's coverage table (markdown) from the JSON lines the tests wrote, with totals."""
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    lines = ["| model | inspect | edit sets: working / typed rejections | reload equal |", "|---|---|---|---|"]
    for r in rows:
        if "untyped" in r:
            lines.append(f"| {r['model']} | FAILED: {r['untyped']} | - | - |")
            continue
        inspect = "yes" if r["inspected"] else f"refused: {r['refused']}"
        edits = f"{r['working']} / {len(r['rejected'])}" if r["inspected"] else "-"
        reload = f"{r['reloaded']} of {r['working']}" if r["inspected"] else "-"
        lines.append(f"| {r['model']} | {inspect} | {edits} | {reload} |")
    rows = [r for r in rows if "untyped" not in r]
    inspected = [r for r in rows if r["inspected"]]
    working, rejected = sum(r["working"] for r in rows), sum(len(r["rejected"]) for r in rows)
    lines.append(
        f"| **{len(rows)} models without failure** | **{len(inspected)} inspect** | **{working} / {rejected}** | "
        f"**{sum(r['reloaded'] for r in rows)} of {working}** |"
    )
    return "\n".join(lines)


def main(args: list[str]) -> None:
    if args[:1] == ["--table"]:
        print(table(args[1]))
        return
    torch.set_num_threads(1)
    for name in args or list(MODELS):
        try:
            record = asdict(cover(name))
        except Exception as err:  # noqa: BLE001 - the script reports what the tests would fail on
            traceback.print_exc()
            record = {"model": name, "untyped": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
