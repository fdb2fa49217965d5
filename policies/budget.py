"""Campaign budgets: send at most B pushes (or spend at most C), to whom it pays most.

Inputs (batch first): values (n, A) predicted value of each action for each
user, costs (A,) or (n, A) >= 0. Every user needs a zero-cost action (the
no-push); the best zero-cost action is the user's default, and the value of
any other action is counted relative to it. For "at most B pushes" use
`unit_costs` (each push costs 1, the no-push 0).

Batch (`allocate_budget`), a multiple-choice knapsack, at most one action per user:
    exact    dynamic programme over integer budgets, O(n · A · B); used by
             method="auto" when every cost is an integer and n · A · (B + 1)
             <= max_dp_cells.
    greedy   each user's options reduced to their upper concave hull in
             (cost, value); hull steps from all users taken in decreasing
             value-per-cost order while they fit, then any later step that
             still fits (a user whose step did not fit gets no further step).
             Exact for unit costs (every push costs the same). In general
             value >= LP - v_crit >= OPT - v_crit, where LP is the linear
             relaxation (reported as `upper_bound`, always >= OPT) and v_crit
             the value of the first step that did not fit (`max_regret`).

Stream (`fit_threshold`): the Lagrangian policy "take the action maximising
value - λ · cost" (pushing only when that beats the no-push), with λ >= 0 the
smallest value (bisection to relative 1e-12) whose mean cost per user on a
sample is within budget / n_users. For its own spend this policy is optimal
on the sample (Everett); on new users the budget holds in expectation only.

Table (`budget_table`): for each budget in `FRACTIONS` (share of users who may
get a push), the exact allocation's policy valued by the model (its mean
predicted value) and by SNIPS on the logged rows with their propensities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pushrl.policies.evaluation import evaluate_policy
from pushrl.policies.policy import to_action_dist

METHODS = ("auto", "exact", "greedy")
MAX_DP_CELLS = 20_000_000


def unit_costs(n_actions: int, no_push: int) -> np.ndarray:
    """(n_actions,) cost 1 for every push and 0 for the no-push action: a budget counts pushes."""
    if not 0 <= no_push < n_actions:
        raise ValueError(f"no_push must be an action index in [0, {n_actions}), got {no_push}")
    costs = np.ones(n_actions)
    costs[no_push] = 0.0
    return costs


def _check_budget(budget: float, name: str = "budget") -> float:
    if isinstance(budget, bool) or not isinstance(budget, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number, got {type(budget).__name__} {budget!r}")
    if not np.isfinite(budget) or budget <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {budget!r}")
    return float(budget)


def check_problem(values: np.ndarray, costs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate values (n, A) and costs (A,) or (n, A); returns float64 (n, A) arrays."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] == 0 or v.shape[1] == 0:
        raise ValueError(f"values must be a non-empty 2-D array (n_users, n_actions), got shape {v.shape}")
    c = np.asarray(costs, dtype=np.float64)
    if c.shape == (v.shape[1],):
        c = np.broadcast_to(c, v.shape)
    if c.shape != v.shape:
        raise ValueError(f"costs must have shape (n_actions,) = ({v.shape[1]},) or {v.shape}, got {c.shape}")
    if not np.all(np.isfinite(v)):
        row = int(np.argwhere(~np.isfinite(v))[0, 0])
        raise ValueError(f"values must be finite; user {row} has {v[row].tolist()}")
    if not np.all(np.isfinite(c)) or c.min() < 0:
        row = int(np.argwhere(~np.isfinite(c) | (c < 0))[0, 0])
        raise ValueError(f"costs must be finite and >= 0; user {row} has {c[row].tolist()}")
    free = (c == 0).any(axis=1)
    if not free.all():
        rows = np.flatnonzero(~free)[:5].tolist()
        raise ValueError(f"every user needs a zero-cost (no-push) action; users {rows} have none "
                         f"({int((~free).sum())} in all)")
    return v, c


def _default(v: np.ndarray, c: np.ndarray) -> np.ndarray:
    """(n,) each user's best zero-cost action."""
    return np.where(c == 0, v, -np.inf).argmax(axis=1)


@dataclass(frozen=True, eq=False)
class HullSteps:
    """Every user's upper-hull steps, sorted by decreasing value per cost (the greedy order).

    Arrays are (n_steps,): user, action (the option the step moves to),
    cost and value (increments), ratio (value / cost), rank (step number within its user).
    """

    user: np.ndarray
    action: np.ndarray
    cost: np.ndarray
    value: np.ndarray
    ratio: np.ndarray
    rank: np.ndarray


