"""Search checkpoints: everything needed to continue a search, in one safetensors file replaced atomically.

The tensors (policy weights, optimizer moments, random-generator states) are stored as safetensors; everything else
(stage, update counter, baseline, reward cache, best so far, how many events were logged) as JSON in the file's
metadata. Nothing is pickled. The file is written to a temporary name, fsynced and renamed over the previous one, so
a crash leaves either the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from n2n.errors import N2NError
from n2n.search.candidate import CandidateResult
from n2n.surgery import Edits

CHECKPOINT = "checkpoint.safetensors"
FORMAT = 1


def result_to_dict(result: CandidateResult) -> dict[str, Any]:
    return {**result._asdict(), "edits": result.edits.to_dict()}


def result_from_dict(data: dict[str, Any]) -> CandidateResult:
    return CandidateResult(**{**data, "edits": Edits.from_dict(data["edits"])})


@dataclass
class Checkpoint:
    """A search state as plain data: ``meta`` (JSON-able) and ``tensors`` (name -> tensor)."""

    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    def prefixed(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors stored under ``prefix.``, with the prefix stripped."""
        start = prefix + "."
        return {k[len(start) :]: v for k, v in self.tensors.items() if k.startswith(start)}


def optimizer_to_flat(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]], dict[str, list[str]]]:
    """An optimizer's state as flat tensors ``optim.<param>.<name>`` plus its JSON-able param groups."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{name}"] = value.detach().clone().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()} for g in state["param_groups"]]
    return tensors, groups, scalars


def optimizer_from_flat(optimizer: torch.optim.Optimizer, ckpt: Checkpoint) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in ckpt.prefixed("optim").items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for index, slots in ckpt.meta["optim_scalars"].items():
        state.setdefault(int(index), {}).update(slots)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()} for g in ckpt.meta["optim_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def write_checkpoint(path: Path, meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Write ``path`` atomically: temporary file, fsync, rename (and fsync the directory)."""
    tmp = path.with_name(path.name + ".tmp")
    save_file(
        {k: v.contiguous() for k, v in tensors.items()},
        str(tmp),
        metadata={"n2n": json.dumps({"format": FORMAT, **meta})},
    )
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint written by :func:`write_checkpoint`; a damaged or foreign file raises N2NError."""
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("n2n")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # noqa: BLE001 - OSError, or safetensors' own error for a damaged file
        raise N2NError(f"cannot read the checkpoint {path}: {err}") from err
    if raw is None:
        raise N2NError(f"{path} is not an n2n checkpoint (no 'n2n' metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as err:
        raise N2NError(f"{path} is damaged: its metadata is not JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise N2NError(f"{path} has checkpoint format {found!r}; this n2n reads format {FORMAT}")
    for key, kinds in META_TYPES.items():
        if key in meta and not (isinstance(meta[key], kinds) and not isinstance(meta[key], bool)):
            raise N2NError(f"{path} is damaged: {key} is {meta[key]!r}")
    missing = [k for k in META_TYPES if k not in meta and k not in ("others", "stage_ranked")]
    if missing:
        raise N2NError(f"{path} is damaged: it lacks {', '.join(missing)}")
    return Checkpoint(meta, tensors)


#: The fields of a checkpoint's metadata and their JSON types (``others``, ``stage_ranked``: absent in older runs).
META_TYPES: dict[str, type | tuple[type, ...]] = {
    "stage_index": int,
    "stage": str,
    "update": int,
    "baseline": dict,
    "stage_best": (str, type(None)),
    "stage_best_reward": (int, float),
    "best": (str, type(None)),
    "base": dict,
    "others": list,
    "stage_ranked": dict,
    "cache": list,
    "events": int,
    "elapsed": (int, float),
    "seconds": dict,
    "optim_groups": list,
    "optim_scalars": dict,
}
