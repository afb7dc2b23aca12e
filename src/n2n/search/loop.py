"""The N2N search: the stages one after the other, and one policy update of a stage.

`run_stages` reads top to bottom as the search runs: each stage (see the table in ``n2n.search.stages``) starts from
the best student of the stage before, runs ``--updates`` policy updates, checkpoints after each, and hands its best
students to the next stage. `run_update` is one update as in the paper (Algorithm 1): sample ``m`` rollouts from the
policy, turn each into edits of the network, evaluate the students (through an :class:`Evaluator`, reusing results
for architectures already seen), compute rewards, and take a REINFORCE step. Everything the loop changes lives in
:class:`SearchState`, so resuming is "restore the state, run the same loop".
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch

from n2n.errors import N2NError
from n2n.events import Candidate, Event, Stage, Update
from n2n.runlog import EventLog
from n2n.search.candidate import CandidateResult
from n2n.search.narrow import depth_of, uniform_keep
from n2n.search.policies import RemovalPolicy
from n2n.search.reinforce import reinforce_loss
from n2n.search.reward import constrained_reward
from n2n.search.stages import STAGES, new_stage, save_policy
from n2n.search.state import SearchContext, SearchState, StageState
from n2n.settings import CompressConfig
from n2n.surgery import Analysis, Edits

log = logging.getLogger(__name__)

EventSink = Callable[[Event], None]  # the run's EventLog


def run_stages(
    state: SearchState,
    cfg: CompressConfig,
    emit: EventLog,
    analyzed: Callable[[Edits], Analysis],
    save: Callable[[SearchState], None],
    out: Path,
    restore: Callable[[SearchState], None] | None = None,
) -> CandidateResult | None:
    """Run the stages of ``cfg`` from ``state.index`` on; the best student of the last stage that found one.

    Args:
        analyzed: the layers of the student that edits of the teacher make (what the next stage decides on).
        save: checkpoints ``state``; called when a stage starts and after every update.
        out: the run directory (policies are saved there; errors name its event log).
        restore: for a resumed search, loads the saved learner into ``state.stage`` once the first stage is set up
            again (`SearchState.restore_stage`), so that the stage continues where it stopped.
    """
    stages, ctx, first = cfg.stage_list(), state.ctx, state.index
    for index in range(first, len(stages)):
        name = stages[index]
        if ctx.base.removed:
            ctx.analysis = analyzed(ctx.base)
        ctx.others = tuple((edits, analyzed(edits)) for edits in state.others)
        # after a narrowed removal stage, the shrink policy starts around the width that met the target
        centre = uniform_keep(state.best.edits) if ctx.narrow is not None and state.best is not None else None
        state.index, state.stage = index, new_stage(name, cfg, index, 1 + len(state.others), centre)
        stage = state.stage
        if restore is not None and index == first:
            restore(state)
            emit.tell(Stage(name, cfg.updates, completed=stage.update))  # the log has it: the display only
        else:
            emit(Stage(name, cfg.updates, layers=len(ctx.analysis.layers)))
            save(state)
        while stage.update < cfg.updates:
            results = run_update(stage, ctx, cfg.rollouts, emit)
            save(state)
            check_failures(stage, results, out)
        if cfg.search == "rl":
            save_policy(stage, out)
        if stage.best is None:
            log.warning(
                "stage %s found no valid student that meets the constraints; the next stage starts from the "
                "previous best",
                name,
            )
            continue
        # the next stage starts from the best students (from their removals alone when they were scored narrowed)
        start = depth_of if name == "remove" and ctx.narrow is not None else (lambda edits: edits)
        state.best, ctx.base = stage.best, start(stage.best.edits)
        chosen = stage.best.edits.key()
        ranked = [start(ctx.cache[k].edits) for k in stage.top(cfg.shrink_bases) if k != chosen]
        state.others = ranked[: cfg.shrink_bases - 1]
    return state.best


FAILURE_PATIENCE = 3  # policy updates in a row in which every candidate failed before a search gives up


def check_failures(state: StageState, results: list[CandidateResult], out: Path) -> None:
    """Stop a stage that has produced nothing but invalid students for FAILURE_PATIENCE updates."""
    if state.best is not None or state.update < FAILURE_PATIENCE:
        return
    reasons = Counter(r.reason for r in results if r.reason)
    common = "; ".join(f"{reason} ({n}x)" for reason, n in reasons.most_common(3))
    raise N2NError(
        f"stage {state.name}: every candidate of the first {state.update} policy updates failed ({common}); "
        f"details in {out / 'events.jsonl'}"
    )


def run_update(state: StageState, ctx: SearchContext, rollouts: int, emit: EventSink) -> list[CandidateResult]:
    """One policy update: sample ``rollouts`` students (more draws when ``ctx.max_draws`` > 1 and some were seen
    before), evaluate, reward, REINFORCE step over every draw. Returns the results."""
    bases = [(ctx.base, ctx.analysis), *ctx.others]
    features = [analysis.features() for _, analysis in bases]
    stage = STAGES[state.name]
    decidable = [stage.decidable(analysis) for _, analysis in bases]

    # -- sample actions. A student evaluated before costs nothing (its cached reward still trains the policy), so with
    # max_draws > 1 the update keeps drawing until it has `rollouts` new students, or max_draws x rollouts draws.
    # With several bases a rollout first picks its base; the choice's log-probability joins the policy's
    samples, edits, picks, new = [], [], [], set()
    scored_as = {"remove": ctx.narrow, "shrink": ctx.fit}.get(state.name)  # the size it is scored at, if set
    while len(new) < rollouts and len(samples) < rollouts * ctx.max_draws:
        b, log_prob, entropy = (0, 0.0, 0.0) if state.chooser is None else state.chooser.sample(state.generator)
        sample = state.policy.sample(features[b], decidable[b], state.generator)
        sample = sample._replace(log_prob=sample.log_prob + log_prob, entropy=sample.entropy + entropy)
        samples.append(sample)
        picks.append(b)
        base, analysis = bases[b]
        edit = base.then(stage.to_edits(analysis, sample.actions, ctx.fractions))
        edits.append(edit if scored_as is None else scored_as(edit))
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
    if scored_as is not None:  # a latency target: what they measured calibrates the next update's narrowing
        scored_as.observe(fresh_results)
    results = [ctx.cache[e.key()] for e in edits]

    # -- rewards (constraints applied on top of the paper reward)
    rewards, feasible = [], []
    for r in results:
        violated = r.valid and ctx.constraints.violated(r.params, r.val_accuracy, r.macs, r.latency_ms)
        feasible.append(r.valid and not violated)
        rewards.append(
            constrained_reward(ctx.reward(r, state.name), violated, ctx.constraints.mode, state.update)
            if r.valid
            else r.reward
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
        base = picks[k] if state.chooser is not None else None
        emit(candidate_event(state.name, state.update, k, result, rew, sample.actions.tolist(), key not in fresh, base))
        fresh.discard(key)
        if ok:  # a student that breaks a constraint is never a stage's best, in soft mode neither
            state.ranked[key] = max(rew, state.ranked.get(key, rew))
            if rew > state.best_reward:
                state.best, state.best_reward = result, rew
    emit(
        Update(
            state.name,
            state.update,
            reward_mean=sum(rewards) / len(rewards),
            reward_best=state.best_reward if state.best is not None else None,
            baseline=baseline_before,
            loss=loss.item(),
            entropy=entropies.mean().item(),
            probs=_policy_probs(state, features[0]),
            base_probs=state.chooser.probs() if state.chooser is not None else None,
        )
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
    stage: str,
    update: int,
    rollout: int,
    result: CandidateResult,
    reward: float,
    actions: list,
    cached: bool,
    base: int | None = None,
) -> Candidate:
    """The event-log record of one evaluated candidate (a cached one took no time)."""
    return Candidate(
        stage,
        update,
        rollout,
        actions=[int(a) for a in actions],
        edits=result.edits.to_dict(),
        params=result.params,
        macs=result.macs,
        flops=2 * result.macs,
        latency_ms=result.latency_ms,
        val_accuracy=result.val_accuracy,
        reward=reward,
        paper_reward=result.reward,
        reason=result.reason,
        seconds=round(result.seconds, 4) if not cached else 0.0,
        cached=cached,
        base=base,
    )
