"""The synthetic generator: exact propensities, fatigue counts, and true values that match simulation."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.envs.synthetic import SyntheticConfig, generate_log, recent_push_counts
from pushrl.policies.policy import to_action_dist


def test_recent_push_counts_match_brute_force():
    rng = np.random.default_rng(0)
    user = rng.integers(0, 7, size=300)
    t = rng.uniform(0, 20, size=300)
    fast = recent_push_counts(user, t, 3.0)
    slow = np.array([np.sum((user == user[i]) & (t < t[i]) & (t >= t[i] - 3.0)) for i in range(300)])
    np.testing.assert_array_equal(fast, slow)


@pytest.mark.parametrize("logging", ["uniform", "softmax", "epsilon_greedy", "deterministic"])
def test_logged_propensity_is_the_logging_probability(logging):
    data, truth = generate_log(SyntheticConfig(n_rows=3000, n_positions=2, logging=logging, seed=1))
    probs = truth.logging_probabilities(*truth.row_inputs(data))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(data.pscore, probs[np.arange(data.n_rounds), data.action], rtol=1e-12)
    if logging == "deterministic":
        assert np.all(data.pscore == 1.0)


def test_true_value_matches_mean_logged_reward_on_policy():
    data, truth = generate_log(SyntheticConfig(n_rows=60_000, n_positions=3, logging="softmax", seed=2))
    logging_dist = truth.logging_probabilities(*truth.row_inputs(data))
    v = truth.policy_value(data, to_action_dist(logging_dist, 3))
    clicks = data.reward("click")
    se = clicks.std() / np.sqrt(len(clicks))
    assert abs(clicks.mean() - v) < 4 * se
    conv = data.reward("conversion")
    v_conv = truth.policy_value(data, to_action_dist(logging_dist, 3), reward="conversion")
    assert abs(conv.mean() - v_conv) < 4 * conv.std() / np.sqrt(len(conv))


def test_fatigue_and_position_lower_the_click_rate():
    data, truth = generate_log(SyntheticConfig(n_rows=5000, n_positions=3, fatigue=0.5, seed=3))
    x, seg, recent, pos = truth.row_inputs(data)
    base = truth.expected_rewards(x, seg, np.zeros_like(recent), np.zeros_like(pos))
    assert np.all(truth.expected_rewards(x, seg, recent + 2, np.zeros_like(pos)) < base)
    assert np.all(truth.expected_rewards(x, seg, np.zeros_like(recent), np.full_like(pos, 2)) < base)


def test_same_seed_same_log_other_seed_other_log():
    a, _ = generate_log(SyntheticConfig(n_rows=500, seed=9))
    b, _ = generate_log(SyntheticConfig(n_rows=500, seed=9))
    c, _ = generate_log(SyntheticConfig(n_rows=500, seed=10))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


@pytest.mark.parametrize("field, value", [("n_rows", 0), ("logging", "greedy"), ("logging_epsilon", 1.5), ("fatigue", -1.0)])
def test_config_validation(field, value):
    with pytest.raises(ValueError, match=field):
        SyntheticConfig(**{field: value})