def hull_steps(v: np.ndarray, c: np.ndarray, base: np.ndarray) -> HullSteps:
    """Upper concave hull of each user's (cost, value) options from its default, vectorised over users."""
    n, _ = v.shape
    rows = np.arange(n)
    cur_c, cur_v = np.zeros(n), v[rows, base].copy()
    prev = np.full(n, np.inf)
    parts: list[tuple[np.ndarray, ...]] = []
    active = np.ones(n, dtype=bool)
    k = 0
    while active.any():
        idx = np.flatnonzero(active)
        dc = c[idx] - cur_c[idx, None]
        dv = v[idx] - cur_v[idx, None]
        ok = (dc > 0) & (dv > 0)
        slope = np.where(ok, dv / np.where(ok, dc, 1.0), -np.inf)
        best = slope.max(axis=1)
        has = np.isfinite(best)
        # among options on the best slope, go to the farthest (merges collinear steps)
        far = np.where(ok & (slope == best[:, None]), c[idx], -np.inf).argmax(axis=1)
        idx, far, best = idx[has], far[has], best[has]
        active[:] = False
        active[idx] = True
        if idx.size == 0:
            break
        step_c, step_v = c[idx, far] - cur_c[idx], v[idx, far] - cur_v[idx]
        ratio = np.minimum(best, prev[idx])  # keeps each user's ratios non-increasing despite rounding
        parts.append((idx, far, step_c, step_v, ratio, np.full(idx.size, k)))
        cur_c[idx], cur_v[idx], prev[idx] = c[idx, far], v[idx, far], ratio
        k += 1
    if not parts:
        empty = np.zeros(0)
        return HullSteps(empty.astype(np.int64), empty.astype(np.int64), empty, empty, empty, empty.astype(np.int64))
    user, action, cost, value, ratio, rank = (np.concatenate(p) for p in zip(*parts, strict=True))
    order = np.lexsort((user, rank, -ratio))
    return HullSteps(user[order], action[order], cost[order], value[order], ratio[order], rank[order])


@dataclass(frozen=True, eq=False)
class Allocation:
    """A budgeted assignment of one action per user.

    Attributes:
        actions: (n,) chosen action per user.
        value: Σ values[i, actions[i]] (predicted).
        cost: Σ costs[i, actions[i]] (<= budget).
        budget: the budget.
        method: "exact" or "greedy".
        upper_bound: an upper bound on the optimum (the optimum itself for "exact").
        max_regret: the greedy guarantee: value >= upper_bound - max_regret (0 for "exact").
        n_pushes: users whose action is not their default (zero-cost) one.
    """

    actions: np.ndarray
    value: float
    cost: float
    budget: float
    method: str
    upper_bound: float
    max_regret: float
    n_pushes: int


def _exact(v: np.ndarray, c: np.ndarray, base: np.ndarray, budget: int) -> np.ndarray:
    """Multiple-choice knapsack by dynamic programming over integer budgets 0..budget."""
    n, a = v.shape
    gain = v - v[np.arange(n), base][:, None]
    ci = np.rint(c).astype(np.int64)
    best = np.zeros(budget + 1)  # best gain with cost <= b
    choice = np.empty((n, budget + 1), dtype=np.int32)
    for i in range(n):
        new, arg = best.copy(), np.full(budget + 1, base[i], dtype=np.int32)
        for j in range(a):
            cj = ci[i, j]
            if gain[i, j] <= 0 or cj > budget:
                continue
            cand = best[: budget + 1 - cj] + gain[i, j]
            better = cand > new[cj:]
            new[cj:] = np.where(better, cand, new[cj:])
            arg[cj:] = np.where(better, j, arg[cj:])
        best, choice[i] = new, arg
    actions = np.empty(n, dtype=np.int64)
    b = budget
    for i in range(n - 1, -1, -1):
        actions[i] = choice[i, b]
        b -= ci[i, actions[i]]
    return actions


