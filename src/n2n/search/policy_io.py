"""What a saved policy (``policy_remove.json`` / ``policy_shrink.json``) records, and whether another run can use it.

Beside its constructor arguments, a saved policy records a format version and the names of the per-layer features
it was trained on, in order. ``--init-policy`` refuses, with a one-line error, a policy that expects other features
(written by an n2n whose feature set differs) or comes from a newer format; files written before the features were
recorded are accepted when their feature size matches.
"""

from __future__ import annotations

from typing import Any

from n2n.errors import ConfigError
from n2n.surgery.analysis import FEATURE_DIM, FEATURE_NAMES

POLICY_VERSION = 1


def policy_record(config: dict[str, Any]) -> dict[str, Any]:
    """The JSON record of a policy whose constructor config is ``config`` (``policy.config()``)."""
    return {**config, "version": POLICY_VERSION, "features": list(FEATURE_NAMES)}


def check_policy_record(saved: dict[str, Any], where: str, kind: str) -> None:
    """Raise ConfigError unless the saved policy record ``saved`` (read from ``where``) fits this n2n's ``kind``
    stage policy."""
    if saved.get("kind") != kind:
        raise ConfigError(f"--init-policy: {where} holds a {saved.get('kind')!r} policy, not a {kind!r} one")
    version = int(saved.get("version", 0))
    if version > POLICY_VERSION:
        raise ConfigError(
            f"--init-policy: {where} has policy format {version}, newer than this n2n's ({POLICY_VERSION}): upgrade n2n"
        )
    features = saved.get("features")
    if features is not None and list(features) != list(FEATURE_NAMES):
        differ = sorted(set(features) ^ set(FEATURE_NAMES)) or ["their order"]
        raise ConfigError(
            f"--init-policy: {where} was trained on {len(features)} layer features that differ from the "
            f"{FEATURE_DIM} this n2n computes ({', '.join(differ)}): train the policy again with this n2n"
        )
    if int(saved.get("feature_dim", -1)) != FEATURE_DIM:
        raise ConfigError(
            f"--init-policy: {where} expects {saved.get('feature_dim')} features per layer but this n2n computes "
            f"{FEATURE_DIM}: train the policy again with this n2n"
        )
