import pytest
import torch

from n2n.search.policies import RemovalPolicy, ShrinkPolicy
from n2n.search.reinforce import BatchBaseline, EmaBaseline, RiskSeekingBaseline, make_baseline, reinforce_loss


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


def test_batch_baseline_exact():
    b = BatchBaseline()
    # mean 2, population std sqrt(2/3): the advantages are centred and unit-scale, whatever the rewards' range
    assert b.advantages([1.0, 2.0, 3.0]) == pytest.approx([-(1.5**0.5), 0.0, 1.5**0.5])
    assert b.advantages([0.971, 0.972, 0.973]) == pytest.approx([-(1.5**0.5), 0.0, 1.5**0.5])
    assert b.value == pytest.approx(0.972)
    assert b.advantages([0.5, 0.5]) == [0.0, 0.0]  # nothing to learn from equal rewards
    c = BatchBaseline()
    c.load_state_dict(b.state_dict())
    assert c.value == 0.5
    assert isinstance(make_baseline("batch"), BatchBaseline)
    with pytest.raises(ValueError, match="advantage must be one of"):
        make_baseline("mean")


def test_risk_seeking_baseline_exact():
    b = RiskSeekingBaseline(epsilon=0.25)
    # first batch: the 0.75 quantile of [0, 1, 2, 3, 4] is 3, so only 4 (and 3, at zero) pass
    assert b.advantages([0.0, 1.0, 2.0, 3.0, 4.0]) == [0.0, 0.0, 0.0, 0.0, 1.0]
    assert b.value == 3.0
    b.update([0.0, 1.0, 2.0, 3.0, 4.0])
    # the threshold runs over the stage's history and the new batch: 0.75 quantile of 0..4 plus [5, 1, 1] is 3.25
    assert b.advantages([5.0, 1.0, 1.0]) == [pytest.approx(1.75), 0.0, 0.0]
    c = RiskSeekingBaseline(0.5)
    c.load_state_dict(b.state_dict())
    assert (c.epsilon, c.history, c.value) == (0.25, [0.0, 1.0, 2.0, 3.0, 4.0], 3.25)
    assert isinstance(make_baseline("ema"), EmaBaseline) and isinstance(make_baseline("risk"), RiskSeekingBaseline)
    with pytest.raises(ValueError, match="epsilon"):
        RiskSeekingBaseline(0.0)


def test_reinforce_loss_exact():
    lp = torch.tensor([-1.0, -2.0], requires_grad=True)
    adv = torch.tensor([1.0, -0.5])
    loss = reinforce_loss(lp, adv)
    assert loss.item() == pytest.approx(-(-1.0 * 1.0 + -2.0 * -0.5) / 2)
    loss.backward()
    assert lp.grad.tolist() == pytest.approx([-0.5, 0.25])
    ent = torch.tensor([2.0, 4.0])
    assert reinforce_loss(lp, adv, ent, 0.1).item() == pytest.approx(loss.item() - 0.3)


def _train(policy, reward_fn, features, decidable, updates, lr, base=None):
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    base, gen = base or EmaBaseline(0.8), torch.Generator().manual_seed(0)
    for _ in range(updates):
        samples = [policy.sample(features, decidable, gen) for _ in range(5)]
        rewards = [reward_fn(s.actions) for s in samples]
        adv = torch.tensor(base.advantages(rewards))
        loss = reinforce_loss(torch.stack([s.log_prob for s in samples]), adv)
        opt.zero_grad()
        loss.backward()
        opt.step()
        base.update(rewards)


@pytest.mark.parametrize(
    "base", [None, RiskSeekingBaseline(0.2), BatchBaseline()], ids=["ema", "risk-seeking", "batch"]
)
def test_removal_policy_learns_to_remove(base):
    torch.manual_seed(0)
    policy = RemovalPolicy()
    features = torch.randn(4, 12)
    decidable = torch.tensor([True, True, True, False])
    _train(policy, lambda a: float((~a[:3]).float().mean()), features, decidable, 100, 0.03, base)
    assert policy.keep_probs(features)[:3].max().item() < 0.2


@pytest.mark.parametrize("base", [None, BatchBaseline()], ids=["ema", "batch"])
def test_shrink_policy_learns_a_choice(base):
    torch.manual_seed(0)
    policy = ShrinkPolicy()
    features = torch.randn(3, 12)
    decidable = torch.ones(3, dtype=torch.bool)
    target = policy.choices.index(0.5)
    _train(policy, lambda a: float((a == target).float().mean()), features, decidable, 100, 0.03, base)
    gen = torch.Generator().manual_seed(1)
    hits = sum(int((policy.sample(features, decidable, gen).actions == target).all()) for _ in range(20))
    assert hits >= 16
