"""Settings read from a mapping: a ``--config`` YAML file, the options the command line gathered, or the
``config.json`` a run recorded. Keys may use dashes; every value is checked against its setting's type."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

from n2n.errors import ConfigError
from n2n.files import read_json_object
from n2n.settings import CompressConfig


def config_from_mapping(values: dict[str, Any], where: str = "config") -> CompressConfig:
    """Settings from a mapping (a YAML file, ``config.json``): keys may use dashes; types are checked."""
    known = {f.name: f for f in fields(CompressConfig)}
    defaults = CompressConfig()
    settings: dict[str, Any] = {}
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in known:
            raise ConfigError(f"{where}: unknown setting {key!r}; known settings: {', '.join(known)}")
        settings[name] = _coerce(name, value, getattr(defaults, name), str(known[name].type), where)
    return CompressConfig(**settings)


def read_config(path: str | Path) -> CompressConfig:
    """The settings a run recorded in its ``config.json``, checked (a baseline's extra ``baseline`` key is ignored)."""
    values = read_json_object(path, "settings file", ConfigError)
    values = {k: v for k, v in values.items() if k != "baseline"}
    return config_from_mapping(values, where=str(path))


def _coerce(name: str, value: Any, default: Any, annotation: str, where: str) -> Any:
    """``value`` as the type of setting ``name`` (its default's type), or a ConfigError naming both."""
    if value is None:
        if default is not None:
            raise ConfigError(f"{where}: {name} needs a value (it is empty); remove the line to use the default")
        return None
    if isinstance(default, tuple) or name in ("fix", "fractions"):
        items = value if isinstance(value, list | tuple) else [value]
        kind = float if name == "fractions" else str
        try:
            return tuple(kind(v) for v in items)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {name} must be a list of {kind.__name__} values; got {value!r}") from None
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {name} must be true or false; got {value!r}")
        return value
    kind = type(default) if default is not None else next(t for t in (int, float, str) if t.__name__ in annotation)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{where}: {name} must be {kind.__name__}; got {value!r}")
    return value
