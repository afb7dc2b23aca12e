"""The records of a run's event log (``events.jsonl``), one type per kind of event.

Searches and baselines build these and hand them to :class:`n2n.runlog.EventLog`, the one writer, which stores
``to_dict()`` as one JSON line and forwards the same dict to a progress display. Readers (reports, resume, the
TensorBoard listener) read the dicts back; the field names here are the keys they find.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar


def _optional() -> Any:
    """A field left out of the record when it is None (it exists only for some runs)."""
    return field(default=None, metadata={"optional": True})


@dataclass(frozen=True)
class Event:
    event: ClassVar[str]  # the record's kind, its "event" key

    def to_dict(self) -> dict[str, Any]:
        """``{"event": kind, field: value, ...}`` in field order; optional fields only when set."""
        record: dict[str, Any] = {"event": self.event}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None or not f.metadata.get("optional"):
                record[f.name] = value
        return record


@dataclass(frozen=True)
class Start(Event):
    """A search begins: the teacher it measures students against."""

    event: ClassVar[str] = "start"
    teacher_params: int
    teacher_val_accuracy: float
    weak_teacher: bool
    objective: str
    teacher_cost: float | None
    layers: int
    stages: list[str]
    updates: int
    latency_model: dict[str, float] | None = _optional()  # with a latency target: what candidates are fitted with


@dataclass(frozen=True)
class Stage(Event):
    """A stage begins (``layers`` it decides on), or resumes after ``completed`` updates (told to the display only)."""

    event: ClassVar[str] = "stage"
    stage: str
    updates: int
    layers: int | None = _optional()
    completed: int | None = _optional()


@dataclass(frozen=True)
class Candidate(Event):
    """One rollout of a policy update: the student it drew and what it scored."""

    event: ClassVar[str] = "candidate"
    stage: str
    update: int
    rollout: int
    actions: list[int]
    edits: dict[str, Any]
    params: int
    macs: int
    flops: int
    latency_ms: float | None
    val_accuracy: float
    reward: float
    paper_reward: float
    reason: str
    seconds: float
    cached: bool
    base: int | None = _optional()  # which base the rollout started from (--shrink-bases > 1)


@dataclass(frozen=True)
class Update(Event):
    """One policy update finished."""

    event: ClassVar[str] = "update"
    stage: str
    update: int
    reward_mean: float
    reward_best: float | None
    baseline: float
    loss: float
    entropy: float
    probs: list[float]
    base_probs: list[float] | None = _optional()


@dataclass(frozen=True)
class Finetune(Event):
    """The fine-tune of a chosen student begins."""

    event: ClassVar[str] = "finetune"
    steps: int
    params: int


@dataclass(frozen=True)
class FinetuneStep(Event):
    """A fine-tune step (told to the display only: not written)."""

    event: ClassVar[str] = "finetune_step"
    step: int


@dataclass(frozen=True)
class Front(Event):
    """The students saved at other sizes (timings left out, so that runs compare equal)."""

    event: ClassVar[str] = "front"
    students: list[dict[str, Any]]


@dataclass(frozen=True)
class Baseline(Event):
    """A baseline run (``n2n baseline``) begins."""

    event: ClassVar[str] = "baseline"
    kind: str  # uniform or scratch
    edits: dict[str, Any]


@dataclass(frozen=True)
class Done(Event):
    """The run finished."""

    event: ClassVar[str] = "done"
    wall_time_s: float
    seconds: dict[str, float] | None = _optional()
