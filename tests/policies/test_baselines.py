"""Policies that need no training."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.policies.baselines import (
    LoggingPolicyReplay,
    MostPopular,
    Oracle,
    greedy_probabilities,
)
from pushrl.policies.policy import Policy, UniformPolicy

X = np.random.default_rng(0).normal(size=(6, 3))


def test_uniform_random() -> None:
    policy = UniformPolicy(4, n_features=3)
    assert isinstance(policy, Policy)
    np.testing.assert_allclose(policy.action_probabilities(X), np.full((6, 4), 0.25))
    actions, props = policy.act(np.tile(X[0], (4000, 1)), np.random.default_rng(1))
    np.testing.assert_allclose(props, 0.25)
    np.testing.assert_allclose(np.bincount(actions, minlength=4) / 4000, 0.25, atol=0.03)
    with pytest.raises(ValueError, match="contexts has 2 features per row, the policy expects 3"):
        policy.action_probabilities(X[:, :2])


def test_most_popular_picks_highest_mean_reward() -> None:
    # action 1 is logged most often, action 2 has the highest mean reward, action 3 never
    actions = np.array([1, 1, 1, 1, 0, 0, 2, 2])
    rewards = np.array([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.5])
    policy = MostPopular(4).fit(actions, rewards)
    assert policy.best_action_ == 2
    np.testing.assert_allclose(policy.mean_rewards_[:3], [0.5, 0.5, 0.75])
    assert np.isnan(policy.mean_rewards_[3])
    np.testing.assert_array_equal(policy.action_probabilities(X), np.tile([0, 0, 1.0, 0], (6, 1)))
    actions_taken, props = policy.act(X, np.random.default_rng(0))
    np.testing.assert_array_equal(actions_taken, 2)
    np.testing.assert_array_equal(props, 1.0)


def test_most_popular_ties_go_to_lowest_index() -> None:
    policy = MostPopular(3).fit(np.array([2, 1, 0]), np.array([1.0, 1.0, 0.0]))
    assert policy.best_action_ == 1


def test_most_popular_ignores_unlogged_actions_with_negative_rewards() -> None:
    policy = MostPopular(3).fit(np.array([1, 1]), np.array([-2.0, -1.0]))
    assert policy.best_action_ == 1


def test_most_popular_per_position() -> None:
    actions = np.array([0, 1, 0, 1, 2, 2])
    rewards = np.array([1.0, 0.0, 1.0, 0.0, 0.0, 1.0])
    positions = np.array([0, 0, 1, 1, 0, 1])
    policy = MostPopular(3).fit(actions, rewards, positions)
    np.testing.assert_array_equal(policy.best_action_by_position_, [0, 0])
    policy = MostPopular(3).fit(actions, np.array([0.0, 1.0, 0.0, 0.0, 0.0, 1.0]), positions)
    np.testing.assert_array_equal(policy.best_action_by_position_, [1, 2])
    dist = policy.action_dist(X)
    assert dist.shape == (6, 3, 2)
    np.testing.assert_array_equal(dist[0], [[0, 0], [1, 0], [0, 1]])


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((np.array([0, 5]), np.array([1.0, 0.0])), r"actions must be in \[0, 3\), got 5 at row 1"),
        ((np.array([0, 1]), np.array([1.0])), r"rewards must have shape \(2,\), got \(1,\)"),
        (
            (np.array([0.0, 1.0]), np.array([1.0, 0.0])),
            r"actions must be integers, got dtype float64",
        ),
        ((np.array([], dtype=int), np.array([])), r"actions must be a non-empty 1-D array"),
        ((np.array([0, 1]), np.array([np.nan, 0.0])), r"rewards has NaN or inf at row 0"),
        (
            (np.array([0, 1]), np.array([1.0, 0.0]), np.array([0, -1])),
            r"positions must be >= 0, got -1",
        ),
    ],
)
def test_most_popular_bad_inputs(args, match) -> None:
    with pytest.raises(ValueError, match=match):
        MostPopular(3).fit(*args)


def test_most_popular_unfitted() -> None:
    with pytest.raises(
        ValueError, match=r"MostPopular is not fitted; call fit\(actions, rewards\) first"
    ):
        MostPopular(3).action_probabilities(X)


def test_logging_policy_replay_vector_and_callable() -> None:
    vector = np.array([0.2, 0.5, 0.3])
    np.testing.assert_allclose(
        LoggingPolicyReplay(vector).action_probabilities(X), np.tile(vector, (6, 1))
    )

    def softmax_of_first_feature(x: np.ndarray) -> np.ndarray:
        logits = np.column_stack([x[:, 0], -x[:, 0], np.zeros(len(x))])
        return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)

    policy = LoggingPolicyReplay(softmax_of_first_feature, n_actions=3)
    np.testing.assert_allclose(policy.action_probabilities(X), softmax_of_first_feature(X))
    actions, props = policy.act(X, np.random.default_rng(0))
    np.testing.assert_allclose(props, softmax_of_first_feature(X)[np.arange(6), actions])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"probabilities": np.array([0.5, 0.6])},
            r"probabilities rows must sum to 1; row 0 sums to 1.1",
        ),
        ({"probabilities": np.array([1.5, -0.5])}, r"probabilities must be finite and >= 0"),
        (
            {"probabilities": np.ones((2, 2)) / 2},
            r"probabilities must be a \(n_actions,\) vector or a callable",
        ),
        (
            {"probabilities": np.array([0.5, 0.5]), "n_actions": 3},
            r"probabilities must have length n_actions=3, got 2",
        ),
        ({"probabilities": lambda x: x}, r"n_actions is required when probabilities is a callable"),
    ],
)
def test_logging_policy_replay_bad_construction(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        LoggingPolicyReplay(**kwargs)


def test_logging_policy_replay_checks_callable_output() -> None:
    policy = LoggingPolicyReplay(lambda x: np.full((len(x), 2), 0.5), n_actions=3)
    with pytest.raises(
        ValueError, match=r"logging policy output must have shape \(6, 3\), got \(6, 2\)"
    ):
        policy.action_probabilities(X)


def test_oracle_is_greedy_on_true_rewards_and_splits_ties() -> None:
    def q(x: np.ndarray) -> np.ndarray:
        return np.column_stack([x[:, 0], -x[:, 0], np.zeros(len(x)), np.zeros(len(x))])

    oracle = Oracle(q, n_actions=4, n_features=3)
    contexts = np.array([[1.0, 0, 0], [-2.0, 0, 0], [0.0, 0, 0]])
    np.testing.assert_allclose(
        oracle.action_probabilities(contexts),
        [[1, 0, 0, 0], [0, 1, 0, 0], [0.25, 0.25, 0.25, 0.25]],
    )
    np.testing.assert_allclose(oracle.regret(contexts, np.array([1, 1, 3])), [2.0, 0.0, 0.0])


def test_oracle_checks_q_shape() -> None:
    oracle = Oracle(lambda x: np.zeros((len(x), 2)), n_actions=3)
    with pytest.raises(ValueError, match=r"q\(contexts\) must have shape \(6, 3\), got \(6, 2\)"):
        oracle.action_probabilities(X)


def test_greedy_probabilities_split_ties() -> None:
    p = greedy_probabilities(np.array([[1.0, 3.0, 3.0], [0.0, -1.0, -2.0]]))
    np.testing.assert_allclose(p, [[0, 0.5, 0.5], [1, 0, 0]])


def test_oracle_regret_checks_actions() -> None:
    oracle = Oracle(lambda x: np.zeros((len(x), 3)), n_actions=3)
    with pytest.raises(ValueError, match=r"actions must be in \[0, 3\), got 0..3"):
        oracle.regret(X, np.array([0, 1, 2, 3, 0, 0]))
    with pytest.raises(
        ValueError, match=r"actions must be integers of shape \(6,\), got int64 \(2,\)"
    ):
        oracle.regret(X, np.array([0, 1]))
