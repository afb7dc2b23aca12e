"""The two stages of the N2N search, as a table: what each decides, which policy decides it, how its actions
become edits of the network.

Stage 1 (``remove``) keeps or removes each layer; stage 2 (``shrink``) picks a keep-fraction for each remaining
layer. Everything else (sampling, rewards, the policy-gradient step, checkpoints) is the same for both and lives in
``n2n.search.loop``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from n2n.errors import ConfigError
from n2n.files import atomic_write, write_json
from n2n.search.policies import BaseChoice, RandomPolicy, RemovalPolicy, ShrinkPolicy
from n2n.search.policy_io import policy_record, read_policy_record
from n2n.search.reinforce import make_baseline
from n2n.search.state import StageState
from n2n.settings import CompressConfig
from n2n.surgery import Analysis, Edits

log = logging.getLogger(__name__)

LearnedPolicy = RemovalPolicy | ShrinkPolicy


def _removals(analysis: Analysis, actions: torch.Tensor, fractions: tuple[float, ...]) -> Edits:
    """Action 0 removes a layer, 1 keeps it (only removable layers can go)."""
    removed = [
        layer.name
        for layer, keep in zip(analysis.layers, actions.tolist(), strict=False)
        if layer.removable and not keep
    ]
    return Edits.make(removed=removed)


def _keep_fractions(analysis: Analysis, actions: torch.Tensor, fractions: tuple[float, ...]) -> Edits:
    """Action i keeps ``fractions[i]`` of a layer's output channels (only shrinkable layers change)."""
    keep = {
        layer.name: fractions[i]
        for layer, i in zip(analysis.layers, actions.tolist(), strict=False)
        if layer.shrinkable
    }
    return Edits.make(keep=keep)


@dataclass(frozen=True)
class Stage:
    """One row of the stage table."""

    name: str
    decides: str
    # a fresh policy and its learning rate; the float is where a shrink policy starts centred (None: as the paper)
    policy: Callable[[CompressConfig, float | None], tuple[LearnedPolicy, float]]
    to_edits: Callable[[Analysis, torch.Tensor, tuple[float, ...]], Edits]
    decidable: Callable[[Analysis], torch.Tensor]  # which layers' actions count


STAGES: dict[str, Stage] = {
    "remove": Stage(
        name="remove",
        decides="keep or remove each layer (Bernoulli per layer, bidirectional LSTM)",
        policy=lambda cfg, centre: (RemovalPolicy(hidden=cfg.removal_hidden), cfg.removal_lr),
        to_edits=_removals,
        decidable=lambda analysis: analysis.removable(),
    ),
    "shrink": Stage(
        name="shrink",
        decides="the keep-fraction of each remaining layer (categorical over --fractions, autoregressive LSTM)",
        policy=lambda cfg, centre: (
            ShrinkPolicy(choices=cfg.fractions, hidden=cfg.shrink_hidden, centre=centre),
            cfg.shrink_lr,
        ),
        to_edits=_keep_fractions,
        decidable=lambda analysis: analysis.shrinkable(),
    ),
}


def actions_to_edits(stage: str, analysis: Analysis, actions: torch.Tensor, fractions: tuple[float, ...]) -> Edits:
    """The edits one rollout's actions stand for (only decidable layers can change)."""
    return STAGES[stage].to_edits(analysis, actions, fractions)


#: Adam learning rate of the choice between stage-2 bases: a handful of logits, which at the policies' 0.01 would move
#: by at most 0.08 in a search of 8 updates and so stay uniform (the paper's appendix gives 0.1 for stage 2)
CHOOSER_LR = 0.1


def new_stage(name: str, cfg: CompressConfig, index: int, bases: int = 1, centre: float | None = None) -> StageState:
    """A fresh stage ``name`` (the ``index``-th of the search) that starts from ``bases`` networks; a shrink
    policy starts centred on the keep-fraction ``centre`` when one is given (see ``ShrinkPolicy``)."""
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + index)
    chooser = BaseChoice(bases, learn=cfg.search == "rl") if bases > 1 else None
    baseline = make_baseline(cfg.advantage, cfg.baseline_decay, cfg.risk_epsilon)
    if cfg.search == "random":
        policy = RandomPolicy(name, cfg.fractions)
        return StageState(name, policy, None, baseline, generator, chooser=chooser)
    torch.manual_seed(cfg.seed * 1000 + index)  # policy initialisation must not depend on what ran before it
    policy, lr = STAGES[name].policy(cfg, centre)
    if cfg.init_policy is not None:
        policy = initial_policy(Path(cfg.init_policy), name, policy)
    groups = [{"params": list(policy.parameters()), "lr": lr}]
    if chooser is not None:
        groups.append({"params": list(chooser.parameters()), "lr": CHOOSER_LR})
    return StageState(name, policy, torch.optim.Adam(groups), baseline, generator, chooser=chooser)


def initial_policy(run_dir: Path, name: str, fresh: LearnedPolicy) -> LearnedPolicy:
    """The stage-``name`` policy saved in an earlier run (``--init-policy``), or ``fresh`` when it has none."""
    config_file = run_dir / f"policy_{name}.json"
    if not config_file.is_file():
        log.warning("%s has no %s policy; stage %s starts from a fresh policy", run_dir, name, name)
        return fresh
    saved = read_policy_record(config_file, name)
    if name == "shrink" and tuple(saved["choices"]) != fresh.choices:
        raise ConfigError(
            f"the shrink policy in {run_dir} chooses from {saved['choices']} but this search uses --fractions "
            f"{list(fresh.choices)}: pass the same --fractions"
        )
    policy = type(fresh).from_config(saved)
    try:
        policy.load_state_dict(load_file(str(run_dir / f"policy_{name}.safetensors")))
    except (OSError, RuntimeError, SafetensorError) as err:
        message = " ".join(str(err).split())[:300]
        raise ConfigError(f"--init-policy: cannot load the {name} policy of {run_dir}: {message}") from None
    return policy


def save_policy(state: StageState, out_dir: Path) -> None:
    """``policy_<stage>.safetensors`` and ``policy_<stage>.json`` in ``out_dir`` (what ``--init-policy`` reads)."""
    with atomic_write(out_dir / f"policy_{state.name}.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in state.policy.state_dict().items()}, str(tmp))
    write_json(out_dir / f"policy_{state.name}.json", policy_record(state.policy.config()))
