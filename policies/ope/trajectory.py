"""Trajectory OPE: the value of a policy over each user's whole sequence of decisions.

One-step OPE cannot value a timing policy whose pushes change tomorrow's
state (fatigue, churn). These estimators weight each user's trajectory by the
product of its per-decision importance weights. A log is flat arrays over
logged steps i (n rows, N users, user u has T_u steps, t = 0-based rank of the
step within its user):

    user                (n,)  user label (any sortable values)
    step                (n,)  order within the user: int step index (consecutive) or timestamp
    pscore              (n,)  mu(a_i | s_i), logging propensity in (0, 1]
    evaluation_pscore   (n,)  pi(a_i | s_i), target probability of the logged action in [0, 1]
    reward              (n,)  r_i
    q_hat_logged        (n,)  Q_hat(s_i, a_i)                       (DR family)
    v_hat               (n,)  V_hat(s_i) = sum_a pi(a | s_i) Q_hat(s_i, a)  (DR family)

With w_k = pi(a_k | s_k) / mu(a_k | s_k), rho_t = prod_{k<=t} w_k, rho_{-1} = 1
(with `clip`: rho_t -> min(rho_t, clip), the cumulative weight is clipped):

    pdis  V = (1/N) sum_u sum_t gamma^t rho_t r_t
    pddr  V = (1/N) sum_u sum_t gamma^t [rho_t (r_t - Q_hat_t) + rho_{t-1} V_hat_t]
              (Jiang & Li 2016; Thomas & Brunskill 2016)
    wpdis V = sum_t gamma^t sum_u rho_t r_t / D_t                      (Precup 2000)
    wdr   V = sum_t gamma^t [sum_u rho_t (r_t - Q_hat_t) / D_t + sum_u rho_{t-1} V_hat_t / D_{t-1}]
              (Thomas & Brunskill 2016)

where D_t = sum_u rho_{min(t, T_u - 1)} and D_{-1} = N: a finished trajectory
stays in an absorbing state with reward 0 and weight 1, so it keeps its final
weight in later normalisers. A step where D_t = 0 (no user supported) adds 0.
With gamma = 1 and one step per user these are IPS, SNIPS, DR and SNDR of
`estimators`; with pi = mu, pdis is the on-policy mean discounted return.

Intervals resample USERS (multinomial bootstrap: N users drawn with
replacement, the estimate recomputed) and report percentiles around the
full-sample estimate. Every estimator in one call sees the same resamples;
a resample in which no user's first logged action has target probability > 0
leaves the self-normalised estimates undefined (NaN) and is skipped. Each
estimate is one sparse (N, 5 H) matrix of per-(user, step) terms times the
(B, N) user counts, so the bootstrap costs O(n B) and no Python loop over users.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import scipy.sparse as sp

from pushrl.policies.ope.bootstrap import Interval, Seed, check_alpha, seed_sequence
from pushrl.policies.ope.estimators import _check_hyperparameter
from pushrl.policies.ope.validation import check_action_dist

#: Elements of one (resamples, users) count block: 8 MiB of float64.
_BLOCK_ELEMENTS = 1 << 20


def _as_rows(array: object, name: str, n: int | None) -> np.ndarray:
    arr = np.asarray(array)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one entry per logged step), got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} rows, expected {n} (the length of user)")
    return arr


def _as_finite(array: object, name: str, n: int) -> np.ndarray:
    arr = _as_rows(array, name, n)
    try:
        arr = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}: {exc}") from exc
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name}[{i}] = {float(arr[i])!r}; must be finite")
    return arr


def _check_probability(arr: np.ndarray, name: str, *, allow_zero: bool) -> None:
    bad = ~(((arr >= 0) if allow_zero else (arr > 0)) & (arr <= 1))
    if bad.any():
        i = int(np.argmax(bad))
        interval = "[0, 1]" if allow_zero else "(0, 1]"
        raise ValueError(f"{name}[{i}] = {float(arr[i])!r} is outside {interval}")


@dataclass(frozen=True, eq=False)
class TrajectoryInputs:
    """Validated flat log of users' decision sequences; constructing one runs every check.

    Rows may come in any order: they are sorted by (user, step). Duplicate
    (user, step) pairs are refused; an integer `step` must be consecutive
    within a user (a gap is an unlogged decision, whose weight would be
    missing); a float `step` (timestamp) only orders. Arrays keep the
    caller's row order, so errors name the caller's rows.
    """

    user: np.ndarray
    step: np.ndarray
    pscore: np.ndarray
    evaluation_pscore: np.ndarray
    reward: np.ndarray
    q_hat_logged: np.ndarray | None = None
    v_hat: np.ndarray | None = None
    order: np.ndarray = field(init=False, repr=False)
    user_code: np.ndarray = field(init=False, repr=False)
    t: np.ndarray = field(init=False, repr=False)
    lengths: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        user = _as_rows(self.user, "user", None)
        n = user.shape[0]
        if n == 0:
            raise ValueError("user is empty: the log needs at least one logged step")
        if user.dtype.kind == "f" and np.isnan(user).any():
            raise ValueError(f"user[{int(np.argmax(np.isnan(user)))}] is NaN; user labels must be set")
        try:
            _, code = np.unique(user, return_inverse=True)
        except TypeError as exc:
            raise ValueError(f"user labels must be mutually sortable: {exc}") from exc
        step = _as_rows(self.step, "step", n)
        if step.dtype.kind not in "iuf":
            raise ValueError(f"step must be an int step index or float timestamp, got dtype {step.dtype}")
        if step.dtype.kind == "f":
            _as_finite(step, "step", n)
        pscore = _as_finite(self.pscore, "pscore", n)
        _check_probability(pscore, "pscore", allow_zero=False)
        evaluation = _as_finite(self.evaluation_pscore, "evaluation_pscore", n)
        _check_probability(evaluation, "evaluation_pscore", allow_zero=True)
        reward = _as_finite(self.reward, "reward", n)
        if (self.q_hat_logged is None) != (self.v_hat is None):
            raise ValueError("q_hat_logged and v_hat must be given together (the DR family needs both)")
        q_hat = None if self.q_hat_logged is None else _as_finite(self.q_hat_logged, "q_hat_logged", n)
        v_hat = None if self.v_hat is None else _as_finite(self.v_hat, "v_hat", n)

        code = code.reshape(-1).astype(np.intp)
        order = np.lexsort((step, code))
        code_s, step_s = code[order], step[order]
        same_user = code_s[1:] == code_s[:-1]
        dup = same_user & (step_s[1:] == step_s[:-1])
        if dup.any():
            j = int(np.argmax(dup))
            raise ValueError(
                f"step[{int(order[j])}] and step[{int(order[j + 1])}] are both {step_s[j].item()!r} for user "
                f"{user[order[j]].item()!r}; each (user, step) must be logged once"
            )
        if step.dtype.kind in "iu":
            gap = same_user & (np.diff(step_s.astype(np.int64)) != 1)
            if gap.any():
                j = int(np.argmax(gap))
                raise ValueError(
                    f"step[{int(order[j + 1])}] = {step_s[j + 1].item()!r} follows step {step_s[j].item()!r} for user "
                    f"{user[order[j]].item()!r}; integer steps must be consecutive (a gap is an unlogged "
                    "decision; pass timestamps as float to order only)"
                )
        starts = np.flatnonzero(np.r_[True, ~same_user])
        lengths = np.diff(np.r_[starts, n])
        t = np.arange(n) - np.repeat(starts, lengths)
        for name, value in [
            ("user", user), ("step", step), ("pscore", pscore), ("evaluation_pscore", evaluation),
            ("reward", reward), ("q_hat_logged", q_hat), ("v_hat", v_hat), ("order", order),
            ("user_code", code_s), ("t", t), ("lengths", lengths),
        ]:
            object.__setattr__(self, name, value)

    @classmethod
    def from_action_dist(
        cls,
        *,
        user: np.ndarray,
        step: np.ndarray,
        action: np.ndarray,
        pscore: np.ndarray,
        reward: np.ndarray,
        action_dist: np.ndarray,
        estimated_rewards: np.ndarray | None = None,
    ) -> TrajectoryInputs:
        """From the target's (n, A) action distribution at each logged state and an (n, A) Q_hat.

        evaluation_pscore_i = action_dist[i, a_i]; q_hat_logged_i = estimated_rewards[i, a_i];
        v_hat_i = sum_a action_dist[i, a] estimated_rewards[i, a].
        """
        dist = np.asarray(action_dist, dtype=np.float64)
        if dist.ndim != 2:
            raise ValueError(f"action_dist must be 2-D (n_steps, n_actions), got shape {dist.shape}")
        check_action_dist(dist[:, :, None])
        n, n_actions = dist.shape
        action = _as_rows(action, "action", n)
        if not np.issubdtype(action.dtype, np.integer):
            raise ValueError(f"action must have an integer dtype, got {action.dtype}")
        bad = (action < 0) | (action >= n_actions)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"action[{i}] = {int(action[i])} is outside [0, n_actions={n_actions})")
        rows = np.arange(n)
        q_hat = v_hat = None
        if estimated_rewards is not None:
            q = np.asarray(estimated_rewards, dtype=np.float64)
            if q.shape != dist.shape:
                raise ValueError(f"estimated_rewards has shape {q.shape}, expected {dist.shape} (action_dist's)")
            if not np.isfinite(q).all():
                i, a = (int(x) for x in np.argwhere(~np.isfinite(q))[0])
                raise ValueError(f"estimated_rewards[{i}, {a}] = {float(q[i, a])!r}; must be finite")
            q_hat, v_hat = q[rows, action], np.einsum("ij,ij->i", dist, q)
        return cls(user, step, pscore, dist[rows, action], reward, q_hat, v_hat)

    @property
    def n_steps(self) -> int:
        return int(self.order.shape[0])

    @property
    def n_users(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def horizon(self) -> int:
        """The longest trajectory, in steps."""
        return int(self.lengths.max())

    def sorted(self, name: str) -> np.ndarray:
        """Array `name` in (user, step) order."""
        return getattr(self, name)[self.order]

    def cumulative_weights(self, clip: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rho_t, rho_{t-1}) per step in (user, step) order, each clipped at `clip` if given."""
        w = self.sorted("evaluation_pscore") / self.sorted("pscore")
        rho = w.copy()
        starts = np.r_[0, np.cumsum(self.lengths)[:-1]]
        by_length = np.argsort(-self.lengths, kind="stable")
        starts_desc, lengths_desc = starts[by_length], self.lengths[by_length]
        alive = np.searchsorted(-lengths_desc, -np.arange(self.horizon), side="left")
        for step in range(1, self.horizon):
            idx = starts_desc[: alive[step]] + step  # users with more than `step` steps
            rho[idx] = rho[idx - 1] * w[idx]
        prev = np.ones_like(rho)
        later = self.t > 0
        prev[later] = rho[np.flatnonzero(later) - 1]
        if clip is not None:
            rho, prev = np.minimum(rho, clip), np.minimum(prev, clip)
        return rho, prev


