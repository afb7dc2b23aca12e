"""Saved models: a directory holding ``spec.json`` (how to build the network) and ``model.safetensors`` (weights).

Teachers and students share the format. A student's spec is its teacher's spec plus the edits the search made, so
loading rebuilds the teacher's architecture, replays the edits (which fixes every shape) and loads the weights. No
pickle is involved anywhere, and a spec that names code to import (``"source": "import"``) is refused unless the
caller passes ``trust_code=True``: a saved model is data, and loading data must not run what it names.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from n2n.errors import ModelError, N2NError
from n2n.files import atomic_write, write_json
from n2n.models.zoo import create_model, list_models
from n2n.surgery import Edits, apply_edits

FORMAT = "n2n-model"
VERSION = 1
SPEC_FILE = "spec.json"
WEIGHTS_FILE = "model.safetensors"
MAX_INPUT_ELEMENTS = 2**24  # one sample of at most 16M values (a 4096 x 4096 RGB image is 50M: not a CPU search)
MAX_CLASSES = 10**6


class UntrustedCodeError(ModelError):
    """A saved model or run names code to import, and the caller did not say it trusts it."""


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a network, as JSON-friendly data.

    Attributes:
        arch: how to build the teacher architecture: ``{"source": "zoo", "name": ..., "kwargs": {...}}`` or
            ``{"source": "import", "target": "package.module:builder", "kwargs": {...}}``.
        input_shape: one sample's shape ``(C, H, W)``.
        num_classes: size of the output.
        edits: the student's edits relative to ``arch`` (empty for a teacher).
        protected: layers whose outputs never change (classifier heads); needed to replay shrink edits.
        normalization: ``{"mean": [...], "std": [...]}`` the inputs were normalised with, so users can feed raw data.
        meta: free-form provenance (data set, metrics, the command that made it).
    """

    arch: dict[str, Any]
    input_shape: tuple[int, ...]
    num_classes: int
    edits: Edits = field(default_factory=Edits)
    protected: tuple[str, ...] = ()
    normalization: dict[str, list[float]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "arch": self.arch,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "edits": self.edits.to_dict(),
            "protected": list(self.protected),
            "normalization": self.normalization,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: Any) -> ModelSpec:
        """Check a parsed ``spec.json`` field by field; raises ModelError naming the first field that is wrong."""
        if not isinstance(data, Mapping):
            raise ModelError(f"is a JSON {type(data).__name__}, not an object with 'format', 'arch', ...")
        if data.get("format") != FORMAT:
            raise ModelError(f"is not an n2n model spec (format is {data.get('format')!r}, expected {FORMAT!r})")
        version = data.get("version", 0)
        if not _is_int(version) or version < 0:
            raise ModelError(f"has version {version!r}, not a non-negative integer")
        if version > VERSION:
            raise ModelError(f"has spec version {version}, newer than this n2n's ({VERSION}): upgrade n2n")
        input_shape = data.get("input_shape")
        if (
            not isinstance(input_shape, list)
            or not 1 <= len(input_shape) <= 4
            or not all(_is_int(d) and d >= 1 for d in input_shape)
        ):
            raise ModelError(f"input_shape must be a list of 1 to 4 positive integers; got {input_shape!r}")
        if math.prod(input_shape) > MAX_INPUT_ELEMENTS:
            raise ModelError(f"input_shape {input_shape} has more than {MAX_INPUT_ELEMENTS:,} values per sample")
        num_classes = data.get("num_classes")
        if not _is_int(num_classes) or not 1 <= num_classes <= MAX_CLASSES:
            raise ModelError(f"num_classes must be an integer in [1, {MAX_CLASSES:,}]; got {num_classes!r}")
        protected = data.get("protected", [])
        if not isinstance(protected, list) or not all(isinstance(p, str) for p in protected):
            raise ModelError(f"protected must be a list of layer names; got {protected!r}")
        meta = data.get("meta", {})
        if not isinstance(meta, Mapping):
            raise ModelError(f"meta must be an object; got {type(meta).__name__}")
        return cls(
            arch=check_arch(data.get("arch")),
            input_shape=tuple(input_shape),
            num_classes=num_classes,
            edits=check_edits(data.get("edits", {})),
            protected=tuple(protected),
            normalization=check_normalization(data.get("normalization", {}), input_shape[0]),
            meta=dict(meta),
        )

    def with_edits(self, edits: Edits, **meta: Any) -> ModelSpec:
        """The spec of a student of this network (the edits are relative to the same architecture)."""
        return ModelSpec(
            self.arch,
            self.input_shape,
            self.num_classes,
            self.edits.then(edits),
            self.protected,
            self.normalization,
            {**self.meta, **meta},
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_arch(arch: Any) -> dict[str, Any]:
    """An ``arch`` record as read from JSON, checked: a known source, the fields it needs, keyword arguments as an
    object with string keys."""
    if not isinstance(arch, Mapping):
        raise ModelError(f"arch must be an object such as {{'source': 'zoo', 'name': 'vgg11', ...}}; got {arch!r}")
    source = arch.get("source")
    if source not in ("zoo", "import"):
        raise ModelError(f"arch.source must be 'zoo' or 'import'; got {source!r}")
    field_name = "name" if source == "zoo" else "target"
    value = arch.get(field_name)
    if not isinstance(value, str) or not value:
        raise ModelError(f"arch.{field_name} must be a non-empty string; got {value!r}")
    if source == "zoo" and value not in list_models():
        raise ModelError(f"arch.name {value!r} is not a zoo architecture ({', '.join(list_models())})")
    kwargs = arch.get("kwargs", {})
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise ModelError(f"arch.kwargs must be an object of keyword arguments; got {kwargs!r}")
    return {**arch, "kwargs": dict(kwargs)}


def check_edits(edits: Any) -> Edits:
    """An ``edits`` record as read from JSON: ``{"removed": [names], "keep": [[name, fraction in (0, 1]], ...]}``."""
    if not isinstance(edits, Mapping):
        raise ModelError(f"edits must be an object with 'removed' and 'keep'; got {edits!r}")
    removed, keep = edits.get("removed", []), edits.get("keep", [])
    if not isinstance(removed, list) or not all(isinstance(n, str) for n in removed):
        raise ModelError(f"edits.removed must be a list of layer names; got {removed!r}")
    pairs = isinstance(keep, list) and all(
        isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], int | float) for p in keep
    )
    if not pairs or not all(0 < p[1] <= 1 for p in keep):
        raise ModelError(f"edits.keep must be a list of [layer name, fraction in (0, 1]] pairs; got {keep!r}")
    return Edits.from_dict({"removed": removed, "keep": keep})


