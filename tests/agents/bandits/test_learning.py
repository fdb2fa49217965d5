"""Bandits learn a linear problem with a known optimum; closed-form and Monte-Carlo probabilities."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from pushrl.agents.bandits import EpsilonGreedy, LinTS, LinUCB, NeuralLinear, SharedLinTS, Softmax

# True expected reward of action k for context x = [1, u1, u2, u3] is THETA[k] @ x:
# actions 0-3 win when one of u1, u2 is large in their direction, action 4 when u3 is.
THETA = np.array(
    [
        [0.5, 1.0, 0.0, 0.0],
        [0.5, -1.0, 0.0, 0.0],
        [0.5, 0.0, 1.0, 0.0],
        [0.5, 0.0, -1.0, 0.0],
        [0.2, 0.0, 0.0, 0.5],
    ]
)
N_ACTIONS, N_FEATURES = THETA.shape
NOISE = 0.1


class LinearProblem:
    """Gaussian contexts with an intercept; reward = THETA[a] @ x + N(0, NOISE^2)."""

    def draw_contexts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.column_stack([np.ones(n), rng.normal(size=(n, N_FEATURES - 1))])

    def expected_rewards(self, contexts: np.ndarray) -> np.ndarray:
        return contexts @ THETA.T

    def reward_fn(
        self, contexts: np.ndarray, actions: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        q = self.expected_rewards(contexts)[np.arange(len(actions)), actions]
        return q + NOISE * rng.normal(size=len(actions))


def _regret_halves_and_hit_rate(
    agent, n_rounds: int = 4000, seed: int = 0
) -> tuple[float, float, float]:
    res = agent.run_online(LinearProblem(), n_rounds, 20, np.random.default_rng(seed))
    half = n_rounds // 2
    hit = float(np.mean(res.regret[-n_rounds // 8 :] == 0.0))  # chose the optimal action
    return res.regret[:half].sum(), res.regret[half:].sum(), hit


@pytest.mark.parametrize("cls", [LinUCB, LinTS])
def test_linucb_and_lints_reach_sublinear_regret(cls) -> None:
    first, second, hit = _regret_halves_and_hit_rate(cls(N_ACTIONS, N_FEATURES, alpha=1.0))
    assert second < 0.25 * first, (first, second)
    assert hit > 0.9, hit


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Small MLPs: one thread is faster and stable on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_neural_linear_regret_falls(one_torch_thread: None) -> None:
    agent = NeuralLinear(N_ACTIONS, N_FEATURES, alpha=0.5, hidden_sizes=(16,), retrain_every=500)
    first, second, hit = _regret_halves_and_hit_rate(agent)
    assert agent.n_retrains == 8
    assert second < 0.3 * first, (first, second)
    assert hit > 0.85, hit


def test_uniform_exploration_has_linear_regret() -> None:
    """The regret check can fail: a non-learning agent keeps paying the same regret."""
    first, second, hit = _regret_halves_and_hit_rate(
        EpsilonGreedy(N_ACTIONS, N_FEATURES, epsilon=1.0)
    )
    assert second > 0.8 * first
    assert hit < 0.5


def _trained(cls, **hparams):
    """An agent updated on 300 uniformly logged rows, and that log (x, a, r)."""
    agent = cls(N_ACTIONS, N_FEATURES, **hparams)
    rng = np.random.default_rng(1)
    x = LinearProblem().draw_contexts(300, rng)
    a = rng.integers(0, N_ACTIONS, 300)
    r = LinearProblem().reward_fn(x, a, rng)
    agent.update(x, a, r)
    return agent, (x, a, r)


def _direct_estimates(log, ridge: float, probe: np.ndarray) -> np.ndarray:
    """(n, n_actions) ridge estimates recomputed from the log with np.linalg.solve."""
    x, a, r = log
    theta = [
        np.linalg.solve(
            ridge * np.eye(N_FEATURES) + x[a == k].T @ x[a == k], x[a == k].T @ r[a == k]
        )
        for k in range(N_ACTIONS)
    ]
    return probe @ np.stack(theta).T


@pytest.mark.parametrize("epsilon", [0.0, 0.1, 1.0])
def test_epsilon_greedy_probabilities_closed_form(epsilon: float) -> None:
    agent, log = _trained(EpsilonGreedy, epsilon=epsilon)
    probe = LinearProblem().draw_contexts(50, np.random.default_rng(2))
    q = _direct_estimates(log, agent.ridge, probe)
    expected = np.full(q.shape, epsilon / N_ACTIONS)
    expected[np.arange(len(q)), q.argmax(axis=1)] += 1.0 - epsilon
    np.testing.assert_allclose(agent.action_probabilities(probe), expected, atol=1e-12)


@pytest.mark.parametrize("temperature", [0.05, 1.0, 20.0])
def test_softmax_probabilities_closed_form(temperature: float) -> None:
    agent, log = _trained(Softmax, temperature=temperature)
    probe = LinearProblem().draw_contexts(50, np.random.default_rng(3))
    q = _direct_estimates(log, agent.ridge, probe)
    expected = np.exp(q / temperature) / np.exp(q / temperature).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(agent.action_probabilities(probe), expected, rtol=1e-9)


@pytest.mark.parametrize("cls", [EpsilonGreedy, LinUCB, LinTS])
def test_ties_split_evenly_before_any_data(cls) -> None:
    agent = cls(N_ACTIONS, N_FEATURES)
    p = agent.action_probabilities(np.zeros((3, N_FEATURES)))
    np.testing.assert_allclose(p, np.full((3, N_ACTIONS), 1.0 / N_ACTIONS), atol=1e-12)


def test_linucb_is_deterministic_argmax() -> None:
    agent, _ = _trained(LinUCB, alpha=0.5)
    probe = LinearProblem().draw_contexts(40, np.random.default_rng(4))
    p = agent.action_probabilities(probe)
    np.testing.assert_array_equal(p, np.eye(N_ACTIONS)[agent.ucb(probe).argmax(axis=1)])


def _direct_ts_frequencies(agent, context: np.ndarray, n_draws: int, rng) -> np.ndarray:
    """Argmax frequencies of scores from theta_k ~ N(mean_k, cov_k), each posterior inverted directly."""
    scores = np.empty((n_draws, agent.n_actions))
    for k in range(agent.n_actions):
        A = agent.stats.A[k]
        theta = np.linalg.inv(A) @ agent.stats.b[k]
        draws = rng.multivariate_normal(theta, agent.alpha**2 * np.linalg.inv(A), size=n_draws)
        scores[:, k] = draws @ context
    return np.bincount(scores.argmax(axis=1), minlength=agent.n_actions) / n_draws


def test_ts_monte_carlo_probabilities_match_act_and_posterior() -> None:
    agent, _ = _trained(LinTS, alpha=3.0, n_mc=4000)
    context = np.array([1.0, 0.3, -0.2, 0.4])
    p = agent.action_probabilities(context[None])[0]
    assert (p > 0.05).sum() >= 2, p  # a genuinely random choice
    n = 5000  # act costs n * n_mc * n_actions
    rng = np.random.default_rng(5)
    acted, prop = agent.act(np.tile(context, (n, 1)), rng)
    np.testing.assert_allclose(prop, p[acted])
    tol = 4 * np.sqrt(p * (1 - p) / n) + 1e-3
    np.testing.assert_array_less(np.abs(np.bincount(acted, minlength=N_ACTIONS) / n - p), tol)
    n = 40_000
    fresh = agent.choose(np.tile(context, (n, 1)), rng)  # fresh posterior draws, not the fixed ones
    direct = _direct_ts_frequencies(agent, context, n, rng)
    tol = 4 * np.sqrt(p * (1 - p) * (1 / n + 1 / agent.n_mc)) + 1e-3
    np.testing.assert_array_less(np.abs(np.bincount(fresh, minlength=N_ACTIONS) / n - p), tol)
    np.testing.assert_array_less(np.abs(direct - p), tol)


def test_shared_ts_monte_carlo_matches_direct_posterior() -> None:
    rng = np.random.default_rng(6)
    z = rng.normal(size=(4, 2))
    agent = SharedLinTS(z, 3, alpha=2.0, n_mc=20_000)
    x = rng.normal(size=(200, 3))
    a = rng.integers(0, 4, 200)
    agent.update(x, a, rng.normal(size=200))
    context = np.array([0.5, -1.0, 0.2])
    p = agent.action_probabilities(context[None])[0]
    mean, cov = agent.posterior()
    theta = rng.multivariate_normal(mean, cov, size=40_000)
    scores = theta @ np.stack([np.kron(context, z[k]) for k in range(4)]).T
    freq = np.bincount(scores.argmax(axis=1), minlength=4) / 40_000
    np.testing.assert_array_less(
        np.abs(freq - p), 4 * np.sqrt(p * (1 - p) * (1 / 40_000 + 1 / 20_000)) + 1e-3
    )
    assert (p > 0.05).sum() >= 2, p
