"""What the simulator needs from a user-response model, and the synthetic truth as one.

A response function maps a batch of users to expected rewards for every
promotion. Shapes (n users, A promotions):

    contexts (n, d) float64: encoded user context (a ContextEncoder's output)
    recent_pushes (n,) float64: pushes this user got in the recent window
    position (n,) int64: display slot (0-based)
    -> {reward name: (n, A) float64 expected reward}

Optional `reward_kinds`: {reward name: "binary" | "continuous"}. The simulator draws a binary
reward (an expected value in [0, 1]) as a Bernoulli outcome and pays a continuous one (money,
non-negative) as its expected value; a response that does not declare a reward's kind gets it
paid as its expected value (`reward_kinds` below).

Optional churn (`unsubscribe_functions` below): `unsubscribe_probability(contexts, recent_pushes, position)
-> (n, A)` P(unsubscribe | pushed a), and for given (row, action) pairs
`unsubscribe_probability_rows(contexts, recent_pushes, position, action) -> (n,)`. A response with the
method and a false `has_unsubscribe` (e.g. a ResponseModel fitted on a log without an unsubscribe
column) provides none. The simulator's churn is this head when present, else its config's rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from pushrl.envs.data.synthetic import SyntheticTruth

KINDS = ("binary", "continuous")


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
    # Optional: reward_kinds -> {reward: "binary" | "continuous"} (see the module docstring).
    # Optional churn: has_unsubscribe -> bool, unsubscribe_probability(contexts, recent_pushes, position) -> (n, A)
    # and unsubscribe_probability_rows(contexts, recent_pushes, position, action) -> (n,) (module docstring).
    def predict(self, contexts: np.ndarray, recent_pushes: np.ndarray, position: np.ndarray) -> dict[str, np.ndarray]:
        """Expected rewards {name: (n, n_actions)} for every promotion."""
        ...


def reward_kinds(response: Any) -> dict[str, str]:
    """{reward: "binary" | "continuous"} for every reward of `response`, from its `reward_kinds`
    (a reward it does not declare, or a response without the attribute: "continuous")."""
    names = tuple(response.reward_names)
    declared = getattr(response, "reward_kinds", None)
    if declared is None:
        return dict.fromkeys(names, "continuous")
    if not isinstance(declared, Mapping):
        raise ValueError(f"response.reward_kinds must be a mapping {{reward: 'binary' | 'continuous'}}, "
                         f"got {type(declared).__name__}")
    unknown = sorted(set(declared) - set(names))
    bad = {r: k for r, k in declared.items() if k not in KINDS}
    if unknown or bad:
        raise ValueError(f"response.reward_kinds must map the response's rewards {list(names)} to one of {KINDS}; "
                         f"got unknown reward(s) {unknown} and kind(s) {bad}")
    return {r: str(declared.get(r, "continuous")) for r in names}


UnsubscribeAll = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
UnsubscribeRows = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def unsubscribe_functions(response: Any) -> tuple[UnsubscribeAll, UnsubscribeRows | None] | None:
    """(unsubscribe_probability, unsubscribe_probability_rows or None) of a response that provides churn;
    None when it has no `unsubscribe_probability` or its `has_unsubscribe` is false."""
    every = getattr(response, "unsubscribe_probability", None)
    if every is None or not callable(every) or not bool(getattr(response, "has_unsubscribe", True)):
        return None
    rows = getattr(response, "unsubscribe_probability_rows", None)
    return every, (rows if callable(rows) else None)


class TrueResponse:
    """The synthetic ground truth behind the ResponseFunction interface.

    Its `contexts` are the raw synthetic user features followed by a one-hot
    segment block (as `truth_contexts` builds them), so the same simulator can
    run on the truth and on a model learned from the truth's logs.
    """

    reward_names = ("click", "conversion", "revenue")
    reward_kinds = {"click": "binary", "conversion": "binary", "revenue": "continuous"}

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

    @property
    def has_unsubscribe(self) -> bool:
        """True when the truth has churn: P(unsubscribe | push a) = SyntheticTruth.unsubscribe_probabilities (0 for
        the no-push action); without churn the env uses its churn rule."""
        return self.truth.has_churn

    def unsubscribe_probability(self, contexts: np.ndarray, recent_pushes: np.ndarray, position: np.ndarray) -> np.ndarray:
        """(n, A) true P(unsubscribe | pushed a); the display slot does not matter."""
        x, _ = self.split_contexts(np.asarray(contexts, dtype=np.float64))
        return self.truth.unsubscribe_probabilities(x, recent_pushes)

    def unsubscribe_probability_rows(self, contexts: np.ndarray, recent_pushes: np.ndarray, position: np.ndarray,
                                     action: np.ndarray) -> np.ndarray:
        """(n,) true P(unsubscribe | pushed action[i])."""
        x, _ = self.split_contexts(np.asarray(contexts, dtype=np.float64))
        p = self.truth.unsubscribe_probability(x, recent_pushes)
        if self.truth.no_push_action is not None:
            p = np.where(np.asarray(action) == self.truth.no_push_action, 0.0, p)
        return p


def truth_contexts(truth: SyntheticTruth, users: np.ndarray | None = None) -> np.ndarray:
    """(n, du + n_segments) raw features + one-hot segment of the given (default: all) users."""
    users = np.arange(truth.config.n_users) if users is None else users
    onehot = np.eye(truth.config.n_segments)[truth.user_segment[users]]
    return np.hstack([truth.user_features[users], onehot])
