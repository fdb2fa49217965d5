"""What every contextual bandit shares: input checks, offline fitting, the online loop, state.

Array vocabulary (Open Bandit Pipeline): contexts (n, n_features), actions (n,)
ints in [0, n_actions), rewards (n,), weights (n,) >= 0, pscores (n,) in (0, 1].
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from pushrl.policies.policy import BasePolicy, check_contexts, sample_actions


class OnlineEnv(Protocol):
    """The minimal world `run_online` needs (a synthetic problem now, the simulator later).

    An optional `expected_rewards(contexts) -> (n, n_actions)` lets `run_online`
    record the expected regret of each decision.
    """

    def draw_contexts(self, n: int, rng: np.random.Generator) -> np.ndarray: ...

    def reward_fn(
        self, contexts: np.ndarray, actions: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class OnlineResult:
    """Per-decision record of `run_online`: actions, rewards, regret (NaN without ground truth)."""

    actions: np.ndarray
    rewards: np.ndarray
    regret: np.ndarray


@dataclass(frozen=True)
class OfflineResult:
    """Summary of `fit_offline`: rows learned from and, for replay, the replayed mean reward."""

    n_used: int
    replay_value: float


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    """`value` as float; ValueError naming `name` unless it is > 0 (>= 0 with allow_zero)."""
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if not ok or not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        expected = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {expected}, got {value!r}")
    return float(value)


def check_int(name: str, value: int, minimum: int) -> int:
    """`value` as int; ValueError naming `name` unless it is an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class BanditAgent(BasePolicy):
    """A learning Policy: `update` from batches, `fit_offline` from logs, `run_online` in a loop.

    Subclasses implement `_probabilities`, `_update` and the state hooks; `_select`
    may be overridden with a cheaper sampler that skips propensities.
    """

    def __init__(self, n_actions: int, n_features: int, seed: int = 0) -> None:
        self._n_actions = check_int("n_actions", n_actions, 1)
        self.n_features = check_int("n_features", n_features, 1)
        self.seed = check_int("seed", seed, 0)
        self.n_updates = 0  # rows seen by update (weight-0 rows included)

    @property
    def n_actions(self) -> int:
        return self._n_actions

    # ---- learning -------------------------------------------------------------------
    @abstractmethod
    def _update(
        self, contexts: np.ndarray, actions: np.ndarray, rewards: np.ndarray, weights: np.ndarray
    ) -> None:
        """Learn from one validated batch."""

    def update(
        self,
        contexts: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        weights: np.ndarray | None = None,
    ) -> None:
        """Learn from a batch of (context, action, reward) rows, optionally weighted (e.g. IPS)."""
        x = check_contexts(contexts, self.n_features)
        a, r, w = self._check_batch(x.shape[0], actions, rewards, weights)
        if len(a):
            self._update(x, a, r, w)
            self.n_updates += len(a)

    def _check_batch(
        self, n: int, actions: np.ndarray, rewards: np.ndarray, weights: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a = np.asarray(actions)
        if a.shape != (n,):
            raise ValueError(f"actions must have shape ({n},) to match contexts, got {a.shape}")
        if n and not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"actions must be integers, got dtype {a.dtype}")
        bad = (a < 0) | (a >= self._n_actions)
        if bad.any():
            row = int(np.argmax(bad))
            raise ValueError(
                f"actions must be in [0, {self._n_actions}), got {a[row]} at row {row}"
            )
        r = _check_vector("rewards", rewards, n)
        w = np.ones(n) if weights is None else _check_vector("weights", weights, n)
        if (w < 0).any():
            row = int(np.argmax(w < 0))
            raise ValueError(f"weights must be >= 0, got {w[row]} at row {row}")
        return a.astype(np.intp), r, w

    def fit_offline(
        self,
        contexts: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        pscores: np.ndarray,
        mode: Literal["ips", "replay"] = "ips",
        batch_size: int = 256,
        rng: np.random.Generator | None = None,
    ) -> OfflineResult:
        """Learn from a log whose rows were chosen with probability `pscores`.

        "ips": every row, weighted by 1 / pscore normalised to mean 1 (a uniform log
        is then an unweighted fit), in batches of `batch_size`.
        "replay" (Li et al. 2011): walk the log in batches, let the agent choose,
        keep only rows where it agrees with the log, weighted by 1 / (n_actions * pscore)
        (1 for a uniform log); `replay_value` is the mean reward of kept rows.
        """
        x = check_contexts(contexts, self.n_features)
        a, r, _ = self._check_batch(x.shape[0], actions, rewards, None)
        p = _check_vector("pscores", pscores, x.shape[0])
        if ((p <= 0) | (p > 1)).any():
            row = int(np.argmax((p <= 0) | (p > 1)))
            raise ValueError(f"pscores must be in (0, 1], got {p[row]} at row {row}")
        batch_size = check_int("batch_size", batch_size, 1)
        if mode == "ips":
            w = (1.0 / p) / np.mean(1.0 / p) if len(p) else p
            for s in range(0, len(a), batch_size):
                self.update(
                    x[s : s + batch_size],
                    a[s : s + batch_size],
                    r[s : s + batch_size],
                    w[s : s + batch_size],
                )
            return OfflineResult(n_used=len(a), replay_value=float("nan"))
        if mode != "replay":
            raise ValueError(f"mode must be one of ['ips', 'replay'], got {mode!r}")
        rng = np.random.default_rng([self.seed, 1]) if rng is None else rng
        w = 1.0 / (self._n_actions * p)
        used, total = 0, 0.0
        for s in range(0, len(a), batch_size):
            sl = slice(s, s + batch_size)
            keep = self._select(x[sl], rng) == a[sl]
            if keep.any():
                self.update(x[sl][keep], a[sl][keep], r[sl][keep], w[sl][keep])
                used += int(keep.sum())
                total += float(r[sl][keep].sum())
        return OfflineResult(n_used=used, replay_value=total / used if used else float("nan"))

    def choose(self, contexts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n,) actions without propensities: the sampler `run_online` and replay use."""
        return self._select(check_contexts(contexts, self.n_features), rng)

    def _select(self, contexts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return sample_actions(self._probabilities(contexts), rng)[0]

    def run_online(
        self, env_like: OnlineEnv, n_rounds: int, batch_size: int, rng: np.random.Generator
    ) -> OnlineResult:
        """Interact for `n_rounds` decisions, updating after each batch of `batch_size`.

        Each batch: contexts = env_like.draw_contexts(b, rng), the agent chooses,
        rewards = env_like.reward_fn(contexts, actions, rng), then `update`.
        """
        n_rounds = check_int("n_rounds", n_rounds, 0)
        batch_size = check_int("batch_size", batch_size, 1)
        truth = getattr(env_like, "expected_rewards", None)
        actions = np.empty(n_rounds, dtype=np.intp)
        rewards, regret = np.empty(n_rounds), np.full(n_rounds, np.nan)
        for s in range(0, n_rounds, batch_size):
            b = min(batch_size, n_rounds - s)
            x = check_contexts(
                env_like.draw_contexts(b, rng), self.n_features, "draw_contexts output"
            )
            a = self._select(x, rng)
            r = _check_vector("reward_fn output", env_like.reward_fn(x, a, rng), b)
            self.update(x, a, r)
            actions[s : s + b], rewards[s : s + b] = a, r
            if truth is not None:
                q = np.asarray(truth(x), dtype=np.float64)
                regret[s : s + b] = q.max(axis=1) - q[np.arange(b), a]
        return OnlineResult(actions=actions, rewards=rewards, regret=regret)

    # ---- checkpoints ----------------------------------------------------------------
    @abstractmethod
    def _get_state(self) -> dict[str, np.ndarray]: ...

    @abstractmethod
    def _set_state(self, state: dict[str, np.ndarray]) -> None: ...

    def get_state(self) -> dict[str, np.ndarray]:
        """Everything learned, as a dict of numpy arrays (hyperparameters excluded)."""
        return {**self._get_state(), "n_updates": np.asarray(self.n_updates, dtype=np.int64)}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Load `get_state()` output into an agent built with the same hyperparameters."""
        if "n_updates" not in state:
            raise ValueError(f"state is missing 'n_updates'; it has {sorted(state)}")
        self._set_state(state)
        self.n_updates = int(state["n_updates"])


def _check_vector(name: str, values: np.ndarray, n: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match contexts, got {v.shape}")
    bad = ~np.isfinite(v)
    if bad.any():
        raise ValueError(f"{name} has NaN or inf at row {int(np.argmax(bad))}")
    return v
