"""What a saved policy (``policy_remove.json`` / ``policy_shrink.json``) records, and whether another run can use it.

Beside its constructor arguments, a saved policy records a format version and the names of the per-layer features
it was trained on, in order. ``--init-policy`` refuses, with a one-line error, a policy that expects other features
(written by an n2n whose feature set differs) or comes from a newer format; files written before the features were
recorded are accepted when their feature size matches.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from n2n.errors import ConfigError
from n2n.files import read_json_object
from n2n.surgery.analysis import FEATURE_DIM, FEATURE_NAMES

POLICY_VERSION = 1
MAX_HIDDEN, MAX_LAYERS = 4096, 8  # bounds on what a file may ask to allocate (the paper: 30 or 50 units, 2 layers)
#: The constructor arguments a record may hold, per stage, with their type (see ``RemovalPolicy``, ``ShrinkPolicy``).
ARGS = {
    "remove": {"feature_dim": int, "hidden": int, "num_layers": int, "init_keep_bias": float},
    "shrink": {"feature_dim": int, "choices": list, "hidden": int, "num_layers": int, "init_full_bias": float},
}


def policy_record(config: dict[str, Any]) -> dict[str, Any]:
    """The JSON record of a policy whose constructor config is ``config`` (``policy.config()``)."""
    return {**config, "version": POLICY_VERSION, "features": list(FEATURE_NAMES)}


def read_policy_record(path: str | Path, kind: str) -> dict[str, Any]:
    """The checked record of a saved ``policy_<kind>.json``."""
    saved = read_json_object(path, "policy record", ConfigError)
    check_policy_record(saved, str(path), kind)
    return saved


def check_policy_record(saved: Any, where: str, kind: str) -> None:
    """Raise ConfigError unless the saved policy record ``saved`` (read from ``where``) fits this n2n's ``kind``
    stage policy, with every constructor argument of the right type and within bounds."""
    if not isinstance(saved, dict):
        raise ConfigError(f"--init-policy: {where} must hold a JSON object; it holds {type(saved).__name__}")
    if saved.get("kind") != kind:
        raise ConfigError(f"--init-policy: {where} holds a {saved.get('kind')!r} policy, not a {kind!r} one")
    version = saved.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ConfigError(f"--init-policy: {where} has version {version!r}, not an integer")
    if version > POLICY_VERSION:
        raise ConfigError(
            f"--init-policy: {where} has policy format {version}, newer than this n2n's ({POLICY_VERSION}): upgrade n2n"
        )
    features = saved.get("features")
    if features is not None and not (isinstance(features, list) and all(isinstance(f, str) for f in features)):
        raise ConfigError(f"--init-policy: {where} has features {features!r}, not a list of names")
    if features is not None and list(features) != list(FEATURE_NAMES):
        differ = sorted(set(features) ^ set(FEATURE_NAMES)) or ["their order"]
        raise ConfigError(
            f"--init-policy: {where} was trained on {len(features)} layer features that differ from the "
            f"{FEATURE_DIM} this n2n computes ({', '.join(differ)}): train the policy again with this n2n"
        )
    if saved.get("feature_dim") != FEATURE_DIM:
        raise ConfigError(
            f"--init-policy: {where} expects {saved.get('feature_dim')} features per layer but this n2n computes "
            f"{FEATURE_DIM}: train the policy again with this n2n"
        )
    args = ARGS[kind]
    unknown = sorted(set(saved) - set(args) - {"kind", "version", "features"})
    if unknown:
        raise ConfigError(f"--init-policy: {where} has unknown field {unknown[0]!r}")
    for key, kind_of in args.items():
        if key not in saved:
            continue
        value = saved[key]
        ok = isinstance(value, kind_of) and not isinstance(value, bool)
        if kind_of is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not ok:
            raise ConfigError(f"--init-policy: {where} has {key} = {value!r}, not a {kind_of.__name__}")
    for key, top in (("hidden", MAX_HIDDEN), ("num_layers", MAX_LAYERS)):
        if key in saved and not 1 <= saved[key] <= top:
            raise ConfigError(f"--init-policy: {where} has {key} = {saved[key]}, outside [1, {top}]")
    choices = saved.get("choices", [1.0])
    if kind == "shrink" and not (
        choices
        and all(isinstance(c, int | float) and not isinstance(c, bool) and 0 < c <= 1 for c in choices)
        and 1.0 in choices
    ):
        raise ConfigError(f"--init-policy: {where} has choices {choices!r}, not fractions in (0, 1] including 1.0")
