"""Worker tasks for tests/test_parallel.py and tests/test_ray.py (importable by name in worker processes)."""

import os
from pathlib import Path

from n2n.search.candidate import CandidateResult


def die_on_removal(edits):
    """Stands in for candidate evaluation: the worker process dies on any candidate that removes a layer."""
    if edits.removed:
        os._exit(3)
    return CandidateResult(edits, 10, 20, 0.5, 0.25, "", 0.0)


def die_in_ray(marker_dir, ctx, edits):
    """Stands in for candidate evaluation in a Ray task: the worker dies on every attempt at a candidate that removes
    "always", and on the first attempt only at one that removes "once" (a marker file remembers the attempt)."""
    marker = Path(marker_dir) / "-".join(edits.removed)
    if "always" in edits.removed or ("once" in edits.removed and not marker.exists()):
        marker.touch()
        os._exit(3)
    return CandidateResult(edits, 10, 20, 0.5, 0.25, "", 0.0)


def worker_pid(edits):
    """Stands in for candidate evaluation: reports the worker's process id (as the params figure)."""
    return CandidateResult(edits, os.getpid(), 20, 0.5, 0.25, "", 0.0)


def huge_pages_in_ray(ctx, edits):
    """Stands in for candidate evaluation in a Ray task: reports the worker's THP_MEM_ALLOC_ENABLE (as the reason)."""
    return CandidateResult(edits, 10, 20, 0.5, 0.25, os.environ.get("THP_MEM_ALLOC_ENABLE", "unset"), 0.0)
