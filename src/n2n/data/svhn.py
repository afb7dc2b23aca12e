"""SVHN, the cropped-digits format: ``train_32x32.mat`` and ``test_32x32.mat`` (MATLAB v5 files).

Each file holds ``X``, uint8 (32, 32, 3, N), and ``y``, (N, 1) labels 1..10 where 10 stands for the digit 0.
``extra_32x32.mat`` is not used (the paper does not say it was).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import loadmat
from scipy.io.matlab import MatReadError

from n2n.data._base import RawData, register_dataset
from n2n.errors import DataError

FILES = ("train_32x32.mat", "test_32x32.mat")
LAYOUT = "train_32x32.mat and test_32x32.mat in DIR (SVHN's 'cropped digits' format 2, MATLAB files)"


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) uint8 and labels (N,) int64 in 0..9 of one SVHN .mat file."""
    try:
        mat = loadmat(path, variable_names=["X", "y"])
    except (OSError, ValueError, TypeError, NotImplementedError, MatReadError) as err:
        raise DataError(f"svhn: cannot read {path} as a MATLAB v5 file ({err}); expected {LAYOUT}") from None
    x, y = mat.get("X"), mat.get("y")
    if x is None or y is None:
        raise DataError(f"svhn: {path} lacks the variables X and y; expected {LAYOUT}")
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.dtype != np.uint8:
        raise DataError(f"svhn: {path}: X must be uint8 (32, 32, 3, N); got {x.dtype} {x.shape}")
    y = y.reshape(-1).astype(np.int64)
    if len(y) != x.shape[3]:
        raise DataError(f"svhn: {path} has {x.shape[3]} images but {len(y)} labels")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise DataError(f"svhn: {path}: labels must be 1..10 (10 is the digit 0); found {y.min()}..{y.max()}")
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y % 10


@register_dataset("svhn", augment="crop")  # crops only: a mirrored digit is another symbol
def read_svhn(data_dir: Path | None) -> RawData:
    if data_dir is None:
        raise DataError(f"svhn needs --data-dir DIR; expected {LAYOUT}")
    missing = [f for f in FILES if not (data_dir / f).is_file()]
    if missing:
        raise DataError(f"svhn: {data_dir} lacks {', '.join(missing)}; expected {LAYOUT}")
    (x_train, y_train), (x_test, y_test) = (read_svhn_mat(data_dir / f) for f in FILES)
    return RawData(x_train, y_train, x_test, y_test, 10, 255.0)
