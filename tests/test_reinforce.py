import pytest
import torch

from n2n.search.policies import RemovalPolicy, ShrinkPolicy
from n2n.search.reinforce import EmaBaseline, reinforce_loss


def test_baseline_exact():
    b = EmaBaseline(decay=0.5)
    assert b.advantages([1.0, 3.0]) == [-1.0, 1.0]  # centred on the first batch
    b.update([1.0, 3.0])
    assert b.value == 2.0
    b.update([4.0])
    assert b.value == pytest.approx(3.0)
    assert b.advantages([5.0]) == [pytest.approx(2.0)]
    c = EmaBaseline()
    c.load_state_dict(b.state_dict())
    assert (c.decay, c.value) == (0.5, 3.0)


def test_reinforce_loss_exact():
    lp = torch.tensor([-1.0, -2.0], requires_grad=True)
    adv = torch.tensor([1.0, -0.5])
    loss = reinforce_loss(lp, adv)
    assert loss.item() == pytest.approx(-(-1.0 * 1.0 + -2.0 * -0.5) / 2)
    loss.backward()
    assert lp.grad.tolist() == pytest.approx([-0.5, 0.25])
    ent = torch.tensor([2.0, 4.0])
    assert reinforce_loss(lp, adv, ent, 0.1).item() == pytest.approx(loss.item() - 0.3)


def _train(policy, reward_fn, features, decidable, updates, lr):
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    base, gen = EmaBaseline(0.8), torch.Generator().manual_seed(0)
    for _ in range(updates):
        samples = [policy.sample(features, decidable, gen) for _ in range(5)]
        rewards = [reward_fn(s.actions) for s in samples]
        adv = torch.tensor(base.advantages(rewards))
        loss = reinforce_loss(torch.stack([s.log_prob for s in samples]), adv)
        opt.zero_grad()
        loss.backward()
        opt.step()
        base.update(rewards)


def test_removal_policy_learns_to_remove():
    torch.manual_seed(0)
    policy = RemovalPolicy()
    features = torch.randn(4, 12)
    decidable = torch.tensor([True, True, True, False])
    _train(policy, lambda a: float((~a[:3]).float().mean()), features, decidable, 100, 0.03)
    assert policy.keep_probs(features)[:3].max().item() < 0.2


def test_shrink_policy_learns_a_choice():
    torch.manual_seed(0)
    policy = ShrinkPolicy()
    features = torch.randn(3, 12)
    decidable = torch.ones(3, dtype=torch.bool)
    target = policy.choices.index(0.5)
    _train(policy, lambda a: float((a == target).float().mean()), features, decidable, 100, 0.03)
    gen = torch.Generator().manual_seed(1)
    hits = sum(int((policy.sample(features, decidable, gen).actions == target).all()) for _ in range(20))
    assert hits >= 16
