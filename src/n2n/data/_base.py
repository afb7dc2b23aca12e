"""Data sets as in-memory tensors: a registry by name, a seeded stratified validation hold-out, normalisation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from n2n.data.augment import list_policies
from n2n.data.normalize import Normalization, renormalize
from n2n.errors import DataError


class RawData(NamedTuple):
    """A data set as read from disk: images (N, H, W) or (N, C, H, W) and integer labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    scale: float  # divide pixel values by this to reach [0, 1]


@dataclass(frozen=True)
class Split:
    """Inputs ``x`` (N, C, H, W) float32, normalised as their bundle says; labels ``y`` (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class DataBundle:
    """Train / validation / test splits of one data set. Rewards use ``val``; ``test`` is for final figures only.

    ``x = (pixels - mean) / std`` per channel, pixels in [0, 1]: the training split's statistics ``stats`` as
    ``load_data`` returns it; :meth:`normalized` gives the bundle a model trained on other inputs needs.
    """

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    stats: Normalization  # the training split's per-channel mean and std of pixels in [0, 1] (--normalize data)
    augment: str = "none"  # training augmentation policy (n2n.data.augment); validation and test are never augmented
    options: dict[str, Any] = field(default_factory=dict)  # the resolved options: load_data(..., options=) again
    split_seed: int = 0  # the seed that drew the validation hold-out (load_data(..., seed=))

    @property
    def normalization(self) -> Normalization:
        """What the splits' inputs are normalised with."""
        return Normalization(self.mean, self.std)

    def normalized(self, norm: Normalization) -> DataBundle:
        """The same splits normalised with ``norm`` instead; this bundle itself when it already is (same bytes)."""
        if len(norm.mean) != self.input_shape[0]:
            raise DataError(
                f"{self.name} has {self.input_shape[0]} channel(s) but the normalization has {len(norm.mean)} values"
            )
        if norm == self.normalization:
            return self

        def split(s: Split) -> Split:
            return Split(renormalize(s.x, self.normalization, norm), s.y)

        return replace(
            self, train=split(self.train), val=split(self.val), test=split(self.test), mean=norm.mean, std=norm.std
        )


Reader = Callable[..., RawData]


@dataclass(frozen=True)
class _Entry:
    reader: Reader
    augment: str
    options: dict[str, Any]  # option name -> default value (its type is the option's type)


_REGISTRY: dict[str, _Entry] = {}


def register_dataset(
    name: str, *, augment: str = "none", options: Mapping[str, Any] | None = None
) -> Callable[[Reader], Reader]:
    """Register a reader ``fn(data_dir, **options) -> RawData`` under ``name``.

    Args:
        name: the data set's name (``--data``).
        augment: its training augmentation policy, one of :func:`n2n.data.augment.list_policies`.
        options: the reader's keyword options with their defaults (e.g. ``{"image_size": 64}``).
    """
    if augment not in list_policies():
        raise ValueError(f"unknown augmentation policy {augment!r}; known: {', '.join(list_policies())}")

    def wrap(fn: Reader) -> Reader:
        _REGISTRY[name] = _Entry(fn, augment, dict(options or {}))
        return fn

    return wrap


def list_datasets() -> list[str]:
    return sorted(_REGISTRY)


def dataset_options(name: str) -> dict[str, Any]:
    """The reader options of data set ``name`` with their defaults (``augment`` is accepted by every data set)."""
    if name not in _REGISTRY:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(list_datasets())}")
    return {**_REGISTRY[name].options, "augment": _REGISTRY[name].augment}


