"""A throwaway Ray cluster of several nodes on this machine, for tests, benchmarks and trying ``--ray-address``.

Each node is a ``ray start --block`` process started here; stopping the cluster terminates exactly those processes
(``--block`` makes each one take its raylet, object store and workers down with it), so other Ray clusters on the
machine are left alone (unlike ``ray stop``, which ends every Ray process it finds).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from n2n.errors import N2NError
from n2n.search.ray_eval import import_ray

#: Environment of the cluster's processes and of a driver that connects to it: no token auth, no usage reports.
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class LocalRayCluster:
    """``nodes`` Ray nodes on localhost with ``cpus`` CPUs each; use as a context manager.

    Attributes:
        address: the head node's ``HOST:PORT`` (what ``--ray-address`` takes).
    """

    def __init__(self, nodes: int = 2, cpus: int = 1, timeout: float = 120.0, env: dict[str, str] | None = None):
        self.nodes, self.cpus, self.timeout = nodes, cpus, timeout
        self.env = {**os.environ, **RAY_ENV, **(env or {})}
        self.address = f"127.0.0.1:{_free_port()}"
        self._procs: list[subprocess.Popen] = []

    def _start_node(self, *args: str) -> None:
        ray_cli = Path(sys.executable).with_name("ray")
        command = [str(ray_cli), "start", "--block", f"--num-cpus={self.cpus}", "--disable-usage-stats", *args]
        self._procs.append(
            subprocess.Popen(  # a session of its own, so a Ctrl-C meant for the driver does not reach the node
                command, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
            )
        )

    def _wait(self, what: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.timeout
        while not ready():
            if any(p.poll() is not None for p in self._procs):
                raise N2NError(f"a local Ray node exited while waiting for {what}")
            if time.monotonic() > deadline:
                raise N2NError(f"local Ray cluster: no {what} after {self.timeout:.0f} s")
            time.sleep(0.5)

    def start(self) -> LocalRayCluster:
        """Start the head node, then the others, and wait until all of them are alive.

        The wait connects to the cluster briefly: run this driver with :data:`RAY_ENV` in its environment.
        """
        ray = import_ray()
        port = self.address.rsplit(":", 1)[1]
        self._start_node("--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false")
        self._wait("head node", lambda: _listening(int(port)))
        for _ in range(self.nodes - 1):
            self._start_node(f"--address={self.address}", "--node-ip-address=127.0.0.1")
        ray.init(address=self.address, configure_logging=False, log_to_driver=False)
        try:
            self._wait(f"{self.nodes} alive nodes", lambda: sum(n["Alive"] for n in ray.nodes()) >= self.nodes)
        finally:
            ray.shutdown()
        return self

    def stop(self) -> None:
        """Terminate the node processes started here (and, after 30 s, kill whatever of them is left)."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._procs.clear()

    def __enter__(self) -> LocalRayCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, kind: type | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
