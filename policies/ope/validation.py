"""The one input check of offline policy evaluation: `OPEInputs`.

Every estimator, the bootstrap, the streaming accumulator and the diagnostics
build an `OPEInputs` and so run exactly these checks. A bad input raises
`ValueError` naming the array and the first offending index; nothing is
dropped or repaired.

Array vocabulary (the Open Bandit Pipeline's), n = n_rounds, A = n_actions,
L = len_list (number of positions):

    action_dist                     (n, A, L) float  evaluation policy pi_e(a | x_i, k)
    reward                          (n,)      float  observed reward r_i
    action                          (n,)      int    logged action a_i in [0, A)
    pscore                          (n,)      float  logging propensity pi_b(a_i | x_i, k_i) in (0, 1]
    position                        (n,)      int    logged position k_i in [0, L), 0-based
    estimated_rewards_by_reg_model  (n, A, L) float  reward model q_hat(x_i, a, k)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

#: Rows of an action distribution must sum to 1 within this absolute tolerance.
SUM_ATOL = 1e-6
_BLOCK_ROWS = 4096


def _first(mask: np.ndarray) -> tuple[int, ...]:
    """Index (as a tuple) of the first True entry of `mask` in C order."""
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(mask)), mask.shape))


def _index_text(index: tuple[int, ...]) -> str:
    return ", ".join(str(i) for i in index)


def _as_float(array: object, name: str) -> np.ndarray:
    try:
        out = np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {type(array).__name__}: {exc}") from exc
    return out


def check_action_dist(action_dist: object, name: str = "action_dist") -> np.ndarray:
    """Check a (n, A, L) action distribution; return it as float64 (see `check_distribution_values`)."""
    arr = _as_float(action_dist, name)
    if arr.ndim != 3:
        raise ValueError(
            f"{name} must be 3-D (n_rounds, n_actions, len_list), got shape {arr.shape}"
        )
    if 0 in arr.shape:
        raise ValueError(f"{name} must be non-empty on every axis, got shape {arr.shape}")
    check_distribution_values(arr, name)
    return arr


def check_distribution_values(dist: np.ndarray, name: str = "action_dist", block_rows: int = _BLOCK_ROWS) -> None:
    """Every (row, position) of a (n, A, L) array is a distribution over actions.

    Values must be finite and >= 0 and sum to 1 over actions within `SUM_ATOL`;
    the first offending cell or (row, position) is named. Read in row blocks,
    each converted to float64 on its own, so a memory-mapped file of any float
    dtype is checked without a full-size copy.
    """
    ones = np.ones(dist.shape[1])
    for start in range(0, dist.shape[0], block_rows):
        block = np.asarray(dist[start : start + block_rows], dtype=np.float64)
        for bad, problem in ((~np.isfinite(block), "is not finite; probabilities must be finite and >= 0"),
                             (block < 0, "is negative; probabilities must be >= 0")):
            if bad.any():
                i, a, k = _first(bad)
                raise ValueError(f"{name}[{_index_text((start + i, a, k))}] = {float(block[i, a, k])!r} {problem}")
        sums = np.matmul(ones, block)  # (rows, L): sum over actions
        off = ~(np.abs(sums - 1.0) <= SUM_ATOL)
        if off.any():
            i, k = _first(off)
            raise ValueError(
                f"{name}[{start + i}, :, {k}] sums to {float(sums[i, k])!r} over actions, expected 1 "
                f"(tolerance {SUM_ATOL:g}); every (row, position) must be a distribution"
            )


def _check_rows(array: object, name: str, n: int, source: str) -> np.ndarray:
    arr = np.asarray(array)
    if arr.shape != (n,):
        raise ValueError(f"{name} has shape {arr.shape}, expected ({n},): n_rounds from {source}")
    return arr


def _check_index_array(
    array: object, name: str, n: int, upper: int, what: str, source: str
) -> np.ndarray:
    arr = _check_rows(array, name, n, source)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, got {arr.dtype}")
    bad = (arr < 0) | (arr >= upper)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name}[{i}] = {int(arr[i])} is outside [0, {what}={upper})")
    return arr.astype(np.intp, copy=False)


@dataclass(frozen=True, eq=False)
class OPEInputs:
    """Validated logged data plus an evaluation policy; constructing one runs every check.

    Shapes: see the module docstring. `reward`, `action` and `pscore` may be
    None for the direct method; `position` may be None only when
    len_list == 1 (it is then all zeros). `n_actions`, when given, is the size
    of the log's action set, and the evaluation policy must score exactly
    that many actions.

    Derived per-row quantities at the logged (action, position) are computed
    once, on first use, and shared by every estimator evaluated on the same
    inputs.
    """

    action_dist: np.ndarray
    reward: np.ndarray | None = None
    action: np.ndarray | None = None
    pscore: np.ndarray | None = None
    position: np.ndarray | None = None
    estimated_rewards_by_reg_model: np.ndarray | None = None
    n_actions: int | None = None

    def __post_init__(self) -> None:
        dist = check_action_dist(self.action_dist)
        n, n_act, len_list = dist.shape
        source = f"action_dist.shape={dist.shape}"
        if self.n_actions is not None and int(self.n_actions) != n_act:
            raise ValueError(
                f"action_dist scores {n_act} actions (axis 1) but the log has n_actions={self.n_actions}; "
                "the evaluation policy must cover exactly the log's actions"
            )
        q_hat = self.estimated_rewards_by_reg_model
        if q_hat is not None:
            q_hat = _as_float(q_hat, "estimated_rewards_by_reg_model")
            if q_hat.ndim == 3 and q_hat.shape[0] == n and q_hat.shape[1] != n_act:
                raise ValueError(
                    f"estimated_rewards_by_reg_model covers {q_hat.shape[1]} actions but action_dist "
                    f"covers {n_act}; the evaluation policy and the log must share one action set"
                )
            if q_hat.shape != dist.shape:
                raise ValueError(
                    f"estimated_rewards_by_reg_model has shape {q_hat.shape}, expected {dist.shape} "
                    "(the shape of action_dist)"
                )
            if not np.isfinite(np.sum(q_hat)):  # one pass; a finite sum means every entry is finite
                bad = ~np.isfinite(q_hat)
                if bad.any():
                    idx = _first(bad)
                    raise ValueError(
                        f"estimated_rewards_by_reg_model[{_index_text(idx)}] is {float(q_hat[idx])!r}; must be finite"
                    )
        position = self.position
        if position is None:
            if len_list > 1:
                raise ValueError(
                    f"position is required: action_dist has len_list={len_list} positions ({source})"
                )
            position = np.zeros(n, dtype=np.intp)
        else:
            position = _check_index_array(position, "position", n, len_list, "len_list", source)
        action = self.action
        if action is not None:
            action = _check_index_array(action, "action", n, n_act, "n_actions", source)
        pscore = self.pscore
        if pscore is not None:
            pscore = _as_float(_check_rows(pscore, "pscore", n, source), "pscore")
            bad = ~((pscore > 0) & (pscore <= 1))
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(
                    f"pscore[{i}] = {float(pscore[i])!r} is outside (0, 1]; a logging propensity must be a "
                    "positive, finite probability"
                )
            if action is None:
                raise ValueError(
                    "pscore was given without action; the propensity belongs to a logged action"
                )
        reward = self.reward
        if reward is not None:
            reward = _as_float(_check_rows(reward, "reward", n, source), "reward")
            bad = ~np.isfinite(reward)
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(
                    f"reward[{i}] is {float(reward[i])!r}; rewards must be finite (no NaN)"
                )
        for name, value in [
            ("action_dist", dist),
            ("estimated_rewards_by_reg_model", q_hat),
            ("position", position),
            ("action", action),
            ("pscore", pscore),
            ("reward", reward),
            ("n_actions", n_act),
        ]:
            object.__setattr__(self, name, value)

    # ------------------------------------------------------------------ sizes
    @property
    def n_rounds(self) -> int:
        return int(self.action_dist.shape[0])

    @property
    def len_list(self) -> int:
        return int(self.action_dist.shape[2])

    def as_kwargs(self) -> dict[str, np.ndarray | int | None]:
        """The arrays as keyword arguments of the estimators' obp-style methods."""
        return {
            "action_dist": self.action_dist,
            "reward": self.reward,
            "action": self.action,
            "pscore": self.pscore,
            "position": self.position,
            "estimated_rewards_by_reg_model": self.estimated_rewards_by_reg_model,
            "n_actions": self.n_actions,
        }

    def require(self, who: str, *names: str) -> None:
        """Raise ValueError if any of the named arrays is missing (None)."""
        missing = [name for name in names if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{who} needs {', '.join(missing)}, got None")

    # ------------------------------------------------- derived per-row terms
    @cached_property
    def evaluation_propensity(self) -> np.ndarray:
        """(n,) pi_e(a_i | x_i, k_i): the evaluation probability of the logged action at its position."""
        self.require("evaluation_propensity", "action")
        return self.action_dist[np.arange(self.n_rounds), self.action, self.position]

    @cached_property
    def importance_weight(self) -> np.ndarray:
        """(n,) w_i = pi_e(a_i | x_i, k_i) / pscore_i, unclipped."""
        self.require("importance_weight", "action", "pscore")
        return self.evaluation_propensity / self.pscore

    @cached_property
    def factual_estimated_reward(self) -> np.ndarray:
        """(n,) q_hat(x_i, a_i, k_i)."""
        self.require("factual_estimated_reward", "action", "estimated_rewards_by_reg_model")
        q_hat = self.estimated_rewards_by_reg_model
        return q_hat[np.arange(self.n_rounds), self.action, self.position]

    @cached_property
    def policy_estimated_reward(self) -> np.ndarray:
        """(n,) sum_a pi_e(a | x_i, k_i) q_hat(x_i, a, k_i) at each row's logged position.

        obp divides by sum_a pi_e(a | x_i, k_i); rows are checked to sum to 1,
        so the two agree to rounding. Computed in row blocks (no (n, A) copy).
        """
        self.require("policy_estimated_reward", "estimated_rewards_by_reg_model")
        dist, q_hat, position = self.action_dist, self.estimated_rewards_by_reg_model, self.position
        out = np.empty(self.n_rounds)
        for start in range(0, self.n_rounds, _BLOCK_ROWS):
            stop = min(start + _BLOCK_ROWS, self.n_rounds)
            rows = np.arange(start, stop)
            k = position[start:stop]
            out[start:stop] = np.einsum("ij,ij->i", dist[rows, :, k], q_hat[rows, :, k])
        return out