def check_normalization(norm: Any, channels: int) -> dict[str, list[float]]:
    """``{}`` or ``{"mean": [...], "std": [...]}`` with one finite value per input channel, std > 0."""
    if not isinstance(norm, Mapping):
        raise ModelError(f"normalization must be an object with 'mean' and 'std'; got {norm!r}")
    if not norm:
        return {}
    checked = {}
    for key in ("mean", "std"):
        values = norm.get(key)
        if (
            not isinstance(values, list)
            or len(values) != channels
            or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values)
        ):
            raise ModelError(f"normalization.{key} must be {channels} finite numbers (one per channel); got {values!r}")
        checked[key] = [float(v) for v in values]
    if not all(v > 0 for v in checked["std"]):
        raise ModelError(f"normalization.std must be positive; got {checked['std']}")
    return checked


def build_architecture(arch: Mapping[str, Any], trust_code: bool = False, where: str = "the spec") -> nn.Module:
    """Build the (randomly initialised) teacher architecture an ``arch`` record describes.

    A zoo architecture is built from its name. An ``import`` record (the user's own builder, e.g.
    ``"mypackage.models:build_net"``) imports and calls code, so it is refused unless ``trust_code``.

    Raises:
        UntrustedCodeError: the record names code and ``trust_code`` is False.
    """
    arch = check_arch(arch)
    if arch["source"] == "zoo":
        return create_model(arch["name"], **arch["kwargs"])
    if not trust_code:
        raise UntrustedCodeError(
            f"{where} names code to import and run ({arch['target']!r}); pass --trust-code "
            "(trust_code=True in Python) only if you trust whoever made it"
        )
    from n2n.models.source import build_imported

    return build_imported(arch["target"], arch["kwargs"])


def build_model(spec: ModelSpec, trust_code: bool = False, where: str = "the spec") -> nn.Module:
    """Rebuild the network a spec describes, with fresh weights: the teacher architecture, then the edits."""
    model = build_architecture(spec.arch, trust_code, where)
    example = torch.zeros(2, *spec.input_shape)
    try:
        with torch.no_grad():
            out = model.eval()(example)
    except Exception as err:  # noqa: BLE001 - any failure means the recorded shape does not fit the architecture
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ModelError(
            f"{where}: the architecture does not run on input_shape {list(spec.input_shape)}: {first}"
        ) from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, spec.num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"{where}: the architecture returns {got}, not (batch, {spec.num_classes}) logits")
    if spec.edits.removed or spec.edits.keep:
        try:
            model = apply_edits(model, spec.edits, example, spec.protected)
        except N2NError:
            raise
        except Exception as err:  # noqa: BLE001 - edits that name the wrong layers fail in many ways inside surgery
            first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
            raise ModelError(
                f"{where}: its edits do not apply to its architecture ({type(err).__name__}: {first})"
            ) from None
    return model


def save_model(model: nn.Module, spec: ModelSpec, directory: str | Path) -> Path:
    """Write ``spec.json`` and ``model.safetensors`` into ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_write(directory / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    write_json(directory / SPEC_FILE, spec.to_dict())
    return directory


def read_spec(directory: str | Path) -> ModelSpec:
    """The checked spec of a saved model directory (nothing is built or imported)."""
    spec_path = Path(directory) / SPEC_FILE
    try:
        data = json.loads(spec_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"{spec_path} is not a readable JSON model spec: {err}") from None
    try:
        return ModelSpec.from_dict(data)
    except ModelError as err:
        raise ModelError(f"{spec_path} {err}") from None


def load_model(directory: str | Path, trust_code: bool = False) -> tuple[nn.Module, ModelSpec]:
    """Load a saved model directory; returns the network (in eval mode) and its spec.

    Args:
        directory: made by ``save_model`` (``n2n train-teacher``, ``n2n compress``).
        trust_code: allow a spec whose architecture is the user's own builder (``"source": "import"``) to import and
            call it. Zoo architectures need no trust.

    Raises:
        UntrustedCodeError: the spec names code to run and ``trust_code`` is False.
        ModelError: the directory, spec or weights are missing or do not match.
    """
    directory = Path(directory)
    spec_path, weights_path = directory / SPEC_FILE, directory / WEIGHTS_FILE
    if not spec_path.is_file() or not weights_path.is_file():
        raise ModelError(
            f"{directory} is not a saved n2n model: expected {SPEC_FILE} and {WEIGHTS_FILE} in it "
            "(made by `n2n train-teacher` or `n2n compress`)"
        )
    spec = read_spec(directory)
    model = build_model(spec, trust_code, where=str(spec_path))
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as err:
        raise ModelError(f"{weights_path} is not a readable safetensors file: {err}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ModelError(f"weights in {weights_path} do not fit the spec: {str(err).splitlines()[0]}") from None
    return model.eval(), spec
