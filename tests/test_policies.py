import math

import pytest
import torch

from n2n.search.policies import RemovalPolicy, ShrinkPolicy
from n2n.surgery import FEATURE_DIM


@pytest.mark.parametrize("T", [1, 3, 17])
@pytest.mark.parametrize("cls", [RemovalPolicy, ShrinkPolicy])
def test_shapes_and_recomputed_log_prob(cls, T):
    torch.manual_seed(0)
    policy = cls()
    f = torch.randn(T, FEATURE_DIM)
    decidable = torch.ones(T, dtype=torch.bool)
    s = policy.sample(f, decidable, torch.Generator().manual_seed(0))
    assert s.actions.shape == (T,)
    lp, ent = policy.log_prob(f, s.actions, decidable)
    assert lp.item() == pytest.approx(s.log_prob.item(), abs=1e-5)
    assert ent.item() == pytest.approx(s.entropy.item(), abs=1e-5)
    assert lp.item() < 0


@pytest.mark.parametrize("cls", [RemovalPolicy, ShrinkPolicy])
def test_sampling_is_deterministic(cls):
    torch.manual_seed(0)
    policy = cls()
    f = torch.randn(6, FEATURE_DIM)
    d = torch.ones(6, dtype=torch.bool)
    a = [policy.sample(f, d, torch.Generator().manual_seed(7)).actions.tolist() for _ in range(2)]
    assert a[0] == a[1]


def test_all_parameters_get_gradients():
    torch.manual_seed(0)
    for policy in (RemovalPolicy(), ShrinkPolicy()):
        s = policy.sample(
            torch.randn(5, FEATURE_DIM), torch.ones(5, dtype=torch.bool), torch.Generator().manual_seed(0)
        )
        s.log_prob.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in policy.parameters())


def test_removal_log_prob_matches_manual_and_ignores_fixed_layers():
    torch.manual_seed(0)
    policy = RemovalPolicy()
    f = torch.randn(3, FEATURE_DIM)
    decidable = torch.tensor([True, False, True])
    p = policy.keep_probs(f).detach()
    actions = torch.tensor([True, True, False])
    lp, _ = policy.log_prob(f, actions, decidable)
    assert lp.item() == pytest.approx(math.log(p[0]) + math.log(1 - p[2]), abs=1e-5)
    s = policy.sample(f, decidable, torch.Generator().manual_seed(0))
    assert bool(s.actions[1])  # a fixed layer is always kept
    assert 0.57 < p.mean().item() < 0.63  # a fresh policy keeps a layer with probability sigmoid(0.4) = 0.6


def test_shrink_fixed_steps_are_full_and_choices_map_to_fractions():
    torch.manual_seed(0)
    policy = ShrinkPolicy(choices=(0.25, 0.5, 1.0))
    f = torch.randn(4, FEATURE_DIM)
    d = torch.tensor([False, True, False, True])
    s = policy.sample(f, d, torch.Generator().manual_seed(3))
    assert s.actions[0].item() == 2 and s.actions[2].item() == 2
    assert policy.fractions(s.actions)[0] == 1.0
    clone = ShrinkPolicy.from_config(policy.config())
    clone.load_state_dict(policy.state_dict())
    assert clone.log_prob(f, s.actions, d)[0].item() == pytest.approx(s.log_prob.item(), abs=1e-6)


def test_base_choice_learns_towards_the_rewarded_base_and_random_stays_uniform():
    from n2n.search.policies import BaseChoice

    torch.manual_seed(0)
    choice = BaseChoice(3)
    gen = torch.Generator().manual_seed(1)
    draws = [choice.sample(gen) for _ in range(300)]
    counts = [sum(d[0] == b for d in draws) for b in range(3)]
    assert min(counts) > 70  # uniform at the start
    index, log_prob, entropy = draws[0]
    assert log_prob.item() == pytest.approx(math.log(1 / 3))
    assert entropy.item() == pytest.approx(math.log(3))
    again = torch.Generator().manual_seed(1)
    assert [choice.sample(again)[0] for _ in range(20)] == [d[0] for d in draws[:20]]
    # REINFORCE with base 2 rewarded: its probability grows
    opt = torch.optim.Adam(choice.parameters(), lr=0.1)
    for _ in range(10):
        samples = [choice.sample(gen) for _ in range(5)]
        loss = -sum(lp * (1.0 if b == 2 else -0.5) for b, lp, _ in samples) / 5
        opt.zero_grad()
        loss.backward()
        opt.step()
    probs = choice.probs()
    assert probs[2] > 0.6 and sum(probs) == pytest.approx(1.0, abs=1e-3)
    fixed = BaseChoice(3, learn=False)
    assert not fixed.logits.requires_grad and fixed.probs() == [0.3333] * 3