def _greedy(steps: HullSteps, base: np.ndarray, budget: float) -> tuple[np.ndarray, float, float]:
    """Greedy over hull steps; returns (actions, LP upper bound on the gain, critical step value)."""
    cum_c = np.cumsum(steps.cost)
    m = int(np.searchsorted(cum_c, budget, side="right"))
    take = np.zeros(len(steps.cost), dtype=bool)
    take[:m] = True
    gain = float(steps.value[:m].sum())
    if m == len(steps.cost):
        return _apply(steps, take, base), gain, 0.0
    left = budget - (cum_c[m - 1] if m else 0.0)
    bound = gain + left / steps.cost[m] * steps.value[m]
    crit = float(steps.value[m])
    blocked = {int(steps.user[m])}
    suffix_min = np.minimum.accumulate(steps.cost[::-1])[::-1]
    for t in range(m + 1, len(steps.cost)):  # fill: later steps that still fit
        if left < suffix_min[t]:
            break
        u = int(steps.user[t])
        if u in blocked:
            continue
        if steps.cost[t] <= left:
            take[t] = True
            left -= steps.cost[t]
        else:
            blocked.add(u)
    return _apply(steps, take, base), bound, crit


def _apply(steps: HullSteps, take: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Each user's last taken step (highest rank) decides its action."""
    actions = base.astype(np.int64).copy()
    u, r, a = steps.user[take], steps.rank[take], steps.action[take]
    order = np.lexsort((r, u))
    u, a = u[order], a[order]
    last = np.r_[u[1:] != u[:-1], True] if u.size else np.zeros(0, dtype=bool)
    actions[u[last]] = a[last]
    return actions


def allocate_budget(
    values: np.ndarray, costs: np.ndarray, budget: float, *, method: str = "auto", max_dp_cells: int = MAX_DP_CELLS
) -> Allocation:
    """Choose one action per user maximising total value with total cost <= budget (see module docstring)."""
    budget = _check_budget(budget)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    v, c = check_problem(values, costs)
    n, a = v.shape
    base = _default(v, c)
    integral = bool(np.all(c == np.rint(c)))
    small = n * a * (int(budget) + 1) <= max_dp_cells
    if method == "exact" and not integral:
        raise ValueError("method='exact' needs integer costs; got non-integer costs (use method='greedy')")
    if method == "exact" or (method == "auto" and integral and small):
        actions = _exact(v, c, base, int(np.floor(budget + 1e-9)))
        used = "exact"
    else:
        actions, lp_gain, crit = _greedy(hull_steps(v, c, base), base, budget)
        used = "greedy"
    rows = np.arange(n)
    value, cost = float(v[rows, actions].sum()), float(c[rows, actions].sum())
    if used == "exact":
        upper, regret = value, 0.0
    else:
        upper, regret = float(v[rows, base].sum()) + lp_gain, crit
    return Allocation(actions, value, cost, budget, used, upper, regret, int((actions != base).sum()))


@dataclass(frozen=True, eq=False)
class BudgetCurve:
    """Greedy value against budget, for plotting. Arrays (n_points,).

    value is the greedy prefix (no fill pass) and upper the LP bound: the
    optimum at each budget lies between them.
    """

    budget: np.ndarray
    value: np.ndarray
    upper: np.ndarray
    cost: np.ndarray
    n_pushes: np.ndarray


def budget_curve(values: np.ndarray, costs: np.ndarray, budgets: np.ndarray | None = None, n_points: int = 50) -> BudgetCurve:
    """Value versus budget from one sort (default budgets: 0 .. the cost of every worthwhile push)."""
    v, c = check_problem(values, costs)
    base = _default(v, c)
    steps = hull_steps(v, c, base)
    base_value = float(v[np.arange(len(v)), base].sum())
    cum_c, cum_v = np.r_[0.0, np.cumsum(steps.cost)], np.r_[0.0, np.cumsum(steps.value)]
    cum_n = np.r_[0, np.cumsum(steps.rank == 0)]
    if budgets is None:
        budgets = np.linspace(0.0, cum_c[-1], n_points)
    b = np.asarray(budgets, dtype=np.float64)
    if b.ndim != 1 or not np.all(np.isfinite(b)) or (b < 0).any():
        raise ValueError(f"budgets must be a 1-D array of finite numbers >= 0, got {b!r}")
    m = np.searchsorted(cum_c, b, side="right") - 1
    nxt = np.minimum(m + 1, len(cum_c) - 1)
    span = cum_c[nxt] - cum_c[m]
    frac = np.where(span > 0, (b - cum_c[m]) / np.where(span > 0, span, 1.0), 0.0)
    upper = cum_v[m] + np.clip(frac, 0, 1) * (cum_v[nxt] - cum_v[m])
    return BudgetCurve(b, base_value + cum_v[m], base_value + upper, cum_c[m], cum_n[m])


@dataclass(frozen=True, eq=False)
class ThresholdPolicy:
    """Push when value - lam · cost beats the no-push (Lagrangian threshold for a stream).

    Attributes:
        lam: the price of one unit of cost, λ >= 0.
        budget_per_user: the target mean cost per user.
        expected_cost_per_user, expected_value_per_user: on the fitting sample.
    """

    lam: float
    budget_per_user: float
    expected_cost_per_user: float
    expected_value_per_user: float

    def decide(self, values: np.ndarray, costs: np.ndarray) -> np.ndarray:
        """(n,) action per user: argmax of value - λ·cost, ties to the cheaper action."""
        v, c = check_problem(values, costs)
        return _lagrangian_actions(v, c, self.lam)


def _lagrangian_actions(v: np.ndarray, c: np.ndarray, lam: float) -> np.ndarray:
    score = v - lam * c
    ties = score == score.max(axis=1, keepdims=True)
    return np.where(ties, c, np.inf).argmin(axis=1)


def fit_threshold(values: np.ndarray, costs: np.ndarray, budget: float, n_users: int | None = None) -> ThresholdPolicy:
    """λ for a stream of `n_users` users (default: as many as the sample) sharing `budget`."""
    budget = _check_budget(budget)
    v, c = check_problem(values, costs)
    n = len(v)
    if n_users is None:
        n_users = n
    if isinstance(n_users, bool) or not isinstance(n_users, int | np.integer) or n_users < 1:
        raise ValueError(f"n_users must be an int >= 1, got {n_users!r}")
    target = budget / n_users
    rows = np.arange(n)

    def mean_cost(lam: float) -> float:
        return float(c[rows, _lagrangian_actions(v, c, lam)].mean())

    lo = 0.0
    if mean_cost(lo) <= target:
        lam = lo
    else:
        base_v = v[rows, _default(v, c)][:, None]
        gain = np.where(c > 0, (v - base_v) / np.where(c > 0, c, 1.0), 0.0)
        hi = float(max(gain.max(), 0.0)) * (1 + 1e-9) + 1e-12
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if mean_cost(mid) <= target:
                hi = mid
            else:
                lo = mid
            if hi - lo <= 1e-12 * hi:
                break
        lam = hi
    actions = _lagrangian_actions(v, c, lam)
    return ThresholdPolicy(lam, target, float(c[rows, actions].mean()), float(v[rows, actions].mean()))


FRACTIONS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
"""The budgets of `budget_table`, as shares of the users."""


def snips_identified(pscore: np.ndarray) -> bool:
    """Whether SNIPS identifies other policies: not when every logged propensity is 1.0."""
    return not bool(np.all(np.asarray(pscore) == 1.0))


def budget_table(q: np.ndarray, no_push: int, reward: np.ndarray, action: np.ndarray, pscore: np.ndarray,
                 seed: int, n_bootstrap: int = 200, data_name: str = "log") -> pd.DataFrame:
    """One row per budget (share of customers who may get a push): allocation, simulator and OPE values.

    q: (n, A) predicted objective per action; no_push: the no-push action's index; reward, action,
    pscore: (n,) the logged rows. Columns: budget_share, pushes, simulator, snips, ci_low, ci_high;
    SNIPS and its CI are NaN when every propensity is 1.0.
    """
    n, a = q.shape
    if not 0 <= no_push < a:
        raise ValueError(f"no_push must be an action index in [0, {a}), got {no_push}")
    identified = snips_identified(pscore)
    costs = unit_costs(a, no_push)
    rows = []
    for frac in FRACTIONS:
        budget = frac * n
        chosen = allocate_budget(q, costs, budget).actions if budget > 0 else np.full(n, no_push)
        probs = np.eye(a)[chosen]
        row = {"budget_share": frac, "pushes": int((chosen != no_push).sum()),
               "simulator": float(q[np.arange(n), chosen].mean()), "snips": np.nan, "ci_low": np.nan,
               "ci_high": np.nan}
        if identified:
            ev = evaluate_policy(policy=f"budget {frac:.0%}", data=data_name, split="test",
                                 action_dist=to_action_dist(probs, 1), reward=reward, action=action, pscore=pscore,
                                 position=np.zeros(n, dtype=np.int64), estimated_rewards=to_action_dist(q, 1),
                                 recommended="snips", n_bootstrap=n_bootstrap, seed=seed)
            s = ev.estimates["snips"]
            row |= {"snips": s.value, "ci_low": s.ci_low, "ci_high": s.ci_high}
        rows.append(row)
    return pd.DataFrame(rows)
