"""Learning from logged data: IPS-weighted fits and replay."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.agents.bandits import EpsilonGreedy, LinTS, LinUCB

TRUE_THETA = np.array([[1.0, -0.5, 0.2], [-0.3, 0.8, 0.0], [0.4, 0.4, -0.6], [0.0, -1.0, 0.5]])
N_ACTIONS, N_FEATURES = TRUE_THETA.shape


def _log(n: int, seed: int, pscores: np.ndarray | None = None):
    """Contexts, actions drawn from per-row probabilities (uniform by default), noisy rewards."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([np.ones(n), rng.normal(size=(n, N_FEATURES - 1))])
    probs = np.full((n, N_ACTIONS), 1.0 / N_ACTIONS) if pscores is None else pscores(x)
    a = (rng.random((n, 1)) > probs.cumsum(axis=1)).sum(axis=1)
    r = (x @ TRUE_THETA.T)[np.arange(n), a] + 0.3 * rng.normal(size=n)
    return x, a, r, probs[np.arange(n), a]


@pytest.mark.parametrize("cls", [LinUCB, LinTS, EpsilonGreedy])
def test_ips_fit_from_uniform_log_recovers_parameters(cls) -> None:
    x, a, r, p = _log(20_000, 0)
    agent = cls(N_ACTIONS, N_FEATURES)
    result = agent.fit_offline(x, a, r, p, mode="ips", batch_size=1000)
    assert result.n_used == 20_000 and agent.n_updates == 20_000
    np.testing.assert_allclose(agent.stats.theta, TRUE_THETA, atol=0.03)


def test_ips_fit_from_context_dependent_log_recovers_parameters() -> None:
    def logging(x: np.ndarray) -> np.ndarray:  # favours action 0 when x1 > 0, never below 5%
        logits = np.column_stack([2 * x[:, 1], np.zeros(len(x)), -x[:, 2], np.zeros(len(x))])
        e = np.exp(logits)
        return 0.2 * 0.25 + 0.8 * e / e.sum(axis=1, keepdims=True)

    x, a, r, p = _log(40_000, 1, logging)
    agent = LinUCB(N_ACTIONS, N_FEATURES)
    agent.fit_offline(x, a, r, p, mode="ips")
    np.testing.assert_allclose(agent.stats.theta, TRUE_THETA, atol=0.05)


def test_ips_targets_the_population_fit_of_a_misspecified_model() -> None:
    """With a nonlinear reward only the IPS fit matches the best linear fit over all contexts."""
    rng = np.random.default_rng(5)
    n = 60_000
    x = np.column_stack([np.ones(n), rng.normal(size=(n, N_FEATURES - 1))])
    f = x[:, 1] ** 2  # the same nonlinear reward for every action
    favour0 = np.where(x[:, 1] > 0, 0.7, 0.1)  # action 0 mostly logged where x1 > 0
    probs = np.column_stack([favour0, *[(1 - favour0) / 3] * 3])
    a = (rng.random((n, 1)) > probs.cumsum(axis=1)).sum(axis=1)
    r = f + 0.1 * rng.normal(size=n)
    population = np.linalg.lstsq(x, f, rcond=None)[0]  # slope on x1 is ~0 over all contexts
    ips, naive = LinUCB(N_ACTIONS, N_FEATURES), LinUCB(N_ACTIONS, N_FEATURES)
    ips.fit_offline(x, a, r, probs[np.arange(n), a], mode="ips")
    naive.update(x, a, r)
    np.testing.assert_allclose(ips.stats.theta[0], population, atol=0.06)
    assert np.abs(naive.stats.theta[0] - population).max() > 0.3


def test_uniform_ips_weights_equal_an_unweighted_fit() -> None:
    x, a, r, p = _log(500, 2)
    weighted, plain = LinUCB(N_ACTIONS, N_FEATURES), LinUCB(N_ACTIONS, N_FEATURES)
    weighted.fit_offline(x, a, r, p, mode="ips", batch_size=64)
    plain.update(x, a, r)
    np.testing.assert_allclose(weighted.stats.A_inv, plain.stats.A_inv, rtol=1e-10)
    np.testing.assert_allclose(weighted.stats.theta, plain.stats.theta, rtol=1e-10)


def test_ips_weights_are_inverse_pscores() -> None:
    x, a, r, _ = _log(300, 3)
    p = np.where(a == 0, 0.5, 0.1)
    agent, direct = LinUCB(N_ACTIONS, N_FEATURES), LinUCB(N_ACTIONS, N_FEATURES)
    agent.fit_offline(x, a, r, p, mode="ips")
    direct.update(x, a, r, (1 / p) / np.mean(1 / p))
    np.testing.assert_allclose(agent.stats.A, direct.stats.A, rtol=1e-12)


def test_replay_keeps_about_one_row_in_n_actions_and_learns() -> None:
    x, a, r, p = _log(40_000, 4)
    agent = LinUCB(N_ACTIONS, N_FEATURES, alpha=0.5)
    result = agent.fit_offline(
        x, a, r, p, mode="replay", batch_size=50, rng=np.random.default_rng(0)
    )
    assert abs(result.n_used - 10_000) < 500, result.n_used  # a uniform log matches 1 in 4
    q = x @ TRUE_THETA.T
    assert result.replay_value > q.mean() + 0.5 * (q.max(axis=1).mean() - q.mean())
    greedy = agent.ucb(x[:2000]).argmax(axis=1)
    assert np.mean(greedy == q[:2000].argmax(axis=1)) > 0.9
