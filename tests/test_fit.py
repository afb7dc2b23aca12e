"""The one training loop: batch orders, the loop itself, and that the teacher goes through it."""

import torch
import torch.nn.functional as F
from torch import nn

from n2n.train.fit import Diverged, epoch_batches, fit, step_batches


def test_epoch_batches_cover_every_example_once_per_pass():
    gen = torch.Generator().manual_seed(0)
    batches = list(epoch_batches(10, 4, 2, gen))
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    for first in (0, 3):
        assert sorted(torch.cat(batches[first : first + 3]).tolist()) == list(range(10))
    assert not torch.equal(torch.cat(batches[:3]), torch.cat(batches[3:]))  # a new order each pass
    dropped = list(epoch_batches(10, 4, 2, torch.Generator().manual_seed(0), drop_last=True))
    assert [len(b) for b in dropped] == [4, 4, 4, 4]


def test_step_batches_are_full_and_reshuffle_at_the_end_of_a_pass():
    batches = list(step_batches(10, 4, 5, torch.Generator().manual_seed(0)))
    assert [len(b) for b in batches] == [4] * 5
    assert len(set(torch.cat(batches[:2]).tolist())) == 8  # one pass: no repeats, the remainder of 2 dropped
    assert list(step_batches(3, 8, 2, torch.Generator().manual_seed(0)))[0].numel() == 3  # fewer than a batch: all


def test_fit_steps_once_per_batch_and_returns_the_losses():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, y = torch.randn(32, 3), torch.randint(0, 2, (32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    seen = []
    losses = fit(model, [(x, y)] * 20, F.cross_entropy, opt, on_step=seen.append)
    assert seen == list(range(20)) and len(losses) == 20
    assert losses[-1] < losses[0] and model.training


def test_fit_with_the_guard_stops_a_diverging_run():
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x, t = torch.randn(32, 3), torch.randn(32, 2)
    opt = torch.optim.SGD(model.parameters(), lr=50.0)  # far too large: the squared error explodes
    loss = lambda out, target: (out - target).pow(2).sum(1).mean()  # noqa: E731
    try:
        fit(model, [(x, t)] * 50, loss, opt, guard=True)
    except Diverged as err:
        assert "step" in str(err)
    else:
        raise AssertionError("a diverging run was not stopped")
    torch.manual_seed(0)
    free = nn.Linear(3, 2)
    losses = fit(free, [(x, t)] * 50, loss, torch.optim.SGD(free.parameters(), lr=50.0))  # unguarded: runs on
    assert len(losses) == 50 and not losses[-1] < 10 * losses[0]  # diverged (or NaN) and went on


def test_keep_best_says_whether_it_kept_the_weights():
    from n2n.train.finetune import KeepBest

    model = nn.Linear(2, 1)
    best, later = KeepBest(), KeepBest(ties=True)
    assert best.offer(model, 0.5) and not best.offer(model, 0.5) and not best.offer(model, 0.4)
    assert later.offer(model, 0.5) and later.offer(model, 0.5) and best.offer(model, 0.6)
