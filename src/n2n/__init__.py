"""n2n: compress a trained PyTorch classifier into a much smaller student by reinforcement learning.

After N2N learning (Ashok et al., ICLR 2018): a removal policy drops layers, a shrink policy narrows the rest, each
candidate student is distilled from the teacher and scored by accuracy times compression.

Example:
    >>> import n2n
    >>> data = n2n.load_data("digits")
    >>> teacher, spec = n2n.train_teacher("vgg11", data, width=0.5, epochs=15)
    >>> result = n2n.compress(teacher, spec, data, n2n.CompressConfig(updates=4), "runs/api")
    >>> student, student_spec = n2n.load_model("runs/api/student")
"""

from n2n.compress import CompressResult, compress
from n2n.data import DataBundle, list_datasets, load_data
from n2n.errors import ConfigError, DataError, ModelError, N2NError, SurgeryError
from n2n.models import ModelSpec, create_model, list_models, load_model, save_model
from n2n.settings import CompressConfig
from n2n.surgery import Edits, analyze
from n2n.teacher import train_teacher

__version__ = "0.1.0"

__all__ = [
    "CompressConfig",
    "CompressResult",
    "ConfigError",
    "DataBundle",
    "DataError",
    "Edits",
    "ModelError",
    "ModelSpec",
    "N2NError",
    "SurgeryError",
    "analyze",
    "compress",
    "create_model",
    "list_datasets",
    "list_models",
    "load_data",
    "load_model",
    "save_model",
    "train_teacher",
]
