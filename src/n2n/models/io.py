"""Saved models: a directory holding ``spec.json`` (how to build the network) and ``model.safetensors`` (weights).

Teachers and students share the format. A student's spec is its teacher's spec plus the edits the search made, so
loading rebuilds the teacher's architecture, replays the edits (which fixes every shape) and loads the weights. No
pickle is involved anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from n2n.errors import ModelError
from n2n.models.zoo import create_model
from n2n.surgery import Edits, apply_edits

FORMAT = "n2n-model"
VERSION = 1
SPEC_FILE = "spec.json"
WEIGHTS_FILE = "model.safetensors"


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
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        if data.get("format") != FORMAT:
            raise ModelError(f"not an n2n model spec (format is {data.get('format')!r}, expected {FORMAT!r})")
        if int(data.get("version", 0)) > VERSION:
            raise ModelError(f"model spec version {data['version']} is newer than this n2n ({VERSION}); upgrade n2n")
        return cls(
            arch=dict(data["arch"]),
            input_shape=tuple(int(d) for d in data["input_shape"]),
            num_classes=int(data["num_classes"]),
            edits=Edits.from_dict(data.get("edits", {})),
            protected=tuple(data.get("protected", ())),
            normalization=dict(data.get("normalization", {})),
            meta=dict(data.get("meta", {})),
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


def build_architecture(arch: Mapping[str, Any]) -> nn.Module:
    """Build the (randomly initialised) teacher architecture an ``arch`` record describes."""
    source = arch.get("source")
    if source == "zoo":
        return create_model(arch["name"], **arch.get("kwargs", {}))
    if source == "import":  # the user's own builder, e.g. "mypackage.models:build_net" (must be importable)
        from n2n.models.source import build_imported

        return build_imported(arch["target"], arch.get("kwargs", {}))
    raise ModelError(f"unknown architecture source {source!r} in spec (known: 'zoo', 'import')")


def build_model(spec: ModelSpec) -> nn.Module:
    """Rebuild the network a spec describes, with fresh weights: the teacher architecture, then the edits."""
    model = build_architecture(spec.arch)
    if spec.edits.removed or spec.edits.keep:
        example = torch.zeros(2, *spec.input_shape)
        model = apply_edits(model, spec.edits, example, spec.protected)
    return model


def save_model(model: nn.Module, spec: ModelSpec, directory: str | Path) -> Path:
    """Write ``spec.json`` and ``model.safetensors`` into ``directory`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": FORMAT})
    (directory / SPEC_FILE).write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    return directory


def load_model(directory: str | Path) -> tuple[nn.Module, ModelSpec]:
    """Load a saved model directory; returns the network (in eval mode) and its spec.

    Raises:
        ModelError: the directory, spec or weights are missing or do not match.
    """
    directory = Path(directory)
    spec_path, weights_path = directory / SPEC_FILE, directory / WEIGHTS_FILE
    if not spec_path.is_file() or not weights_path.is_file():
        raise ModelError(
            f"{directory} is not a saved n2n model: expected {SPEC_FILE} and {WEIGHTS_FILE} in it "
            "(made by `n2n train-teacher` or `n2n compress`)"
        )
    try:
        spec = ModelSpec.from_dict(json.loads(spec_path.read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ModelError(f"{spec_path} is not a valid model spec: {err}") from None
    model = build_model(spec)
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as err:
        raise ModelError(f"{weights_path} is not a readable safetensors file: {err}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ModelError(f"weights in {weights_path} do not fit the spec: {str(err).splitlines()[0]}") from None
    return model.eval(), spec
