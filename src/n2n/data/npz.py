"""Arrays in NumPy ``.npz`` files, read with ``allow_pickle=False`` (object arrays are refused, never unpickled).

Either one file with ``x`` and ``y`` (and optionally ``x_test`` and ``y_test``; without them a fixed, stratified
20% of ``x`` is the test set), or a directory with ``train.npz`` and ``test.npz``, each holding ``x`` and ``y``.
Images are (N, H, W), (N, C, H, W), or (N, H, W, C) with C = 1, 3 or 4 (RGBA; channels last is recognised when axis
1 is not a plausible channel count); uint8 values are divided by 255, other types are taken as they are. Labels are
integers 0..K-1, and K is one more than the largest label.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from n2n.data._base import RawData, register_dataset, stratified_split
from n2n.errors import DataError

LAYOUT = (
    "--data-dir FILE.npz holding arrays x and y (and optionally x_test, y_test), or a directory with train.npz "
    "and test.npz, each holding x and y"
)
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def read_npz(path: Path, keys: tuple[str, ...], required: int) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of the .npz file ``path``; the first ``required`` of them must be present."""
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"npz: {path} holds a single array, not named arrays; expected {LAYOUT}")
        with archive:
            missing = [k for k in keys[:required] if k not in archive.files]
            if missing:
                raise DataError(f"npz: {path} lacks {', '.join(missing)} (it has {', '.join(archive.files)}); {LAYOUT}")
            return {k: archive[k] for k in keys if k in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"npz: cannot read {path} ({err}); expected {LAYOUT}") from None


def _images(x: np.ndarray, where: str) -> np.ndarray:
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"npz: {where} must be a numeric array; got dtype {x.dtype}")
    if x.ndim == 4 and x.shape[3] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (N, H, W, C) -> (N, C, H, W)
    return x


def _labels(y: np.ndarray, where: str) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer) or y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] != 1):
        raise DataError(f"npz: {where} must be integer class labels of shape (N,); got {y.dtype} {y.shape}")
    return y.reshape(-1).astype(np.int64)


@register_dataset("npz")
def read_npz_dataset(data_dir: Path | None) -> RawData:
    if data_dir is None:
        raise DataError(f"npz needs {LAYOUT}")
    if data_dir.is_dir():
        paths = [data_dir / "train.npz", data_dir / "test.npz"]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"npz: {data_dir} lacks {', '.join(missing)}; expected {LAYOUT}")
        train, test = (read_npz(p, ("x", "y"), 2) for p in paths)
        x, y = _images(train["x"], "train.npz x"), _labels(train["y"], "train.npz y")
        x_test, y_test = _images(test["x"], "test.npz x"), _labels(test["y"], "test.npz y")
    elif data_dir.is_file():
        arrays = read_npz(data_dir, ("x", "y", "x_test", "y_test"), 2)
        x, y = _images(arrays["x"], "x"), _labels(arrays["y"], "y")
        if ("x_test" in arrays) != ("y_test" in arrays):
            raise DataError(f"npz: {data_dir} has only one of x_test and y_test; give both or neither")
        if "x_test" in arrays:
            x_test, y_test = _images(arrays["x_test"], "x_test"), _labels(arrays["y_test"], "y_test")
        else:
            if len(x) != len(y):
                raise DataError(f"npz: {data_dir} has {len(x)} images in x but {len(y)} labels in y")
            keep, held = stratified_split(y, TEST_FRACTION, SPLIT_SEED)
            x, y, x_test, y_test = x[keep], y[keep], x[held], y[held]
    else:
        raise DataError(f"npz: {data_dir} does not exist; expected {LAYOUT}")
    num_classes = int(max(y.max(initial=0), y_test.max(initial=0))) + 1
    if num_classes < 2:
        raise DataError(f"npz: the labels name {num_classes} class; a classifier needs 2 or more (labels 0..K-1)")
    absent = sorted(set(range(num_classes)) - set(np.unique(y).tolist()))
    if absent:  # K is inferred from the largest label: a stray label would make a classifier of thousands of classes
        shown = ", ".join(map(str, absent[:5])) + (", ..." if len(absent) > 5 else "")
        raise DataError(
            f"npz: labels must be 0..K-1 with every class in the training split, but {len(absent):,} of the "
            f"{num_classes:,} classes up to the largest label have no training example ({shown}): renumber the labels"
        )
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    return RawData(x, y, x_test, y_test, num_classes, scale)
