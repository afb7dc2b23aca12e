"""Worker tasks for tests/test_parallel.py (importable by name in spawned worker processes)."""

import os

from n2n.search.candidate import CandidateResult


def die_on_removal(edits):
    """Stands in for candidate evaluation: the worker process dies on any candidate that removes a layer."""
    if edits.removed:
        os._exit(3)
    return CandidateResult(edits, 10, 20, 0.5, 0.25, "", 0.0)
