"""What the simulator needs from a user-response model, and the synthetic truth as one.

A response function maps a batch of users to expected rewards for every
promotion. Shapes (n users, A promotions):

    contexts (n, d) float64: encoded user context (a ContextEncoder's output)
    recent_pushes (n,) float64: pushes this user got in the recent window
    position (n,) int64: display slot (0-based)
    -> {reward name: (n, A) float64 expected reward}, e.g. "click" in [0, 1]
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from pushrl.envs.synthetic import SyntheticTruth


@runtime_checkable
class ResponseFunction(Protocol):
    """Anything the simulator can ask "what would this user do if pushed promotion a?"."""

    @property
    def reward_names(self) -> tuple[str, ...]: ...

    @property
    def n_actions(self) -> int: ...

    # Optional: predict_rows(contexts, recent_pushes, position, action) -> {reward: (n,)} for given
    # (row, action) pairs; the env step calls it when present (ResponseModel has it) instead of
    # scoring every promotion and keeping one.
    def predict(self, contexts: np.ndarray, recent_pushes: np.ndarray, position: np.ndarray) -> dict[str, np.ndarray]:
        """Expected rewards {name: (n, n_actions)} for every promotion."""
        ...


class TrueResponse:
    """The synthetic ground truth behind the ResponseFunction interface.

    Its `contexts` are the raw synthetic user features followed by a one-hot
    segment block (as `truth_contexts` builds them), so the same simulator can
    run on the truth and on a model learned from the truth's logs.
    """

    reward_names = ("click", "conversion", "revenue")

    def __init__(self, truth: SyntheticTruth) -> None:
        self.truth = truth

    @property
    def n_actions(self) -> int:
        return self.truth.config.n_actions

    def split_contexts(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        du = self.truth.config.n_user_features
        return contexts[:, :du], contexts[:, du:].argmax(axis=1)

    # Optional: predict_rows(contexts, recent_pushes, position, action) -> {reward: (n,)} for given
    # (row, action) pairs; the env step calls it when present (ResponseModel has it) instead of
    # scoring every promotion and keeping one.
    def predict(self, contexts: np.ndarray, recent_pushes: np.ndarray, position: np.ndarray) -> dict[str, np.ndarray]:
        x, seg = self.split_contexts(contexts)
        return self.truth.expected_all(x, seg, recent_pushes, position, self.reward_names)


def truth_contexts(truth: SyntheticTruth, users: np.ndarray | None = None) -> np.ndarray:
    """(n, du + n_segments) raw features + one-hot segment of the given (default: all) users."""
    users = np.arange(truth.config.n_users) if users is None else users
    onehot = np.eye(truth.config.n_segments)[truth.user_segment[users]]
    return np.hstack([truth.user_features[users], onehot])
