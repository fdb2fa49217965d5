"""Cross-fitting: every row's reward estimate comes from a model that never saw it."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.policies.ope import (
    DoublyRobust,
    MeanRewardModel,
    cross_fit_estimated_rewards,
    cross_fit_mean_rewards,
    kfold_indices,
)


@pytest.mark.parametrize(("n_rounds", "n_folds"), [(10, 2), (101, 5), (1000, 7)])
def test_folds_partition_the_rows_evenly(n_rounds: int, n_folds: int) -> None:
    folds = kfold_indices(n_rounds, n_folds, seed=0)
    assert len(folds) == n_folds
    assert np.array_equal(np.sort(np.concatenate(folds)), np.arange(n_rounds))
    sizes = [f.size for f in folds]
    assert max(sizes) - min(sizes) <= 1
    assert all(
        np.array_equal(a, b)
        for a, b in zip(folds, kfold_indices(n_rounds, n_folds, seed=0), strict=True)
    )
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(folds, kfold_indices(n_rounds, n_folds, seed=1), strict=True)
    )


def test_no_row_is_predicted_by_a_model_that_saw_it() -> None:
    """A 'model' that reports, for each row it predicts, whether that row was in its training set."""
    n, seen_eval = 503, []

    def leaky_memoriser(train_idx: np.ndarray, eval_idx: np.ndarray) -> np.ndarray:
        seen_eval.append(eval_idx)
        saw_it = np.isin(eval_idx, train_idx).astype(float)
        # rows it trained on would get 1 + their own index; unseen rows get their own index
        return np.broadcast_to((saw_it + eval_idx)[:, None, None], (eval_idx.size, 3, 2))

    out = cross_fit_estimated_rewards(n, leaky_memoriser, n_folds=4, seed=3)
    assert out.shape == (n, 3, 2)
    assert np.array_equal(
        out[:, 0, 0], np.arange(n)
    )  # every row filled, and by a model blind to it
    assert np.array_equal(
        np.sort(np.concatenate(seen_eval)), np.arange(n)
    )  # each row predicted once


def test_a_memorising_model_cannot_leak_rewards() -> None:
    """1-nearest-neighbour on the row index: perfect in-sample, useless out of fold."""
    rng = np.random.default_rng(0)
    reward = rng.random(400)

    def memoriser(train_idx: np.ndarray, eval_idx: np.ndarray) -> np.ndarray:
        lookup = dict(zip(train_idx.tolist(), reward[train_idx], strict=True))
        pred = np.array([lookup.get(i, 0.5) for i in eval_idx.tolist()])
        return pred[:, None, None]

    out = cross_fit_estimated_rewards(400, memoriser, n_folds=5, seed=0)
    assert np.all(out == 0.5)
    in_sample = memoriser(np.arange(400), np.arange(400))
    assert np.array_equal(in_sample[:, 0, 0], reward)  # the same model leaks when it sees the rows


def test_fit_predict_shape_is_checked() -> None:
    with pytest.raises(ValueError, match=r"fit_predict returned shape \(3, 2\) for fold 0"):
        cross_fit_estimated_rewards(10, lambda tr, ev: np.zeros((3, 2)), n_folds=2, seed=0)
    calls = iter([(5, 4, 1), (5, 3, 1)])

    def inconsistent(train_idx: np.ndarray, eval_idx: np.ndarray) -> np.ndarray:
        return np.zeros(next(calls))

    with pytest.raises(ValueError, match=r"\(n_actions, len_list\)=\(3, 1\) for fold 1"):
        cross_fit_estimated_rewards(10, inconsistent, n_folds=2, seed=0)
    with pytest.raises(ValueError, match="n_folds"):
        kfold_indices(10, 1)


def test_mean_reward_model_is_per_action_position_mean_with_prior() -> None:
    reward = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    action = np.array([0, 0, 1, 1, 1, 2])
    position = np.array([0, 0, 1, 1, 0, 0])
    table = MeanRewardModel(prior_strength=2.0).fit(
        reward, action, position, n_actions=4, len_list=2
    )
    prior = reward.mean()
    assert table.shape == (4, 2)
    assert table[0, 0] == pytest.approx((1.0 + 2 * prior) / (2 + 2))
    assert table[1, 1] == pytest.approx((2.0 + 2 * prior) / (2 + 2))
    assert table[3, 0] == pytest.approx(prior)  # never logged: the overall mean
    with pytest.raises(ValueError, match="prior_strength"):
        MeanRewardModel(prior_strength=0.0)


def test_cross_fitted_default_model_makes_dr_work_out_of_the_box() -> None:
    rng = np.random.default_rng(1)
    n, n_actions = 4000, 5
    ctr = np.linspace(0.1, 0.5, n_actions)
    action = rng.integers(0, n_actions, n)
    reward = (rng.random(n) < ctr[action]).astype(float)
    q_hat = cross_fit_mean_rewards(reward, action, None, n_actions, n_folds=5, seed=0)
    assert q_hat.shape == (n, n_actions, 1)
    assert np.abs(q_hat[:, :, 0] - ctr).max() < 0.06
    dist = np.zeros((n, n_actions, 1))
    dist[:, -1, 0] = 1.0
    value = DoublyRobust().estimate_policy_value(
        reward=reward,
        action=action,
        pscore=np.full(n, 1 / n_actions),
        action_dist=dist,
        estimated_rewards_by_reg_model=q_hat,
    )
    assert abs(value - ctr[-1]) < 0.05