def _check_gamma(owner: object, gamma: float) -> None:
    ok = isinstance(gamma, int | float | np.integer | np.floating) and not isinstance(gamma, bool)
    if not (ok and 0 <= gamma <= 1):
        raise ValueError(f"{type(owner).__name__}.gamma must be a number in [0, 1], got {gamma!r}")


_BLOCKS = ("reward", "model", "baseline", "rho", "end")


def _step_matrix(inputs: TrajectoryInputs, gamma: float, clip: float | None) -> sp.csr_array:
    """(N, 5 H) sparse per-(user, step) terms; blocks of H columns in `_BLOCKS` order.

    reward: gamma^t rho_t r_t; model: gamma^t rho_t Q_hat_t; baseline: gamma^t rho_{t-1} V_hat_t;
    rho: rho_t; end: the final weight rho_{T_u - 1} at column T_u (its absorbing steps).
    """
    rho, prev = inputs.cumulative_weights(clip)
    t, user, horizon = inputs.t, inputs.user_code, inputs.horizon
    discount = np.power(float(gamma), t)
    cols = [discount * rho * inputs.sorted("reward")]
    if inputs.q_hat_logged is not None:
        cols += [discount * rho * inputs.sorted("q_hat_logged"), discount * prev * inputs.v_hat[inputs.order]]
    else:
        cols += [np.zeros_like(rho), np.zeros_like(rho)]
    cols.append(rho)
    last = np.cumsum(inputs.lengths) - 1
    ended = inputs.lengths < horizon
    data = np.concatenate([*cols, rho[last[ended]]])
    rows = np.concatenate([np.tile(user, 4), np.flatnonzero(ended)])
    col_index = np.concatenate(
        [b * horizon + t for b in range(4)] + [4 * horizon + inputs.lengths[ended]]
    )
    shape = (inputs.n_users, len(_BLOCKS) * horizon)
    return sp.csr_array((data, (rows, col_index)), shape=shape)


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), 0.0)


