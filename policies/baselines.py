"""Policies that need no training: uniform random, most popular, logging replay, oracle.

Shapes (batch first):
    contexts:      (n, n_features) float64
    probabilities: (n, n_actions) float64, rows sum to 1
    q_values:      (n, n_actions) true expected rewards (Oracle only)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pushrl.policies.policy import (
    PROBABILITY_ATOL,
    BasePolicy,
    check_contexts,
    to_action_dist,
)

TIE_RTOL = 1e-12


def greedy_probabilities(scores: np.ndarray) -> np.ndarray:
    """(n, k) scores -> (n, k) probabilities: mass split evenly over each row's maxima.

    Scores within TIE_RTOL (relative) of the row maximum count as tied.
    """
    top = scores.max(axis=1, keepdims=True)
    ties = scores >= top - TIE_RTOL * np.maximum(1.0, np.abs(top))
    return ties / ties.sum(axis=1, keepdims=True)


def _check_n_actions(n_actions: int) -> int:
    if isinstance(n_actions, bool) or not isinstance(n_actions, int | np.integer) or n_actions < 1:
        raise ValueError(f"n_actions must be an integer >= 1, got {n_actions!r}")
    return int(n_actions)


def _check_probability_rows(p: np.ndarray, n_rows: int, n_actions: int, name: str) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.shape != (n_rows, n_actions):
        raise ValueError(f"{name} must have shape ({n_rows}, {n_actions}), got {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        row = np.argwhere(~np.isfinite(p) | (p < 0))[0][0]
        raise ValueError(f"{name} must be finite and >= 0; row {row} is {p[row]}")
    sums = p.sum(axis=1)
    bad = np.abs(sums - 1.0) > PROBABILITY_ATOL
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(f"{name} rows must sum to 1; row {row} sums to {sums[row]:.6g}")
    return p


class MostPopular(BasePolicy):
    """Always the action with the highest logged mean reward (ties -> lowest index).

    `fit(actions, rewards, positions)` with positions also learns the best action
    per slot, used by `action_dist`; `action_probabilities` uses the pooled best.
    """

    def __init__(self, n_actions: int, n_features: int | None = None) -> None:
        self._n_actions = _check_n_actions(n_actions)
        self.n_features = n_features
        self.mean_rewards_: np.ndarray | None = None  # (n_actions,), NaN where never logged
        self.counts_: np.ndarray | None = None  # (n_actions,)
        self.best_action_: int | None = None
        self.best_action_by_position_: np.ndarray | None = None  # (n_positions,)

    @property
    def n_actions(self) -> int:
        return self._n_actions

    def _best(self, actions: np.ndarray, rewards: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
        counts = np.bincount(actions, minlength=self._n_actions).astype(np.float64)
        sums = np.bincount(actions, weights=rewards, minlength=self._n_actions)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(counts > 0, sums / counts, np.nan)
        return int(np.argmax(np.where(counts > 0, means, -np.inf))), means, counts

    def fit(
        self, actions: np.ndarray, rewards: np.ndarray, positions: np.ndarray | None = None
    ) -> MostPopular:
        """Learn from logged (n,) actions and rewards, optionally (n,) positions."""
        actions = np.asarray(actions)
        rewards = np.asarray(rewards, dtype=np.float64)
        if actions.ndim != 1 or len(actions) == 0:
            raise ValueError(f"actions must be a non-empty 1-D array, got shape {actions.shape}")
        if not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions must be integers, got dtype {actions.dtype}")
        if rewards.shape != actions.shape:
            raise ValueError(f"rewards must have shape {actions.shape}, got {rewards.shape}")
        bad = (actions < 0) | (actions >= self._n_actions)
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(
                f"actions must be in [0, {self._n_actions}), got {actions[row]} at row {row}"
            )
        if not np.isfinite(rewards).all():
            raise ValueError(
                f"rewards has NaN or inf at row {int(np.argmax(~np.isfinite(rewards)))}"
            )
        self.best_action_, self.mean_rewards_, self.counts_ = self._best(actions, rewards)
        self.best_action_by_position_ = None
        if positions is not None:
            positions = np.asarray(positions)
            if positions.shape != actions.shape or not np.issubdtype(positions.dtype, np.integer):
                raise ValueError(
                    f"positions must be integers of shape {actions.shape}, got {positions.dtype} {positions.shape}"
                )
            if (positions < 0).any():
                raise ValueError(f"positions must be >= 0, got {positions.min()}")
            n_positions = int(positions.max()) + 1
            best = np.full(n_positions, self.best_action_)
            for k in range(n_positions):  # one pass per slot, not per row
                mask = positions == k
                if mask.any():
                    best[k] = self._best(actions[mask], rewards[mask])[0]
            self.best_action_by_position_ = best
        return self

    def _require_fit(self) -> int:
        if self.best_action_ is None:
            raise ValueError("MostPopular is not fitted; call fit(actions, rewards) first")
        return self.best_action_

    def _probabilities(self, contexts: np.ndarray) -> np.ndarray:
        out = np.zeros((contexts.shape[0], self._n_actions))
        out[:, self._require_fit()] = 1.0
        return out

    def action_dist(self, contexts: np.ndarray, n_positions: int | None = None) -> np.ndarray:
        """(n, n_actions, n_positions): the per-slot best action where fitted with positions."""
        probs = self.action_probabilities(contexts)
        best = self.best_action_by_position_
        if best is None:
            return to_action_dist(probs, 1 if n_positions is None else n_positions)
        if n_positions is not None and n_positions != len(best):
            raise ValueError(f"n_positions must be {len(best)} (fitted), got {n_positions}")
        out = np.zeros((probs.shape[0], self._n_actions, len(best)))
        out[:, best, np.arange(len(best))] = 1.0
        return out


class LoggingPolicyReplay(BasePolicy):
    """The logging policy's known probabilities: a fixed (n_actions,) vector or a callable.

    The callable maps (n, n_features) contexts to (n, n_actions) probabilities and
    is checked on every call.
    """

    def __init__(
        self,
        probabilities: np.ndarray | Callable[[np.ndarray], np.ndarray],
        n_actions: int | None = None,
        n_features: int | None = None,
    ) -> None:
        self.n_features = n_features
        if callable(probabilities):
            if n_actions is None:
                raise ValueError("n_actions is required when probabilities is a callable")
            self._fn: Callable[[np.ndarray], np.ndarray] | None = probabilities
            self._vector: np.ndarray | None = None
            self._n_actions = _check_n_actions(n_actions)
            return
        vec = np.asarray(probabilities, dtype=np.float64)
        if vec.ndim != 1:
            raise ValueError(
                f"probabilities must be a (n_actions,) vector or a callable, got shape {vec.shape}"
            )
        if n_actions is not None and len(vec) != n_actions:
            raise ValueError(
                f"probabilities must have length n_actions={n_actions}, got {len(vec)}"
            )
        self._vector = _check_probability_rows(vec[None, :], 1, len(vec), "probabilities")[0]
        self._fn = None
        self._n_actions = _check_n_actions(len(vec))

    @property
    def n_actions(self) -> int:
        return self._n_actions

    @property
    def is_constant(self) -> bool:
        """The same probabilities for every context (a vector, not a callable)."""
        return self._fn is None

    def _probabilities(self, contexts: np.ndarray) -> np.ndarray:
        n = contexts.shape[0]
        if self._fn is None:
            return np.tile(self._vector, (n, 1))
        return _check_probability_rows(
            self._fn(contexts), n, self._n_actions, "logging policy output"
        )


class Oracle(BasePolicy):
    """Greedy on the true expected reward `q(contexts) -> (n, n_actions)`; ties split evenly."""

    def __init__(
        self, q: Callable[[np.ndarray], np.ndarray], n_actions: int, n_features: int | None = None
    ) -> None:
        if not callable(q):
            raise ValueError(
                f"q must be a callable contexts -> (n, n_actions), got {type(q).__name__}"
            )
        self.q = q
        self._n_actions = _check_n_actions(n_actions)
        self.n_features = n_features

    @property
    def n_actions(self) -> int:
        return self._n_actions

    def q_values(self, contexts: np.ndarray) -> np.ndarray:
        """(n, n_actions) true expected rewards, shape-checked."""
        q = np.asarray(self.q(contexts), dtype=np.float64)
        if q.shape != (contexts.shape[0], self._n_actions):
            raise ValueError(
                f"q(contexts) must have shape {(contexts.shape[0], self._n_actions)}, got {q.shape}"
            )
        return q

    def _probabilities(self, contexts: np.ndarray) -> np.ndarray:
        return greedy_probabilities(self.q_values(contexts))

    def regret(self, contexts: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """(n,) expected regret of `actions` against the best action for each context."""
        q = self.q_values(check_contexts(contexts, self.n_features))
        actions = np.asarray(actions)
        if actions.shape != (q.shape[0],) or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(
                f"actions must be integers of shape ({q.shape[0]},), got {actions.dtype} {actions.shape}"
            )
        if ((actions < 0) | (actions >= self._n_actions)).any():
            raise ValueError(
                f"actions must be in [0, {self._n_actions}), got {actions.min()}..{actions.max()}"
            )
        return q.max(axis=1) - q[np.arange(q.shape[0]), actions]


def logging_replay(actions: np.ndarray, n_actions: int, uniform: np.ndarray | None = None) -> np.ndarray:
    """(n, n_actions) the logging policy as a simulator replays it on n logged rows: its exact distribution
    `uniform` (n_actions,) when the log is uniform-random, else the logged action itself (a draw from the
    logging policy, so the replay is unbiased for its value)."""
    n = len(actions)
    if uniform is not None:
        return np.tile(uniform, (n, 1))
    out = np.zeros((n, n_actions))
    out[np.arange(n), actions] = 1.0
    return out
