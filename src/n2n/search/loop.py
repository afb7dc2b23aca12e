"""One stage of the N2N search: sample students, evaluate them, reward, update the policy.

The loop reads top to bottom as in the paper (Algorithm 1): for each policy update, sample ``m`` rollouts from the
policy, turn each into edits of the network, evaluate the students (through an :class:`Evaluator`, reusing results
for architectures already seen), compute rewards, and take a REINFORCE step with an exponential-moving-average
baseline. Everything the loop changes lives in :class:`StageState`, so a stage can be checkpointed between updates.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from n2n.search.candidate import CandidateResult, Evaluator
from n2n.search.policies import BaseChoice, RandomPolicy, RemovalPolicy, ShrinkPolicy
from n2n.search.reinforce import Baseline, reinforce_loss
from n2n.search.reward import INVALID_REWARD, Constraints, Target, constrained_reward
from n2n.surgery import Analysis, Edits

Policy = RemovalPolicy | ShrinkPolicy | RandomPolicy
EventSink = Callable[[dict[str, Any]], None]


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

    def reward(self, result: CandidateResult) -> float:
        """The reward of ``result`` before constraints: the paper's, or the target form when a target is set."""
        if not self.target.set or result.reward == INVALID_REWARD:  # invalid, or not smaller than the teacher
            return result.reward
        return self.target.reward(
            result.val_accuracy, self.teacher_accuracy, result.params, result.macs, result.latency_ms
        )


def actions_to_edits(stage: str, analysis: Analysis, actions: torch.Tensor, fractions: tuple[float, ...]) -> Edits:
    """The edits one rollout's actions stand for (only decidable layers can change)."""
    if stage == "remove":
        removed = [
            layer.name
            for layer, keep in zip(analysis.layers, actions.tolist(), strict=False)
            if layer.removable and not keep
        ]
        return Edits.make(removed=removed)
    keep = {
        layer.name: fractions[i]
        for layer, i in zip(analysis.layers, actions.tolist(), strict=False)
        if layer.shrinkable
    }
    return Edits.make(keep=keep)