@dataclass(frozen=True)
class TrajectoryEstimator(ABC):
    """Shared interface. gamma: discount in [0, 1]; clip: cap on the cumulative weight rho_t (None: none)."""

    gamma: float = 1.0
    clip: float | None = None
    name: ClassVar[str]
    needs_model: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_gamma(self, self.gamma)
        _check_hyperparameter(self, "clip", self.clip, minimum=0.0, inclusive=False, allow_none=True)

    @abstractmethod
    def _values(self, sums: np.ndarray, n_users: np.ndarray) -> np.ndarray:
        """(b,) values from (b, 5, H) per-step sums over (resampled) users and (b,) user counts."""

    def _check(self, inputs: TrajectoryInputs) -> None:
        if self.needs_model and inputs.q_hat_logged is None:
            raise ValueError(f"{type(self).__name__} needs q_hat_logged and v_hat, got None")

    def estimate_policy_value(self, inputs: TrajectoryInputs) -> float:
        """The estimated value of the target policy per user (discounted return from a user's first step)."""
        return trajectory_policy_values({self.name: self}, inputs)[self.name]

    def estimate_interval(
        self, inputs: TrajectoryInputs, *, n_bootstrap: int = 1000, alpha: float = 0.05, seed: Seed = None
    ) -> Interval:
        """Point estimate and (1 - alpha) user-bootstrap percentile interval (seeded)."""
        return trajectory_intervals(
            {self.name: self}, inputs, n_bootstrap=n_bootstrap, alpha=alpha, seed=seed
        )[self.name]


