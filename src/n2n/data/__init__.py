"""Data sets by name: ``load_data("digits")``, ``load_data("mnist", "path/to/mnist")``."""

from n2n.data import digits, idx  # noqa: F401 - registers the data sets
from n2n.data._base import DataBundle, RawData, Split, list_datasets, load_data, register_dataset
from n2n.data.idx import read_idx, write_idx

__all__ = ["DataBundle", "RawData", "Split", "list_datasets", "load_data", "read_idx", "register_dataset", "write_idx"]
