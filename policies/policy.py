"""The one interface every trained agent, baseline and artifact exposes.

Shapes (batch first, as everywhere in pushrl):
    contexts:      (n, n_features) float64, encoded context features
    probabilities: (n, n_actions) float64, rows sum to 1
    action_dist:   (n, n_actions, n_positions), the Open Bandit Pipeline layout
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol, runtime_checkable

import numpy as np

PROBABILITY_ATOL = 1e-6


@runtime_checkable
class Policy(Protocol):
    """Anything that can act: OPE, the simulator and export need nothing more."""

    @property
    def n_actions(self) -> int: ...

    def action_probabilities(self, contexts: np.ndarray) -> np.ndarray:
        """Return (n, n_actions) probabilities of each action for each context."""
        ...

    def act(self, contexts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Sample one action per context; return (actions (n,), propensities (n,))."""
        ...


def check_contexts(contexts: np.ndarray, n_features: int | None, name: str = "contexts") -> np.ndarray:
    """Validate a context batch: 2-D, finite, the expected width. Returns float64."""
    arr = np.asarray(contexts, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, n_features), got shape {arr.shape}")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(
            f"{name} has {arr.shape[1]} features per row, the policy expects {n_features}"
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"{name} has NaN or inf at row {row}, feature {col}")
    return arr


def sample_rows(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One action per row by inverse CDF; never returns a zero-probability action of a row with mass."""
    cdf = np.cumsum(p, axis=1)
    u = rng.random(p.shape[0]) * cdf[:, -1]
    a = np.minimum((cdf <= u[:, None]).sum(axis=1), p.shape[1] - 1)
    rows = np.arange(p.shape[0])
    stray = p[rows, a] <= 0
    if stray.any():  # u * total rounded onto the last step: take the last positive action
        a[stray] = p.shape[1] - 1 - np.argmax(p[stray, ::-1] > 0, axis=1)
    return a


def sample_actions(
    probabilities: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse-CDF sampling of one action per row (`sample_rows`); returns (actions, propensities)."""
    actions = sample_rows(probabilities, rng)
    return actions, probabilities[np.arange(len(actions)), actions]


class BasePolicy(ABC):
    """Implements `act` once for every policy that defines `action_probabilities`."""

    n_features: int | None = None

    @property
    @abstractmethod
    def n_actions(self) -> int: ...

    @abstractmethod
    def _probabilities(self, contexts: np.ndarray) -> np.ndarray:
        """(n, n_actions) probabilities for already-validated contexts."""

    def action_probabilities(self, contexts: np.ndarray) -> np.ndarray:
        return self._probabilities(check_contexts(contexts, self.n_features))

    def act(self, contexts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return sample_actions(self.action_probabilities(contexts), rng)


class UniformPolicy(BasePolicy):
    """Every action with probability 1 / n_actions (the uniform-random baseline); `n_features` (optional) is
    checked against the contexts."""

    def __init__(self, n_actions: int, n_features: int | None = None) -> None:
        if isinstance(n_actions, bool) or not isinstance(n_actions, int | np.integer) or n_actions < 1:
            raise ValueError(f"n_actions must be an integer >= 1, got {n_actions!r}")
        self._n_actions = int(n_actions)
        self.n_features = n_features

    @property
    def n_actions(self) -> int:
        return self._n_actions

    def _probabilities(self, contexts: np.ndarray) -> np.ndarray:
        return np.full((contexts.shape[0], self._n_actions), 1.0 / self._n_actions)


class ConstantPolicy(BasePolicy):
    """Always the same action ("always send X")."""

    def __init__(self, n_actions: int, action: int) -> None:
        if not 0 <= action < n_actions:
            raise ValueError(f"action must be in [0, {n_actions}), got {action}")
        self._n_actions, self.action = int(n_actions), int(action)

    @property
    def n_actions(self) -> int:
        return self._n_actions

    def _probabilities(self, contexts: np.ndarray) -> np.ndarray:
        out = np.zeros((contexts.shape[0], self._n_actions))
        out[:, self.action] = 1.0
        return out


def to_action_dist(probabilities: np.ndarray, n_positions: int) -> np.ndarray:
    """(n, n_actions) -> (n, n_actions, n_positions): the same distribution in every slot.

    A (n, n_actions, n_positions) input is checked and returned as is.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim == 2:
        return np.repeat(p[:, :, None], n_positions, axis=2)
    if p.ndim == 3 and p.shape[2] == n_positions:
        return p
    raise ValueError(
        f"probabilities must have shape (n, n_actions) or (n, n_actions, {n_positions}), got {p.shape}"
    )
