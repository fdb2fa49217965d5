"""K-fold cross-fitting of a reward model for DM and the DR family.

A reward model that saw row i is optimistic on row i, and DR's correction
term w_i (r_i - q_hat(x_i, a_i, k_i)) then shrinks towards zero. Cross-fitting
removes that: rows are split into K folds, and the estimates for a fold come
from a model fitted on the other K - 1 folds only.

The model is anything with the signature

    fit_predict(train_idx (m,) int, eval_idx (e,) int) -> (e, n_actions, len_list)

so the learned torch response model (from `pushrl.experiments`) plugs in
without this package importing torch. `MeanRewardModel` is a numpy default:
the per-(action, position) mean reward, shrunk towards the overall mean.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pushrl.policies.ope.bootstrap import Seed, seed_sequence

FitPredict = Callable[[np.ndarray, np.ndarray], np.ndarray]


def kfold_indices(n_rounds: int, n_folds: int, seed: Seed = None) -> list[np.ndarray]:
    """A seeded random split of range(n_rounds) into n_folds sorted folds of near-equal size."""
    if isinstance(n_rounds, bool) or not isinstance(n_rounds, int | np.integer) or n_rounds < 1:
        raise ValueError(f"n_rounds must be an int >= 1, got {n_rounds!r}")
    if (
        isinstance(n_folds, bool)
        or not isinstance(n_folds, int | np.integer)
        or not 2 <= n_folds <= n_rounds
    ):
        raise ValueError(f"n_folds must be an int in [2, n_rounds={n_rounds}], got {n_folds!r}")
    order = np.random.default_rng(seed_sequence(seed)).permutation(int(n_rounds))
    return [np.sort(fold) for fold in np.array_split(order, int(n_folds))]


def cross_fit_estimated_rewards(
    n_rounds: int, fit_predict: FitPredict, n_folds: int = 5, seed: Seed = None
) -> np.ndarray:
    """(n_rounds, n_actions, len_list) out-of-fold reward estimates.

    Row i's estimate comes from `fit_predict(train_idx, eval_idx)` with i in
    eval_idx and never in train_idx. Every fold must return the same
    (n_actions, len_list) and finite values.
    """
    folds = kfold_indices(n_rounds, n_folds, seed)
    everything = np.arange(n_rounds)
    out: np.ndarray | None = None
    for k, eval_idx in enumerate(folds):
        train_idx = np.setdiff1d(everything, eval_idx, assume_unique=True)
        pred = np.asarray(fit_predict(train_idx, eval_idx), dtype=np.float64)
        if pred.ndim != 3 or pred.shape[0] != eval_idx.size:
            raise ValueError(
                f"fit_predict returned shape {pred.shape} for fold {k}, expected "
                f"({eval_idx.size}, n_actions, len_list)"
            )
        if out is None:
            out = np.empty((n_rounds, *pred.shape[1:]))
        elif pred.shape[1:] != out.shape[1:]:
            raise ValueError(
                f"fit_predict returned (n_actions, len_list)={pred.shape[1:]} for fold {k}, "
                f"earlier folds gave {out.shape[1:]}"
            )
        if not np.isfinite(pred).all():
            raise ValueError(f"fit_predict returned non-finite estimates for fold {k}")
        out[eval_idx] = pred
    return out


@dataclass(frozen=True)
class MeanRewardModel:
    """q_hat(a, k) = (sum of rewards of (a, k) + prior_strength * mean reward) / (count + prior_strength).

    Context-free, so it is only a baseline: DM with it is the logged mean of
    each (action, position); DR with it stays unbiased and usually beats IPS.

    prior_strength: pseudo-rows at the overall mean added to every cell (> 0),
    so cells the training folds never logged get the overall mean.
    """

    prior_strength: float = 1.0

    def __post_init__(self) -> None:
        ok = isinstance(self.prior_strength, int | float) and not isinstance(
            self.prior_strength, bool
        )
        if not (ok and 0 < self.prior_strength < np.inf):
            raise ValueError(
                f"MeanRewardModel.prior_strength must be a finite number > 0, got {self.prior_strength!r}"
            )

    def fit(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        position: np.ndarray,
        n_actions: int,
        len_list: int,
    ) -> np.ndarray:
        """(n_actions, len_list) table from 1-D arrays of the training rows."""
        reward = np.asarray(reward, dtype=np.float64)
        cell = np.asarray(action, dtype=np.intp) * len_list + np.asarray(position, dtype=np.intp)
        sums = np.bincount(cell, weights=reward, minlength=n_actions * len_list)
        counts = np.bincount(cell, minlength=n_actions * len_list)
        prior = float(np.mean(reward)) if reward.size else 0.0
        table = (sums + self.prior_strength * prior) / (counts + self.prior_strength)
        return table.reshape(n_actions, len_list)

    def fit_predict_fn(
        self,
        reward: np.ndarray,
        action: np.ndarray,
        position: np.ndarray | None,
        n_actions: int,
        len_list: int = 1,
    ) -> FitPredict:
        """A `fit_predict(train_idx, eval_idx)` over this log, for `cross_fit_estimated_rewards`."""
        reward = np.asarray(reward, dtype=np.float64)
        action = np.asarray(action)
        position = (
            np.zeros(action.shape, dtype=np.intp) if position is None else np.asarray(position)
        )
        if not (reward.shape == action.shape == position.shape and reward.ndim == 1):
            raise ValueError(
                f"reward, action and position must be 1-D of one length, got shapes "
                f"{reward.shape}, {action.shape}, {position.shape}"
            )
        if action.size and (action.min() < 0 or action.max() >= n_actions):
            raise ValueError(f"action values must be in [0, n_actions={n_actions})")
        if position.size and (position.min() < 0 or position.max() >= len_list):
            raise ValueError(f"position values must be in [0, len_list={len_list})")

        def fit_predict(train_idx: np.ndarray, eval_idx: np.ndarray) -> np.ndarray:
            table = self.fit(
                reward[train_idx], action[train_idx], position[train_idx], n_actions, len_list
            )
            return np.broadcast_to(table, (len(eval_idx), n_actions, len_list))

        return fit_predict


def cross_fit_mean_rewards(
    reward: np.ndarray,
    action: np.ndarray,
    position: np.ndarray | None,
    n_actions: int,
    len_list: int = 1,
    *,
    n_folds: int = 5,
    seed: Seed = None,
    prior_strength: float = 1.0,
) -> np.ndarray:
    """Out-of-fold `MeanRewardModel` estimates, (n_rounds, n_actions, len_list): DM/DR out of the box."""
    model = MeanRewardModel(prior_strength=prior_strength)
    fit_predict = model.fit_predict_fn(reward, action, position, n_actions, len_list)
    return cross_fit_estimated_rewards(
        len(np.asarray(reward)), fit_predict, n_folds=n_folds, seed=seed
    )
