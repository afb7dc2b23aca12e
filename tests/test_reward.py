import pytest

from n2n.search.reward import (
    INVALID_REWARD,
    Constraints,
    accuracy_reward,
    compression,
    compression_reward,
    constrained_reward,
    epsilon,
    reward,
)


def test_compression_terms_exact():
    assert compression(10, 100) == pytest.approx(0.9)
    assert compression_reward(0.9) == pytest.approx(0.99)
    assert compression_reward(0.5) == pytest.approx(0.75)
    assert accuracy_reward(0.45, 0.9) == pytest.approx(0.5)


def test_reward_is_product_and_normalised_to_teacher():
    assert reward(0.9, 0.9, 10, 100) == pytest.approx(0.99)
    assert reward(0.45, 0.9, 50, 100) == pytest.approx(0.75 * 0.5)
    # a student better than its teacher can score above Rc
    assert reward(0.99, 0.9, 10, 100) == pytest.approx(0.99 * 1.1)


def test_degenerate_students_get_minus_one():
    assert reward(0.9, 0.9, 100, 100) == INVALID_REWARD
    assert reward(0.9, 0.9, 150, 100) == INVALID_REWARD
    assert reward(0.9, 0.9, 0, 100) == INVALID_REWARD
    with pytest.raises(ValueError, match="teacher accuracy"):
        accuracy_reward(0.5, 0.0)


def test_epsilon_schedule_exact():
    assert epsilon(0) == 1.0
    assert epsilon(15) == 0.0
    assert epsilon(30) == 0.0
    assert epsilon(5) == pytest.approx((2 / 3) ** 4)


def test_constraints_hard_and_soft():
    c = Constraints(max_params=20, min_accuracy=0.8)
    assert not c.violated(20, 0.8)
    assert c.violated(21, 0.9)
    assert c.violated(10, 0.79)
    assert constrained_reward(0.5, False, "hard", 3) == 0.5
    assert constrained_reward(0.5, True, "hard", 0) == INVALID_REWARD
    assert constrained_reward(0.5, True, "soft", 0) == pytest.approx(0.5)  # eps_0 = 1: no penalty yet
    assert constrained_reward(0.5, True, "soft", 15) == pytest.approx(-1.0)
    assert constrained_reward(0.5, True, "soft", 5) == pytest.approx((2 / 3) ** 4 * 1.5 - 1)


def test_objective_cost_picks_the_unit():
    from n2n.search.reward import objective_cost

    assert objective_cost("params", 10, 200, 3.5) == 10
    assert objective_cost("flops", 10, 200, 3.5) == 200
    assert objective_cost("latency", 10, 200, 3.5) == 3.5


def test_reward_in_other_units_exact():
    # latency: 2.5 ms vs a 10 ms teacher gives C = 0.75, Rc = 0.9375
    assert reward(0.9, 0.9, 2.5, 10.0) == pytest.approx(0.9375)
    # MACs: 500 of 1000 gives C = 0.5, Rc = 0.75; accuracy ratio 0.8
    assert reward(0.72, 0.9, 500, 1000) == pytest.approx(0.6)
    assert reward(0.9, 0.9, 12.0, 10.0) == INVALID_REWARD  # slower than the teacher


def test_flops_and_latency_constraints():
    c = Constraints(max_flops=200, max_latency_ms=2.0)
    assert not c.violated(10**6, 0.1, macs=100, latency_ms=2.0)
    assert c.violated(1, 1.0, macs=101, latency_ms=1.0)  # 202 FLOPs
    assert c.violated(1, 1.0, macs=50, latency_ms=2.01)
    assert not Constraints().violated(10**9, 0.0, 10**9, 10**9)