def _denominators(sums: np.ndarray, n_users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(D_t, D_{t-1}), each (b, H): D_t = sum_u rho_{min(t, T_u - 1)}, D_{-1} = N."""
    d = sums[:, 3] + np.cumsum(sums[:, 4], axis=1)
    return d, np.concatenate([n_users[:, None], d[:, :-1]], axis=1)


def _undefined_without_support(value: np.ndarray, d: np.ndarray) -> np.ndarray:
    """NaN where D_0 = 0: no user's first logged action has target probability > 0."""
    return np.where(d[:, 0] > 0, value, np.nan)


@dataclass(frozen=True)
class PerDecisionIS(TrajectoryEstimator):
    """PDIS: (1/N) sum_u sum_t gamma^t rho_t r_t."""

    name: ClassVar[str] = "pdis"

    def _values(self, sums: np.ndarray, n_users: np.ndarray) -> np.ndarray:
        return sums[:, 0].sum(axis=1) / n_users


@dataclass(frozen=True)
class WeightedPerDecisionIS(TrajectoryEstimator):
    """WPDIS: sum_t gamma^t sum_u rho_t r_t / D_t (self-normalised per step)."""

    name: ClassVar[str] = "wpdis"

    def _values(self, sums: np.ndarray, n_users: np.ndarray) -> np.ndarray:
        d, _ = _denominators(sums, n_users)
        return _undefined_without_support(_safe_ratio(sums[:, 0], d).sum(axis=1), d)


@dataclass(frozen=True)
class PerDecisionDoublyRobust(TrajectoryEstimator):
    """Per-decision DR: (1/N) sum_u sum_t gamma^t [rho_t (r_t - Q_hat_t) + rho_{t-1} V_hat_t]."""

    name: ClassVar[str] = "pddr"
    needs_model: ClassVar[bool] = True

    def _values(self, sums: np.ndarray, n_users: np.ndarray) -> np.ndarray:
        return (sums[:, 0] - sums[:, 1] + sums[:, 2]).sum(axis=1) / n_users


@dataclass(frozen=True)
class WeightedDoublyRobust(TrajectoryEstimator):
    """WDR: sum_t gamma^t [sum_u rho_t (r_t - Q_hat_t) / D_t + sum_u rho_{t-1} V_hat_t / D_{t-1}]."""

    name: ClassVar[str] = "wdr"
    needs_model: ClassVar[bool] = True

    def _values(self, sums: np.ndarray, n_users: np.ndarray) -> np.ndarray:
        d, d_prev = _denominators(sums, n_users)
        value = (_safe_ratio(sums[:, 0] - sums[:, 1], d) + _safe_ratio(sums[:, 2], d_prev)).sum(axis=1)
        return _undefined_without_support(value, d)


#: Registry: short name -> estimator class (default-constructible).
TRAJECTORY_ESTIMATORS: dict[str, type[TrajectoryEstimator]] = {
    cls.name: cls
    for cls in (PerDecisionIS, WeightedPerDecisionIS, PerDecisionDoublyRobust, WeightedDoublyRobust)
}


def _prepare(
    estimators: Mapping[str, TrajectoryEstimator], inputs: TrajectoryInputs
) -> dict[tuple[float, float | None], sp.csr_array]:
    if not estimators:
        raise ValueError("estimators must name at least one estimator, got an empty mapping")
    if not isinstance(inputs, TrajectoryInputs):
        raise ValueError(f"inputs must be a TrajectoryInputs, got {type(inputs).__name__}")
    matrices = {}
    for estimator in estimators.values():
        estimator._check(inputs)
        key = (float(estimator.gamma), estimator.clip)
        if key not in matrices:
            matrices[key] = _step_matrix(inputs, *key)
    return matrices


def _evaluate(
    estimators: Mapping[str, TrajectoryEstimator],
    matrices: Mapping[tuple[float, float | None], sp.csr_array],
    counts: np.ndarray,
    horizon: int,
) -> dict[str, np.ndarray]:
    """(b,) values of every estimator on the (b, N) user counts."""
    n_users = counts.sum(axis=1)
    sums = {
        key: np.asarray(m.T @ counts.T).T.reshape(counts.shape[0], len(_BLOCKS), horizon)
        for key, m in matrices.items()
    }
    return {
        name: est._values(sums[(float(est.gamma), est.clip)], n_users) for name, est in estimators.items()
    }


def trajectory_policy_values(
    estimators: Mapping[str, TrajectoryEstimator], inputs: TrajectoryInputs
) -> dict[str, float]:
    """Point estimates of several trajectory estimators."""
    matrices = _prepare(estimators, inputs)
    values = _evaluate(estimators, matrices, np.ones((1, inputs.n_users)), inputs.horizon)
    for name, value in values.items():
        if np.isnan(value[0]):
            raise ValueError(
                f"{name}: self-normalised estimate undefined: the first-step weights sum to 0 "
                "(the target gives zero probability to every user's first logged action)"
            )
    return {name: float(v[0]) for name, v in values.items()}


def user_bootstrap_counts(n_users: int, n_bootstrap: int, seed: Seed = None) -> np.ndarray:
    """(n_bootstrap, n_users) times each user is drawn in each resample (N draws with replacement)."""
    rng = np.random.default_rng(seed_sequence(seed))
    draws = rng.integers(0, n_users, size=(n_bootstrap, n_users))
    offsets = (np.arange(n_bootstrap) * n_users)[:, None]
    flat = np.bincount((draws + offsets).ravel(), minlength=n_bootstrap * n_users)
    return flat.reshape(n_bootstrap, n_users).astype(np.float64)


def _check_n_bootstrap(n_bootstrap: int) -> None:
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int | np.integer) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be an int >= 1 for an interval, got {n_bootstrap!r}")


