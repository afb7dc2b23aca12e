"""Image files in class-per-folder directories: any ``imagefolder`` and Caltech-256, decoded with Pillow.

Every image is decoded once, converted to RGB, resized so that its shorter side is ``image_size`` and
center-cropped to ``image_size`` x ``image_size``; the data set is kept in memory as uint8 (N, 3, S, S) and, once
normalised, as float32 (4 bytes per value: 30,607 Caltech images take 1.5 GB at 64 px and 18 GB at 224 px).
Without separate ``train/`` and ``test/`` folders, a fixed number of images per class (``test_per_class``, drawn
with a fixed seed whatever the run's seed) is the test set and the rest the training set.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from n2n.data._base import RawData, register_dataset
from n2n.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp"})
IMAGE_SIZE = 64  # CPU-friendly; the paper used 224 x 224 crops for Caltech-256
TEST_PER_CLASS = 25
SPLIT_SEED = 0
CALTECH_FOLDER = "256_ObjectCategories"
CALTECH_CLASS = re.compile(r"^\d{3}\..+")
CALTECH_CLUTTER = "257.clutter"  # the background class, left out as in the paper: 256 classes


def decode_image(path: Path, size: int) -> np.ndarray:
    """The image at ``path`` as RGB uint8 (3, size, size): shorter side resized to ``size``, center-cropped."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale still >= size (much faster)
            fitted = ImageOps.fit(image.convert("RGB"), (size, size), method=Image.Resampling.BILINEAR)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot decode image {path} ({err}); remove or replace the file") from None
    return np.asarray(fitted, dtype=np.uint8).transpose(2, 0, 1)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted; other files and hidden ones are skipped)."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
    )


def _decode_all(paths: list[Path], size: int) -> np.ndarray:
    images = np.empty((len(paths), 3, size, size), dtype=np.uint8)
    for i, path in enumerate(paths):
        images[i] = decode_image(path, size)
        if (i + 1) % 2000 == 0:
            log.info("decoded %d of %d images", i + 1, len(paths))
    return images


def _check_options(image_size: int, test_per_class: int) -> None:
    if image_size < 8:
        raise ConfigError(f"--image-size must be an integer >= 8 (pixels); got {image_size}")
    if test_per_class < 1:
        raise ConfigError(f"--test-per-class must be a positive integer; got {test_per_class}")


def _files_by_class(name: str, classes: list[Path], layout: str) -> list[list[Path]]:
    files = [_image_files(c) for c in classes]
    empty = [c.name for c, f in zip(classes, files, strict=True) if not f]
    if empty:
        raise DataError(f"{name}: class folder(s) {', '.join(empty[:5])} hold no image file; expected {layout}")
    return files


