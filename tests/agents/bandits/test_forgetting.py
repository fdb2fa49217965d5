"""Forgetting factor (drift): discounted ridge algebra against a direct computation, and tracking a change."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pushrl.agents.bandits import make_bandit


def test_discounted_statistics_equal_direct_formula():
    rng = np.random.default_rng(0)
    d, a, gamma, ridge = 4, 3, 0.9, 2.0
    bandit = make_bandit("linucb", n_actions=a, n_features=d, ridge=ridge, forgetting=gamma)
    batches = [(rng.normal(size=(20, d)), rng.integers(0, a, 20), rng.normal(size=20)) for _ in range(5)]
    for x, act, r in batches:
        bandit.update(x, act, r)
    # direct: A_T = sum_t gamma^(T-t) X_t^T X_t + ridge I (the prior decays back to itself), b likewise
    for g in range(a):
        A = ridge * np.eye(d)
        b = np.zeros(d)
        for x, act, r in batches:
            A = gamma * A + (1 - gamma) * ridge * np.eye(d)
            b = gamma * b
            m = act == g
            A += x[m].T @ x[m]
            b += x[m].T @ r[m]
        np.testing.assert_allclose(bandit.stats.A[g], A, rtol=1e-10)
        np.testing.assert_allclose(bandit.stats.theta[g], np.linalg.solve(A, b), rtol=1e-8)


def test_forgetting_tracks_a_change_the_stationary_bandit_misses():
    rng = np.random.default_rng(1)
    x = np.ones((400, 1))
    fast = make_bandit("linucb", n_actions=2, n_features=1, alpha=0.0, forgetting=0.8)
    slow = make_bandit("linucb", n_actions=2, n_features=1, alpha=0.0)
    for phase, best in ((0, 0), (1, 1)):  # action 0 pays first, then action 1
        for _ in range(20 if phase == 0 else 6):
            act = rng.integers(0, 2, 400)
            r = (act == best).astype(float)
            fast.update(x, act, r)
            slow.update(x, act, r)
    assert fast.action_probabilities(x[:1])[0, 1] == 1.0
    assert slow.action_probabilities(x[:1])[0, 0] == 1.0


@pytest.mark.parametrize("value", [0.0, 1.5, -0.1, True])
def test_bad_forgetting_refused(value):
    with pytest.raises(ValueError, match="forgetting must be"):
        make_bandit("lints", n_actions=2, n_features=2, forgetting=value)


def test_neural_linear_keeps_its_forgetting_factor_across_retrains():
    """The last layer's ridge statistics are rebuilt at each retrain; the forgetting factor must survive."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    bandit = make_bandit("neural_linear", n_actions=2, n_features=3, retrain_every=50, train_steps=5, forgetting=0.9)
    x = rng.normal(size=(120, 3))
    bandit.update(x, rng.integers(0, 2, 120), rng.random(120))
    assert bandit.n_retrains >= 1 and bandit.forgetting == 0.9