def trajectory_bootstrap_values(
    estimators: Mapping[str, TrajectoryEstimator],
    inputs: TrajectoryInputs,
    *,
    n_bootstrap: int = 1000,
    seed: Seed = None,
) -> dict[str, np.ndarray]:
    """(n_bootstrap,) user-resampled values of each estimator, all on the same resamples.

    Resamples come in blocks of `user_bootstrap_counts`, one child seed per block
    (block size depends only on the number of users). NaN where undefined.
    """
    _check_n_bootstrap(n_bootstrap)
    matrices = _prepare(estimators, inputs)
    n_users = inputs.n_users
    block = max(1, _BLOCK_ELEMENTS // n_users)
    n_blocks = math.ceil(n_bootstrap / block)
    children = seed_sequence(seed).spawn(n_blocks)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in estimators}
    for b, child in enumerate(children):
        size = min(block, n_bootstrap - b * block)
        counts = user_bootstrap_counts(n_users, size, child)
        for name, values in _evaluate(estimators, matrices, counts, inputs.horizon).items():
            parts[name].append(values)
    return {name: np.concatenate(p) for name, p in parts.items()}


def trajectory_intervals(
    estimators: Mapping[str, TrajectoryEstimator],
    inputs: TrajectoryInputs,
    *,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    seed: Seed = None,
) -> dict[str, Interval]:
    """Point estimates and (1 - alpha) percentile intervals, users as the bootstrap unit."""
    check_alpha(alpha)
    values = trajectory_policy_values(estimators, inputs)
    boot = trajectory_bootstrap_values(estimators, inputs, n_bootstrap=n_bootstrap, seed=seed)
    out = {}
    for name, draws in boot.items():
        if np.isnan(draws).all():
            raise ValueError(f"{name}: every bootstrap resample is undefined (log too small?)")
        low, high = np.nanpercentile(draws, [100 * alpha / 2, 100 * (1 - alpha / 2)])
        out[name] = Interval(value=values[name], ci_low=float(low), ci_high=float(high))
    return out