def split_per_class(counts: list[int], test_per_class: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Indices (into the classes' files laid end to end) of the training and the test images: ``test_per_class``
    images of each class, drawn with ``seed``, are the test set."""
    rng = np.random.default_rng(seed)
    train, test, start = [], [], 0
    for count in counts:
        order = start + rng.permutation(count)
        test.append(np.sort(order[:test_per_class]))
        train.append(np.sort(order[test_per_class:]))
        start += count
    return np.concatenate(train), np.concatenate(test)


def _read_split_folders(name: str, classes: list[Path], image_size: int, test_per_class: int, layout: str) -> RawData:
    """One folder per class: ``test_per_class`` images of each are the test set."""
    files = _files_by_class(name, classes, layout)
    small = [f"{c.name} ({len(f)})" for c, f in zip(classes, files, strict=True) if len(f) <= test_per_class]
    if small:
        raise DataError(
            f"{name}: class(es) {', '.join(small[:5])} have no more images than --test-per-class {test_per_class}, "
            "leaving none to train on; lower --test-per-class or give train/ and test/ folders"
        )
    paths = [p for f in files for p in f]
    labels = np.concatenate([np.full(len(f), i, dtype=np.int64) for i, f in enumerate(files)])
    train_idx, test_idx = split_per_class([len(f) for f in files], test_per_class)
    images = _decode_all(paths, image_size)
    return RawData(images[train_idx], labels[train_idx], images[test_idx], labels[test_idx], len(classes), 255.0)


IMAGEFOLDER_LAYOUT = (
    "one sub-folder of images per class in DIR (DIR/cat/1.jpg, DIR/dog/2.png, ...), or DIR/train/<class>/ and "
    "DIR/test/<class>/"
)


@register_dataset(
    "imagefolder", augment="crop_flip", options={"image_size": IMAGE_SIZE, "test_per_class": TEST_PER_CLASS}
)
def read_imagefolder(
    data_dir: Path | None, image_size: int = IMAGE_SIZE, test_per_class: int = TEST_PER_CLASS
) -> RawData:
    """Classes are the sub-folder names in sorted order; ``train/`` and ``test/`` sub-folders give the split."""
    _check_options(image_size, test_per_class)
    if data_dir is None or not data_dir.is_dir():
        raise DataError(f"imagefolder needs --data-dir DIR, a directory with {IMAGEFOLDER_LAYOUT}")
    if not (data_dir / "train").is_dir() or not (data_dir / "test").is_dir():
        classes = _subdirs(data_dir)
        if len(classes) < 2:
            raise DataError(
                f"imagefolder: {data_dir} has {len(classes)} class folder(s); expected {IMAGEFOLDER_LAYOUT}"
            )
        return _read_split_folders("imagefolder", classes, image_size, test_per_class, IMAGEFOLDER_LAYOUT)
    classes = _subdirs(data_dir / "train")
    names = [c.name for c in classes]
    if len(classes) < 2:
        raise DataError(f"imagefolder: {data_dir / 'train'} has {len(classes)} class folder(s); expected 2 or more")
    unknown = [c.name for c in _subdirs(data_dir / "test") if c.name not in names]
    if unknown:
        raise DataError(f"imagefolder: test classes {', '.join(unknown[:5])} have no folder in {data_dir / 'train'}")
    train_files = _files_by_class("imagefolder", classes, IMAGEFOLDER_LAYOUT)
    test_files = [_image_files(data_dir / "test" / n) if (data_dir / "test" / n).is_dir() else [] for n in names]

    def stack(files: list[list[Path]]) -> tuple[np.ndarray, np.ndarray]:
        labels = np.concatenate([np.full(len(f), i, dtype=np.int64) for i, f in enumerate(files)])
        return _decode_all([p for f in files for p in f], image_size), labels

    (x_train, y_train), (x_test, y_test) = stack(train_files), stack(test_files)
    return RawData(x_train, y_train, x_test, y_test, len(classes), 255.0)


CALTECH_LAYOUT = (
    f"class folders 001.ak47 ... 256.toad in DIR or DIR/{CALTECH_FOLDER} (the {CALTECH_FOLDER}.tar archive, extracted)"
)


@register_dataset(
    "caltech256", augment="crop_flip", options={"image_size": IMAGE_SIZE, "test_per_class": TEST_PER_CLASS}
)
def read_caltech256(
    data_dir: Path | None, image_size: int = IMAGE_SIZE, test_per_class: int = TEST_PER_CLASS
) -> RawData:
    """The 256 object classes (``257.clutter`` left out), ``test_per_class`` test images each."""
    _check_options(image_size, test_per_class)
    if data_dir is None or not data_dir.is_dir():
        raise DataError(f"caltech256 needs --data-dir DIR; expected {CALTECH_LAYOUT}")
    if (data_dir / CALTECH_FOLDER).is_dir():
        data_dir = data_dir / CALTECH_FOLDER
    classes = [d for d in _subdirs(data_dir) if CALTECH_CLASS.match(d.name) and d.name != CALTECH_CLUTTER]
    if len(classes) < 2:
        raise DataError(f"caltech256: {data_dir} has {len(classes)} class folder(s); expected {CALTECH_LAYOUT}")
    if len(classes) != 256:
        log.warning("caltech256: %d class folders in %s (the full data set has 256)", len(classes), data_dir)
    return _read_split_folders("caltech256", classes, image_size, test_per_class, CALTECH_LAYOUT)