def run_update(state: StageState, ctx: SearchContext, rollouts: int, emit: EventSink) -> list[CandidateResult]:
    """One policy update: sample ``rollouts`` students (more draws when ``ctx.max_draws`` > 1 and some were seen
    before), evaluate, reward, REINFORCE step over every draw. Returns the results."""
    bases = [(ctx.base, ctx.analysis), *ctx.others]
    features = [analysis.features() for _, analysis in bases]
    decidable = [a.removable() if state.name == "remove" else a.shrinkable() for _, a in bases]

    # -- sample actions. A student evaluated before costs nothing (its cached reward still trains the policy), so with
    # max_draws > 1 the update keeps drawing until it has `rollouts` new students, or max_draws x rollouts draws.
    # With several bases a rollout first picks its base; the choice's log-probability joins the policy's
    samples, edits, picks, new = [], [], [], set()
    while len(new) < rollouts and len(samples) < rollouts * ctx.max_draws:
        b, log_prob, entropy = (0, 0.0, 0.0) if state.chooser is None else state.chooser.sample(state.generator)
        sample = state.policy.sample(features[b], decidable[b], state.generator)
        sample = sample._replace(log_prob=sample.log_prob + log_prob, entropy=sample.entropy + entropy)
        samples.append(sample)
        picks.append(b)
        base, analysis = bases[b]
        edits.append(base.then(actions_to_edits(state.name, analysis, sample.actions, ctx.fractions)))
        if edits[-1].key() not in ctx.cache:
            new.add(edits[-1].key())

    # -- build and evaluate students (new architectures only, each once; parallel evaluators start the costliest first)
    by_key = {e.key(): e for e in edits}
    todo = list(dict.fromkeys(e.key() for e in edits if e.key() not in ctx.cache))
    t0 = time.perf_counter()
    fresh_results = ctx.evaluator.evaluate([by_key[k] for k in todo])
    for result in fresh_results:
        ctx.cache[result.edits.key()] = result
    _account(ctx.seconds, time.perf_counter() - t0, fresh_results)
    results = [ctx.cache[e.key()] for e in edits]

    # -- rewards (constraints applied on top of the paper reward)
    rewards, feasible = [], []
    for r in results:
        violated = r.valid and ctx.constraints.violated(r.params, r.val_accuracy, r.macs, r.latency_ms)
        feasible.append(r.valid and not violated)
        rewards.append(
            constrained_reward(ctx.reward(r), violated, ctx.constraints.mode, state.update) if r.valid else r.reward
        )

    # -- policy update: grad J = 1/m sum_k grad log pi(a^k) (R_k - b)
    t0 = time.perf_counter()
    advantages = torch.tensor(state.baseline.advantages(rewards), dtype=torch.float32)
    log_probs = torch.stack([s.log_prob for s in samples])
    entropies = torch.stack([s.entropy for s in samples])
    loss = reinforce_loss(log_probs, advantages, entropies, ctx.entropy_coef)
    if state.optimizer is not None and loss.requires_grad:  # no gradient when the stage has nothing to decide
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
    baseline_before = state.baseline.value
    state.baseline.update(rewards)
    ctx.seconds["policy"] = ctx.seconds.get("policy", 0.0) + time.perf_counter() - t0

    # -- log, track the best
    fresh = set(todo)
    for k, (result, rew, ok, sample) in enumerate(zip(results, rewards, feasible, samples, strict=False)):
        key = result.edits.key()
        event = candidate_event(state.name, state.update, k, result, rew, sample.actions.tolist(), key not in fresh)
        if state.chooser is not None:
            event["base"] = picks[k]
        emit(event)
        fresh.discard(key)
        if ok:  # a student that breaks a constraint is never a stage's best, in soft mode neither
            state.ranked[key] = max(rew, state.ranked.get(key, rew))
            if rew > state.best_reward:
                state.best, state.best_reward = result, rew
    emit(
        {
            "event": "update",
            "stage": state.name,
            "update": state.update,
            "reward_mean": sum(rewards) / len(rewards),
            "reward_best": state.best_reward if state.best is not None else None,
            "baseline": baseline_before,
            "loss": loss.item(),
            "entropy": entropies.mean().item(),
            "probs": _policy_probs(state, features[0]),
            **({"base_probs": state.chooser.probs()} if state.chooser is not None else {}),
        }
    )
    state.update += 1
    return results


def _account(seconds: dict[str, float], wall: float, results: list[CandidateResult]) -> None:
    """Split the wall time of a batch of candidates into training and validation scoring.

    Workers run in parallel, so each part gets its share of the batch's wall time: the share of the candidates'
    own (per-process) seconds that scoring took.
    """
    busy = sum(r.seconds for r in results)
    scoring = wall * sum(r.eval_seconds for r in results) / busy if busy > 0 else 0.0
    seconds["candidates"] = seconds.get("candidates", 0.0) + wall - scoring
    seconds["evaluation"] = seconds.get("evaluation", 0.0) + scoring


@torch.no_grad()
def _policy_probs(state: StageState, features: torch.Tensor) -> list[float]:
    """Removal: keep-probability per layer; shrink: nothing cheap to summarise (chosen fractions are in events)."""
    if isinstance(state.policy, RemovalPolicy):
        return [round(p, 4) for p in state.policy.keep_probs(features).tolist()]
    return []


def candidate_event(
    stage: str, update: int, rollout: int, result: CandidateResult, reward: float, actions: list, cached: bool
) -> dict[str, Any]:
    """The ``events.jsonl`` record of one evaluated candidate."""
    return {
        "event": "candidate",
        "stage": stage,
        "update": update,
        "rollout": rollout,
        "actions": [int(a) for a in actions],
        "edits": result.edits.to_dict(),
        "params": result.params,
        "macs": result.macs,
        "flops": 2 * result.macs,
        "latency_ms": result.latency_ms,
        "val_accuracy": result.val_accuracy,
        "reward": reward,
        "paper_reward": result.reward,
        "reason": result.reason,
        "seconds": round(result.seconds, 4) if not cached else 0.0,
        "cached": cached,
    }