@dataclass(frozen=True)
class TrajectoryWeightDiagnostics:
    """Support of the target in the log, from the final trajectory weights rho_{T_u - 1} (unclipped).

    ESS = (sum_u rho_u)^2 / sum_u rho_u^2 (N when pi = mu); mean_weight should be near 1 when the
    propensities are right (its expectation is 1).
    """

    n_users: int
    n_steps: int
    horizon: int
    effective_sample_size: float
    ess_fraction: float
    max_weight: float
    mean_weight: float
    zero_weight_fraction: float


def trajectory_diagnostics(inputs: TrajectoryInputs) -> TrajectoryWeightDiagnostics:
    """Effective sample size and extremes of the users' final trajectory weights."""
    rho, _ = inputs.cumulative_weights()
    final = rho[np.cumsum(inputs.lengths) - 1]
    total, squares = float(final.sum()), float(np.square(final).sum())
    ess = total**2 / squares if squares > 0 else 0.0
    return TrajectoryWeightDiagnostics(
        n_users=inputs.n_users,
        n_steps=inputs.n_steps,
        horizon=inputs.horizon,
        effective_sample_size=ess,
        ess_fraction=ess / inputs.n_users,
        max_weight=float(final.max()),
        mean_weight=total / inputs.n_users,
        zero_weight_fraction=float(np.mean(final == 0)),
    )
