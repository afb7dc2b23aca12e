"""``--tensorboard DIR``: the search's scalars as TensorBoard event files, written as the events stream in.

Steps are computed from the events themselves (stage, update, rollout), not counted, so a resumed search continues
its curves where the interrupted one stopped.
"""

from __future__ import annotations

from typing import Any

from n2n.errors import ConfigError

#: the stages in the order a search runs them (``n2n.settings.STAGES``; reporting reads events, not the search)
STAGE_ORDER = ("remove", "shrink")


def _summary_writer() -> type:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "--tensorboard needs the tensorboard package: pip install 'n2n[tensorboard]' (or drop --tensorboard)"
        ) from None
    return SummaryWriter


def update_step(stage: str, update: int, updates: int) -> int:
    """Global step of a policy update, stage 1's then stage 2's: ``STAGE_ORDER.index(stage) * updates + update``."""
    return STAGE_ORDER.index(stage) * updates + update


class TensorBoardListener:
    """An event listener that writes ``reward/mean``, ``reward/best``, ``policy/entropy`` per policy update and
    ``candidate/val_acc``, ``candidate/params``, ``candidate/reward`` per newly evaluated valid candidate.

    Args:
        log_dir: the TensorBoard log directory.
        updates: policy updates per stage (``--updates``).
        rollouts: candidates per update (``--rollouts``); candidate ``k`` of update step ``u`` is step
            ``u * rollouts + k``.
    """

    def __init__(self, log_dir: str, updates: int, rollouts: int) -> None:
        self.writer = _summary_writer()(log_dir=log_dir)
        self.updates, self.rollouts = updates, rollouts

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "update":
            step = update_step(event["stage"], event["update"], self.updates)
            self.writer.add_scalar("reward/mean", event["reward_mean"], step)
            if event.get("reward_best") is not None:
                self.writer.add_scalar("reward/best", event["reward_best"], step)
            self.writer.add_scalar("policy/entropy", event["entropy"], step)
            self.writer.flush()
        elif kind == "candidate" and not event.get("cached") and not event.get("reason"):
            step = update_step(event["stage"], event["update"], self.updates) * self.rollouts + event["rollout"]
            self.writer.add_scalar("candidate/val_acc", event["val_accuracy"], step)
            self.writer.add_scalar("candidate/params", event["params"], step)
            self.writer.add_scalar("candidate/reward", event["reward"], step)

    def close(self) -> None:
        self.writer.close()
