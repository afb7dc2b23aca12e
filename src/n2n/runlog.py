"""The run directory's event log: one JSON object per line, flushed as it is written."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from n2n.errors import N2NError
from n2n.events import Event
from n2n.files import write_text

log = logging.getLogger(__name__)


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class EventLog:
    """The one writer of ``events.jsonl``: appends each event record (``n2n.events``) as a JSON line and forwards
    its dict to an optional listener (the progress display)."""

    def __init__(self, path: Path, listener: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.path = path
        self.listener = listener
        if path.is_symlink():
            raise N2NError(f"{path} is a symbolic link; n2n does not write through links: remove it")
        self.count = sum(1 for _ in path.open(encoding="utf-8", errors="replace")) if path.exists() else 0
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        self._file = os.fdopen(fd, "a", encoding="utf-8")

    def __call__(self, event: Event) -> None:
        record = event.to_dict()
        self._file.write(json.dumps(_clean(record)) + "\n")
        self._file.flush()
        self.count += 1
        if self.listener is not None:
            self.listener(record)

    def tell(self, event: Event) -> None:
        """Forward ``event`` to the listener without writing it (progress the log need not keep)."""
        if self.listener is not None:
            self.listener(event.to_dict())

    def close(self) -> None:
        self._file.close()


def read_events(path: Path) -> Iterator[dict[str, Any]]:
    """The events of a run, skipping a last line cut short by an interruption."""
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                yield event


def truncate_events(path: Path, count: int) -> None:
    """Keep the first ``count`` lines of ``path`` (what a checkpoint saw), so a resumed run logs nothing twice."""
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True) if path.exists() else []
    if len(lines) < count:
        log.warning("%s has %d events but its checkpoint saw %d; some events were lost", path, len(lines), count)
    write_text(path, "".join(lines[:count]))