def _resolve_options(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The defaults of ``name``'s options updated with ``given``; unknown names and wrong types are refused."""
    allowed = dataset_options(name)
    resolved = dict(allowed)
    for key, value in given.items():
        flag = "--" + key.replace("_", "-")
        if key not in allowed:
            takes = ", ".join("--" + k.replace("_", "-") for k in sorted(allowed))
            raise DataError(f"{name} does not take {flag} (it takes {takes})")
        kind = type(allowed[key])
        if isinstance(value, bool) or not isinstance(value, kind):
            raise DataError(f"{flag} must be {kind.__name__}; got {value!r}")
        resolved[key] = value
    if resolved["augment"] not in list_policies():
        raise DataError(f"--augment must be one of {', '.join(list_policies())}; got {resolved['augment']!r}")
    return resolved


def _as_nchw(x: np.ndarray) -> np.ndarray:
    return x[:, None] if x.ndim == 3 else x


def _validate(raw: RawData, name: str) -> None:
    for split, x, y in (("train", raw.x_train, raw.y_train), ("test", raw.x_test, raw.y_test)):
        if len(x) == 0:
            raise DataError(f"{name}: the {split} split is empty")
        if len(x) != len(y):
            raise DataError(f"{name}: {split} has {len(x)} images but {len(y)} labels")
        if x.ndim not in (3, 4):
            raise DataError(f"{name}: {split} images must be (N, H, W) or (N, C, H, W); got shape {x.shape}")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{name}: {split} labels must be integers of shape (N,); got {y.dtype} {y.shape}")
        if y.min() < 0 or y.max() >= raw.num_classes:
            raise DataError(f"{name}: {split} labels must be in [0, {raw.num_classes}); found {y.min()}..{y.max()}")
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            raise DataError(f"{name}: {split} images contain NaN or infinite values")
    if raw.num_classes < 2:
        raise DataError(f"{name}: the training split has a single class; a classifier needs two or more")
    if _as_nchw(raw.x_train).shape[1:] != _as_nchw(raw.x_test).shape[1:]:
        raise DataError(f"{name}: train images {raw.x_train.shape[1:]} and test images {raw.x_test.shape[1:]} differ")


def stratified_split(y: np.ndarray, size: float | int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of indices; plain seeded split when a class is too small to stratify."""
    idx = np.arange(len(y))
    try:
        return train_test_split(idx, test_size=size, random_state=seed, stratify=y)
    except ValueError:
        return train_test_split(idx, test_size=size, random_state=seed)


def load_data(
    name: str,
    data_dir: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    max_train: int | None = None,
    options: Mapping[str, Any] | None = None,
) -> DataBundle:
    """Load data set ``name`` and split it.

    Args:
        name: a registered data set (see :func:`list_datasets`).
        data_dir: directory holding its files (unused for embedded data sets).
        val_fraction: share of the training set held out, stratified, for validation.
        seed: seed of the hold-out (and of ``max_train`` subsampling).
        max_train: keep at most this many training examples (stratified), for quick runs.
        options: reader options (see :func:`dataset_options`), e.g. ``{"image_size": 32}`` for image folders, and
            ``augment`` to override the data set's training augmentation policy.
    """
    resolved = _resolve_options(name, options or {})
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be in (0, 1); got {val_fraction}")
    reader_options = {k: v for k, v in resolved.items() if k != "augment"}
    raw = _REGISTRY[name].reader(Path(data_dir) if data_dir is not None else None, **reader_options)
    _validate(raw, name)
    y_all = raw.y_train.astype(np.int64)
    train_idx, val_idx = stratified_split(y_all, val_fraction, seed)
    if max_train is not None and max_train < len(train_idx):
        if max_train < 1:
            raise DataError(f"max_train must be a positive integer; got {max_train}")
        keep, _ = stratified_split(y_all[train_idx], len(train_idx) - max_train, seed)
        train_idx = train_idx[keep]

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(_as_nchw(x).astype(np.float32) / raw.scale)

    x_train, x_val, x_test = tensor(raw.x_train[train_idx]), tensor(raw.x_train[val_idx]), tensor(raw.x_test)
    mean = x_train.mean(dim=(0, 2, 3))
    std = x_train.std(dim=(0, 2, 3)).clamp_min(1e-6)

    def norm(x: torch.Tensor) -> torch.Tensor:
        return ((x - mean[None, :, None, None]) / std[None, :, None, None]).contiguous()

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y.astype(np.int64))

    return DataBundle(
        name=name,
        train=Split(norm(x_train), labels(y_all[train_idx])),
        val=Split(norm(x_val), labels(y_all[val_idx])),
        test=Split(norm(x_test), labels(raw.y_test)),
        num_classes=raw.num_classes,
        input_shape=tuple(int(d) for d in x_train.shape[1:]),
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
        stats=Normalization(tuple(mean.tolist()), tuple(std.tolist())),
        augment=resolved["augment"],
        options=resolved,
        split_seed=seed,
    )


def read_source(path: str | Path) -> dict[str, Any]:
    """A run's ``run.json`` (its teacher as given and how to load its data again), checked field by field."""
    from n2n.files import read_json_object

    source = read_json_object(path, "run record", DataError)
    checks = {
        "data": lambda v: isinstance(v, str) and v in _REGISTRY,
        "data_dir": lambda v: v is None or isinstance(v, str),
        "max_train": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
        "data_options": lambda v: v is None or isinstance(v, dict),
        "split_seed": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**32),
    }
    for key, ok in checks.items():
        if not ok(source.get(key)):
            raise DataError(f"{path}: {key} = {source.get(key)!r} is not valid (a data set, as `n2n compress` records)")
    return source


def load_recorded(source: Mapping[str, Any], seed: int) -> DataBundle:
    """The data set a run recorded in its ``run.json`` (``source``), split as the run split it: with the recorded
    ``split_seed``, or the run's ``seed`` for runs recorded before the split had a seed of its own."""
    split_seed = source.get("split_seed")
    return load_data(
        source["data"],
        source["data_dir"],
        seed=seed if split_seed is None else split_seed,
        max_train=source.get("max_train"),
        options=source.get("data_options"),
    )
