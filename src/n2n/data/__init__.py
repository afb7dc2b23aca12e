"""Data sets by name: ``load_data("digits")``, ``load_data("mnist", "path/to/mnist")``,
``load_data("imagefolder", "photos/", options={"image_size": 32})``."""

from n2n.data import cifar, digits, idx, images, npz, svhn  # noqa: F401 - registers the data sets
from n2n.data._base import (
    DataBundle,
    RawData,
    Split,
    dataset_options,
    list_datasets,
    load_data,
    load_recorded,
    read_source,
    register_dataset,
)
from n2n.data.augment import augment_batch, list_policies
from n2n.data.idx import read_idx, write_idx
from n2n.data.normalize import Normalization, parse_normalize

__all__ = [
    "DataBundle",
    "Normalization",
    "RawData",
    "Split",
    "augment_batch",
    "dataset_options",
    "list_datasets",
    "list_policies",
    "load_data",
    "load_recorded",
    "parse_normalize",
    "read_idx",
    "read_source",
    "register_dataset",
    "write_idx",
]
