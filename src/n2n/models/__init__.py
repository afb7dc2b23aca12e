"""Teacher architectures by name and the saved-model format (spec JSON + safetensors)."""

from n2n.models.io import ModelSpec, build_model, load_model, save_model
from n2n.models.zoo import create_model, list_models, register_model

__all__ = ["ModelSpec", "build_model", "create_model", "list_models", "load_model", "register_model", "save_model"]
