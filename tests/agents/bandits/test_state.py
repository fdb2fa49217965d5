"""Registry, seeding and checkpoints, looped over every registered bandit."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from pushrl.agents.bandits import BANDITS, BanditAgent, make_bandit
from pushrl.policies.policy import Policy

N_ACTIONS, N_FEATURES = 4, 3
ACTION_FEATURES = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, -1.0]])
FAST = {
    "neural_linear": {"hidden_sizes": (8,), "retrain_every": 60, "train_steps": 20, "n_mc": 200}
}


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Small MLPs: one thread is faster and stable on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _make(name: str, seed: int = 0) -> BanditAgent:
    size = (
        {"action_features": ACTION_FEATURES}
        if name.endswith("_shared")
        else {"n_actions": N_ACTIONS}
    )
    return make_bandit(name, n_features=N_FEATURES, seed=seed, **size, **FAST.get(name, {}))


class Problem:
    def draw_contexts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.normal(size=(n, N_FEATURES))

    def reward_fn(
        self, contexts: np.ndarray, actions: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        return contexts[:, 0] * (actions - 1.5) + 0.1 * rng.normal(size=len(actions))


def test_registry_names() -> None:
    required = {
        "epsilon_greedy",
        "linucb",
        "lints",
        "softmax",
        "neural_linear",
        "linucb_shared",
        "lints_shared",
    }
    assert required <= set(BANDITS)


@pytest.mark.parametrize("name", sorted(BANDITS))
def test_every_bandit_is_a_policy(name: str) -> None:
    agent = _make(name)
    assert isinstance(agent, Policy) and agent.n_actions == N_ACTIONS
    agent.run_online(Problem(), 150, 30, np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(20, N_FEATURES))
    p = agent.action_probabilities(x)
    assert p.shape == (20, N_ACTIONS) and (p >= 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)
    actions, props = agent.act(x, np.random.default_rng(2))
    np.testing.assert_allclose(props, p[np.arange(20), actions])


@pytest.mark.parametrize("name", sorted(BANDITS))
def test_same_seed_same_actions(name: str) -> None:
    runs = [
        _make(name, seed=3).run_online(Problem(), 200, 25, np.random.default_rng(7))
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].actions, runs[1].actions)
    np.testing.assert_array_equal(runs[0].rewards, runs[1].rewards)
    other = _make(name, seed=3).run_online(Problem(), 200, 25, np.random.default_rng(8))
    assert not np.array_equal(runs[0].actions, other.actions)


@pytest.mark.parametrize("name", sorted(BANDITS))
def test_state_round_trip_is_exact(name: str) -> None:
    trained = _make(name)
    trained.run_online(Problem(), 170, 20, np.random.default_rng(0))
    state = trained.get_state()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    restored = _make(name)
    restored.set_state({k: v.copy() for k, v in state.items()})
    x = np.random.default_rng(1).normal(size=(15, N_FEATURES))
    np.testing.assert_array_equal(restored.action_probabilities(x), trained.action_probabilities(x))
    # both keep learning identically (for neural_linear: through another retrain)
    a, b = (
        agent.run_online(Problem(), 120, 20, np.random.default_rng(5))
        for agent in (trained, restored)
    )
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(restored.action_probabilities(x), trained.action_probabilities(x))
    fresh = _make(name)
    assert not np.array_equal(fresh.action_probabilities(x), trained.action_probabilities(x))


def test_make_bandit_refuses_unknown_name_and_hyperparameter() -> None:
    with pytest.raises(ValueError, match=r"unknown bandit 'ucb'.*allowed: \['epsilon_greedy'"):
        make_bandit("ucb", n_actions=2, n_features=2)
    with pytest.raises(TypeError, match=r"linucb got unknown hyperparameter\(s\) \['alpah'\]"):
        make_bandit("linucb", n_actions=2, n_features=2, alpah=1.0)


def test_make_bandit_passes_hyperparameters() -> None:
    agent = make_bandit("epsilon_greedy", n_actions=3, n_features=2, epsilon=0.25, ridge=3.0)
    assert (agent.epsilon, agent.ridge, agent.n_actions, agent.n_features) == (0.25, 3.0, 3, 2)


def test_shared_model_scores_an_unseen_action() -> None:
    agent = make_bandit(
        "linucb_shared", action_features=ACTION_FEATURES, n_features=N_FEATURES, alpha=0.0
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, N_FEATURES))
    a = rng.integers(0, N_ACTIONS, 2000)
    true_w = np.array([[1.0, -1.0], [0.0, 2.0], [0.5, 0.0]])  # reward = x^T W z_a
    agent.update(x, a, np.einsum("ni,ij,nj->n", x, true_w, ACTION_FEATURES[a]))
    new = np.array([[2.0, -0.5]])
    agent.set_action_features(np.vstack([ACTION_FEATURES, new]))
    assert agent.n_actions == N_ACTIONS + 1
    probe = rng.normal(size=(5, N_FEATURES))
    np.testing.assert_allclose(agent.estimates(probe)[:, -1], probe @ true_w @ new[0], atol=0.02)


@pytest.mark.parametrize("name", sorted(BANDITS))
def test_probabilities_do_not_depend_on_the_batch(name: str, monkeypatch) -> None:
    agent = _make(name)
    agent.run_online(Problem(), 130, 26, np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(40, N_FEATURES))
    whole = agent.action_probabilities(x)
    one_by_one = np.concatenate([agent.action_probabilities(x[i : i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(one_by_one, whole, atol=1e-9)
    monkeypatch.setattr("pushrl.agents.bandits.linear.ROW_BUDGET", 1)  # one row per block
    np.testing.assert_allclose(agent.action_probabilities(x), whole, atol=1e-9)
