"""scikit-learn's 8x8 handwritten digits: the embedded default data set (1,797 images, no download)."""

from __future__ import annotations

from pathlib import Path

from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from n2n.data._base import RawData, register_dataset

TEST_FRACTION = 0.2


@register_dataset("digits")
def read_digits(data_dir: Path | None = None) -> RawData:
    """A fixed stratified 20% test split (seed 0, whatever the run's seed); values 0..16."""
    digits = load_digits()
    x = digits.images.astype("float32")
    y = digits.target.astype("int64")
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=TEST_FRACTION, random_state=0, stratify=y)
    return RawData(x_train, y_train, x_test, y_test, 10, 16.0)
