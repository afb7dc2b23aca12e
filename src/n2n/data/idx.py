"""The IDX format of MNIST, Fashion-MNIST and KMNIST (plain or gzipped), and their readers."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from n2n.data._base import RawData, register_dataset
from n2n.errors import DataError

_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}
MAX_BYTES = 4 * 2**30
FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped when the name ends in .gz): 0, 0, dtype code, ndim, sizes (big-endian), data."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read(MAX_BYTES + 1)
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError; a damaged stream, zlib.error
        raise DataError(f"cannot read {path}: {err} (damaged or not gzip: download it again)") from None
    if len(raw) > MAX_BYTES:
        raise DataError(f"{path} holds more than {MAX_BYTES // 2**30} GiB of data; n2n reads data sets into memory")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = np.dtype(_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated (header cut short)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{path} is truncated or padded: {len(raw) - header} data bytes, expected {expected} for {shape}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzipped when the name ends in .gz)."""
    array = np.asarray(array)
    code = _CODES.get(array.dtype)
    if code is None:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    data = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def _find(data_dir: Path, stem: str) -> Path | None:
    for candidate in (data_dir / stem, data_dir / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_idx_dataset(name: str, data_dir: Path | None, num_classes: int = 10) -> RawData:
    """The four standard IDX files of an MNIST-format data set in ``data_dir`` (labels checked against
    ``num_classes`` when the data is validated)."""
    layout = ", ".join(FILES) + " (each optionally .gz)"
    if data_dir is None:
        raise DataError(f"{name} needs --data-dir DIR, a directory containing {layout}")
    if not data_dir.is_dir():
        raise DataError(f"--data-dir {data_dir} is not a directory; it must contain {layout}")
    paths = [_find(data_dir, stem) for stem in FILES]
    missing = [stem for stem, p in zip(FILES, paths, strict=False) if p is None]
    if missing:
        raise DataError(f"{data_dir} lacks {', '.join(missing)}; an {name} directory holds {layout}")
    x_train, y_train, x_test, y_test = (read_idx(p) for p in paths)
    for p, arr, ndim in zip(paths, (x_train, y_train, x_test, y_test), (3, 1, 3, 1), strict=False):
        if arr.ndim != ndim:
            raise DataError(f"{p} has {arr.ndim} dimensions; expected {ndim}")
    scale = 255.0 if x_train.dtype == np.uint8 else 1.0
    return RawData(x_train, y_train, x_test, y_test, num_classes, scale)


for _name in ("mnist", "fashion-mnist", "kmnist"):
    register_dataset(_name)(lambda data_dir, _n=_name: read_idx_dataset(_n, data_dir))
