"""What the benchmark scripts share: running the n2n command line as a user would."""

from __future__ import annotations

import subprocess
import sys
import time

#: The n2n command line of this interpreter's environment.
N2N = [sys.executable, "-m", "n2n.cli"]


def run_quietly(argv: list[str]) -> float:
    """Run an n2n command (``N2N + args``) with its output discarded; returns its wall time in seconds."""
    print("$ n2n " + " ".join(argv[len(N2N) :]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def commit() -> str | None:
    """The git commit of the n2n code this interpreter runs (with ``+changes`` when its tree differs), or None
    outside a git checkout; set ``N2N_COMMIT`` to state it for a copy of the code that is not one."""
    import os
    from pathlib import Path

    import n2n

    if os.environ.get("N2N_COMMIT"):
        return os.environ["N2N_COMMIT"]
    where = Path(n2n.__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=where, capture_output=True, text=True)
    except OSError:
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def machine() -> dict:
    """What a benchmark's figures were measured on: Python, torch, its threads, the processor."""
    import platform

    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
    }
