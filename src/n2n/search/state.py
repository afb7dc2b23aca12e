"""What a search carries from one policy update to the next, and how it is saved and restored.

:class:`StageState` is one stage's learner (policy, optimizer, baseline, random generator, best so far);
:class:`SearchContext` is what a stage's updates read (the network it starts from, every evaluated student, the
constraints); :class:`SearchState` is the whole search between two updates. ``SearchState.save`` writes it to a
checkpoint and ``restore`` reads it back, so resuming is "restore the state, run the same loop".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from n2n.search.candidate import CandidateResult, Evaluator
from n2n.search.checkpoint import (
    Checkpoint,
    optimizer_from_flat,
    optimizer_to_flat,
    result_from_dict,
    result_to_dict,
    write_checkpoint,
)
from n2n.search.policies import BaseChoice, RandomPolicy, RemovalPolicy, ShrinkPolicy
from n2n.search.reinforce import Baseline
from n2n.search.reward import INVALID_REWARD, Constraints, Target
from n2n.surgery import Analysis, Edits

Policy = RemovalPolicy | ShrinkPolicy | RandomPolicy


@dataclass
class StageState:
    """The mutable state of one stage: enough to continue it after an interruption."""

    name: str  # "remove" | "shrink"
    policy: Policy
    optimizer: torch.optim.Optimizer | None  # None for the random-search baseline (nothing to learn)
    baseline: Baseline
    generator: torch.Generator
    update: int = 0
    best: CandidateResult | None = None
    best_reward: float = INVALID_REWARD - 1.0  # below any reward, so the first valid candidate becomes best
    chooser: BaseChoice | None = None  # which base a rollout starts from, when the stage has several
    ranked: dict[str, float] = field(default_factory=dict)  # valid student key -> its reward, to pick the next bases

    def top(self, k: int) -> list[str]:
        """The keys of the ``k`` best valid students of this stage (ties: by key, so the choice is reproducible)."""
        return sorted(self.ranked, key=lambda key: (-self.ranked[key], key))[:k]


@dataclass
class SearchContext:
    """What a stage reads but does not change."""

    analysis: Analysis  # the layers the policy decides about (teacher for stage 1, stage-1 student for stage 2)
    base: Edits  # edits already applied to the teacher before this stage
    evaluator: Evaluator
    cache: dict[str, CandidateResult]  # architecture key -> result, shared by both stages
    constraints: Constraints
    fractions: tuple[float, ...]
    entropy_coef: float = 0.0
    max_draws: int = 1  # an update draws up to max_draws x rollouts times to find rollouts new students
    others: tuple[tuple[Edits, Analysis], ...] = ()  # further bases a rollout may start from (--shrink-bases)
    seconds: dict[str, float] = field(default_factory=dict)
    target: Target = Target()  # --target-*: the reward is accuracy under the target (MnasNet's form)
    teacher_accuracy: float = 1.0  # the reward's accuracy normaliser, for the target form
    stage_targets: dict[str, Target] = field(default_factory=dict)  # a stage that aims nearer (--removal-share)
    narrow: Callable[[Edits], Edits] | None = None  # removal -> removal narrowed to the target (--removal-scoring)
    fit: Callable[[Edits], Edits] | None = None  # widths -> the same profile scaled to the target (--shrink-scoring)

    def reward(self, result: CandidateResult, stage: str | None = None) -> float:
        """The reward of ``result`` before constraints: the paper's, or the target form when a target is set
        (``stage``'s own target where it has one, else the run's)."""
        target = self.stage_targets.get(stage, self.target) if stage is not None else self.target
        if not target.set or result.reward == INVALID_REWARD:  # invalid, or not smaller than the teacher
            return result.reward
        return target.reward(result.val_accuracy, self.teacher_accuracy, result.params, result.macs, result.latency_ms)


@dataclass
class SearchState:
    """The search between two policy updates: which stage runs, its learner, and what the stages share.

    Attributes:
        index: which stage of the run's stage list runs (0: the first).
        stage: that stage's learner (None until the stage is set up).
        ctx: what the stage's updates read: its base network and the layers it decides on, every evaluated student
            (``ctx.cache``), where the time went (``ctx.seconds``).
        others: further bases of the stage (``--shrink-bases``).
        best: the best student of the stages finished so far.
    """

    index: int
    stage: StageState | None
    ctx: SearchContext
    others: list[Edits] = field(default_factory=list)
    best: CandidateResult | None = None

    def save(self, path: Path, events: int, elapsed: float) -> None:
        """Write the checkpoint ``path``; ``events`` lines of the event log and ``elapsed`` seconds belong to it."""
        state = self.stage
        assert state is not None, "a search is saved between the updates of a stage"
        optim, groups, scalars = optimizer_to_flat(state.optimizer) if state.optimizer else ({}, [], {})
        tensors = {f"policy.{k}": v for k, v in state.policy.state_dict().items()}
        if state.chooser is not None:
            tensors.update({f"chooser.{k}": v for k, v in state.chooser.state_dict().items()})
        tensors.update(optim)
        tensors["rng.stage"] = state.generator.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        meta = {
            "stage_index": self.index,
            "stage": state.name,
            "update": state.update,
            "baseline": state.baseline.state_dict(),
            "stage_best": None if state.best is None else state.best.edits.key(),
            "stage_best_reward": state.best_reward,
            "best": None if self.best is None else self.best.edits.key(),
            "base": self.ctx.base.to_dict(),
            "others": [edits.to_dict() for edits in self.others],
            "stage_ranked": state.ranked,
            "cache": [result_to_dict(r) for r in self.ctx.cache.values()],
            "events": events,
            "elapsed": elapsed,
            "seconds": self.ctx.seconds,
            "optim_groups": groups,
            "optim_scalars": scalars,
        }
        write_checkpoint(path, meta, tensors)

    def restore(self, ckpt: Checkpoint, stages: list[str]) -> None:
        """Take the search-wide part of ``ckpt`` (stage index, base networks, evaluated students, best, times) for a
        run of ``stages``; the stage's learner is loaded by `restore_stage` once the stage is set up again.

        Raises KeyError, TypeError, ValueError, IndexError for a damaged checkpoint.
        """
        meta = ckpt.meta
        self.ctx.cache = {r.edits.key(): r for r in map(result_from_dict, meta["cache"])}
        self.ctx.base = Edits.from_dict(meta["base"])
        self.ctx.seconds.clear()
        self.ctx.seconds.update(meta["seconds"])
        self.others = [Edits.from_dict(e) for e in meta.get("others", [])]
        self.best = None if meta["best"] is None else self.ctx.cache[meta["best"]]
        self.index = meta["stage_index"]
        if not 0 <= self.index < len(stages) or stages[self.index] != meta["stage"]:
            raise ValueError(f"stage {meta['stage']!r} at index {self.index} is not one of {stages}")

    def restore_stage(self, ckpt: Checkpoint) -> None:
        """Load the stage learner's saved weights, optimizer, baseline, random states and best into ``self.stage``
        (made afresh, as for a new stage)."""
        meta, stage = ckpt.meta, self.stage
        assert stage is not None
        stage.policy.load_state_dict(ckpt.prefixed("policy"))
        if stage.chooser is not None:
            stage.chooser.load_state_dict(ckpt.prefixed("chooser"))
        stage.ranked = dict(meta.get("stage_ranked", {}))
        if stage.optimizer is not None:
            optimizer_from_flat(stage.optimizer, ckpt)
        stage.generator.set_state(ckpt.tensors["rng.stage"])
        torch.set_rng_state(ckpt.tensors["rng.torch"])
        stage.baseline.load_state_dict(meta["baseline"])
        stage.update = meta["update"]
        stage.best = None if meta["stage_best"] is None else self.ctx.cache[meta["stage_best"]]
        stage.best_reward = meta["stage_best_reward"]
