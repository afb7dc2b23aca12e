"""Teachers from wherever users keep them: a saved n2n model, a zoo name, or an import path ``module:callable``.

Weights come as safetensors or as a plain PyTorch state dict, which is read with ``torch.load(weights_only=True)``:
nothing a user hands over is unpickled unless they pass ``trust_pickle=True`` (``--trust-pickle``).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from n2n.errors import ModelError
from n2n.models.io import SPEC_FILE, ModelSpec, build_architecture, load_model
from n2n.models.zoo import list_models

OPTIONAL_HUBS = {"torchvision": "torchvision.models", "timm": "timm"}


def import_callable(target: str) -> Any:
    """``package.module:attr.path`` -> the object (a class or function that builds an ``nn.Module``)."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ModelError(f"--teacher {target!r} is not an import path: write it as 'package.module:build_function'")
    hub = OPTIONAL_HUBS.get(module_name)
    try:
        module = importlib.import_module(hub or module_name)
    except ImportError as err:
        if hub:
            raise ModelError(
                f"--teacher {target!r} needs {module_name}, which is not installed (pip install {module_name})"
            ) from None
        raise ModelError(
            f"cannot import {module_name!r} for --teacher {target!r}: {err} (is it on PYTHONPATH?)"
        ) from None
    if hub == "timm":
        return lambda **kwargs: module.create_model(attr, **kwargs)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"{module_name!r} has no attribute {attr!r} (from --teacher {target!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ModelError(
            f"--teacher {target!r} names {type(obj).__name__}, not a class or function that builds a model"
        )
    return obj


def build_imported(target: str, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Call the builder an import path names, checking that it returns an ``nn.Module``."""
    builder = import_callable(target)
    try:
        model = builder(**dict(kwargs or {}))
    except TypeError as err:
        raise ModelError(f"calling {target} with {dict(kwargs or {})} failed: {err} (set --teacher-kwargs)") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"{target} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_weights(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor] | nn.Module:
    """A state dict from ``.safetensors`` or a PyTorch file, without executing code unless ``trust_pickle``.

    PyTorch files are read with ``weights_only=True``, which only rebuilds tensors and plain containers; a file that
    needs more (a pickled module, custom classes) is refused with a message naming ``--trust-pickle``. Checkpoints
    that nest the state dict under ``state_dict``/``model``/``model_state_dict`` are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"--weights {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error type for damaged files
            raise ModelError(f"--weights {path} is not a readable safetensors file: {err}") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as err:  # noqa: BLE001 - the unpickler raises many types; all mean "not a plain state dict"
        if trust_pickle:
            raise ModelError(f"--weights {path} could not be loaded: {err}") from None
        raise ModelError(
            f"--weights {path} is not a plain state dict (loading it would run arbitrary code from the file); "
            "save it with torch.save(model.state_dict()) or safetensors, or pass --trust-pickle if you trust "
            "its author"
        ) from None
    if isinstance(obj, nn.Module):
        return obj
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"--weights {path} holds {type(obj).__name__}, not a state dict (name -> tensor)")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def resolve_teacher(
    teacher: str,
    *,
    weights: str | Path | None = None,
    kwargs: Mapping[str, Any] | None = None,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    trust_pickle: bool = False,
    require_weights: bool = True,
    trust_code: bool = False,
) -> tuple[nn.Module, ModelSpec]:
    """The teacher named by ``--teacher`` (and ``--weights``), with the spec that rebuilds it.

    ``teacher`` is a saved n2n model directory, a zoo name (``vgg13``; built for ``input_shape`` and
    ``num_classes``), or an import path ``module:callable`` (``torchvision:resnet18`` when torchvision is installed).
    An import path given here is the caller's own choice and runs; a saved directory whose spec names code runs it
    only with ``trust_code``.
    """
    if Path(teacher, SPEC_FILE).is_file():
        if weights is not None:
            raise ModelError(f"{teacher} is a saved n2n model with its own weights: drop --weights")
        return load_model(teacher, trust_code=trust_code)
    if ":" in teacher:
        arch = {"source": "import", "target": teacher, "kwargs": dict(kwargs or {})}
    elif teacher in list_models():
        if input_shape is None or num_classes is None:
            raise ModelError(f"building the zoo model {teacher!r} needs the input shape and the number of classes")
        arch = {
            "source": "zoo",
            "name": teacher,
            "kwargs": {
                "in_channels": input_shape[0],
                "num_classes": num_classes,
                "input_size": list(input_shape[1:]),
                **(kwargs or {}),
            },
        }
    elif Path(teacher).exists():
        raise ModelError(
            f"{teacher} is not a saved n2n model: expected {SPEC_FILE} in it (made by `n2n train-teacher`)"
        )
    else:
        raise ModelError(
            f"--teacher {teacher!r} is neither a saved n2n model directory, a zoo architecture "
            f"({', '.join(list_models())}) nor an import path like 'mypackage.models:build_net'"
        )
    model = build_architecture(arch, trust_code=True, where=f"--teacher {teacher}")  # the caller named it
    if weights is None:
        if require_weights:
            raise ModelError(
                f"--teacher {teacher} builds an untrained network: pass its trained weights with --weights"
            )
    else:
        loaded = load_weights(weights, trust_pickle)
        state = loaded.state_dict() if isinstance(loaded, nn.Module) else loaded
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            raise ModelError(f"--weights {weights} do not fit {teacher}: {' '.join(lines[1:3])[:300]}") from None
    if input_shape is None:
        raise ModelError(f"the input shape of {teacher} is unknown: pass --input-shape C,H,W (e.g. 3,32,32)")
    model.eval()
    with torch.no_grad():
        try:
            out = model(torch.zeros(2, *input_shape))
        except Exception as err:  # noqa: BLE001 - any failure here means the shape does not fit the model
            raise ModelError(f"{teacher} does not run on inputs of shape {tuple(input_shape)}: {err}") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ModelError(f"{teacher} must return logits of shape (batch, classes); it returned {_describe(out)}")
    spec = ModelSpec(
        arch=arch,
        input_shape=tuple(input_shape),
        num_classes=int(out.shape[1]),
        meta={"teacher": teacher, "weights": None if weights is None else str(weights)},
    )
    return model, spec


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def parse_kwargs(text: str | None) -> dict[str, Any]:
    """``--teacher-kwargs '{"width": 0.5}'`` -> dict."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ModelError(f"--teacher-kwargs must be a JSON object such as '{{\"num_classes\": 10}}': {err}") from None
    if not isinstance(value, dict):
        raise ModelError(f"--teacher-kwargs must be a JSON object, got {type(value).__name__}")
    return value
