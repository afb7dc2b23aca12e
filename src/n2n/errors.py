"""Errors that reach the user.

Every error a user can fix derives from :class:`N2NError`; the command line prints its message on one line and exits
non-zero, without a traceback (unless ``--debug``). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class N2NError(Exception):
    """Base class of every error whose message tells the user what to fix."""


class ConfigError(N2NError):
    """An option has a value that is not allowed; the message names the option and what is allowed."""


class DataError(N2NError):
    """A data set is missing, malformed or inconsistent; the message names the expected layout."""


class ModelError(N2NError):
    """A model cannot be built, loaded or traced."""


class SurgeryError(N2NError):
    """An edit (removal or shrinkage) cannot produce a working network.

    Attributes:
        layer: qualified module name of the layer at fault ('' when it is the network as a whole).
        reason: short human-readable reason, recorded in ``events.jsonl`` for rejected candidates.
    """

    def __init__(self, layer: str, reason: str) -> None:
        self.layer = layer
        self.reason = reason
        super().__init__(f"{layer}: {reason}" if layer else reason)


class Interrupted(N2NError):
    """The user stopped a search (Ctrl-C); its state is checkpointed and the message says how to resume."""
