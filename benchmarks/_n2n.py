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
