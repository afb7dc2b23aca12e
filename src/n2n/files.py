"""Writing results safely: whole files or nothing, never through a symbolic link, one search per run directory.

Every file n2n writes goes through :func:`atomic_write` (or :func:`write_text`): the content goes to a temporary file
beside the target, which then replaces the target with ``os.replace``. A reader never sees half a file, a crash leaves
the previous version, and a target that is a symbolic link is replaced by a regular file instead of overwriting the
file the link points to (someone who can plant links in a run directory cannot make n2n write elsewhere).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from n2n.errors import ConfigError, N2NError

LOCK_FILE = ".n2n.lock"
_UMASK = os.umask(0)
os.umask(_UMASK)
MIN_FREE_BYTES = 64 * 2**20  # a run directory needs room for a teacher copy, checkpoints and reports


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s directory; on success it replaces ``path`` (a link is replaced, not
    followed); on failure it is removed and ``path`` keeps its previous content."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    if hasattr(os, "fchmod"):  # mkstemp makes 0600; a result file gets the usual permissions
        os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, value: Any) -> None:
    """Write ``value`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(value, indent=2) + "\n")


def own_dir(path: str | Path) -> Path:
    """Create the sub-directory ``path`` of a run directory; a symbolic link there is removed first, so files written
    into it stay inside the run directory."""
    path = Path(path)
    if path.is_symlink():
        path.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def read_json_object(path: str | Path, what: str, error: type[N2NError] = N2NError) -> dict[str, Any]:
    """The JSON object in ``path`` (``what`` it should hold names it in errors); ``error`` for anything else."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise error(f"{path} is not a readable JSON {what}: {err}") from None
    if not isinstance(value, dict):
        raise error(f"{path} must hold a JSON object ({what}); it holds {type(value).__name__}")
    return value


def check_writable_dir(path: str | Path, option: str = "--out") -> Path:
    """Check, before any work starts, that ``path`` can become a directory n2n writes into.

    Raises:
        ConfigError: ``path`` is empty, a file, under a file, not writable, or on a disk with less than 64 MiB free.
    """
    if str(path).strip() == "":
        raise ConfigError(f"{option} is empty: give the directory to write the results to")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path} is a file; give a directory to write the results to")
    existing = path
    while not existing.exists():  # the nearest ancestor that exists must be a writable directory
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{option} {path} lies under {existing}, which is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: {existing} is not writable (permission denied); choose another {option}")
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise ConfigError(
            f"{option} {path}: only {free / 2**20:.0f} MiB free on its disk (n2n needs at least "
            f"{MIN_FREE_BYTES // 2**20} MiB); free some space or choose another {option}"
        )
    return path


def check_out_dir(path: str | Path, marker: str, holds: str, overwrite: bool, option: str = "--out") -> Path:
    """:func:`check_writable_dir`, and refuse a ``path`` whose ``marker`` file says it ``holds`` an earlier result,
    unless ``overwrite``."""
    path = check_writable_dir(path, option)
    if (path / marker).exists() and not overwrite:
        raise ConfigError(f"{option} {path} holds {holds} already: choose another {option}, or pass --overwrite")
    return path


def inside(path: str | Path, directory: str | Path) -> bool:
    """Whether ``path`` (links resolved) lies in ``directory``."""
    return Path(path).resolve().is_relative_to(Path(directory).resolve())


class RunLock:
    """An exclusive lock on a run directory for the lifetime of a search (``fcntl.flock`` on ``.n2n.lock``).

    The operating system releases it when the process ends, however it ends, so a crashed search never leaves a stale
    lock behind. Where ``fcntl`` is unavailable (Windows) the lock is a no-op.
    """

    def __init__(self, directory: str | Path) -> None:
        self.path = Path(directory) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        if self.path.is_symlink():
            self.path.unlink()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                owner = self.path.read_text().strip() or "another process"
                raise N2NError(
                    f"{self.path.parent} is in use by another n2n search (pid {owner}); wait for it to finish or "
                    "choose another --out"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def check_safetensors(path: Path, option: str) -> None:
    """Raise ConfigError unless ``path`` is a readable safetensors file (header and every tensor)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                f.get_tensor(key)
    except (OSError, SafetensorError, RuntimeError, ValueError) as err:
        message = " ".join(str(err).split())[:200]
        raise ConfigError(f"{option}: {path} is not a readable safetensors file ({message})") from None
