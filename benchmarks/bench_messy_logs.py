"""Messy-log tools at scale (issue: real logs are messy).

Propensity estimation on a 1,000,000-row synthetic softmax log (PUSHRL_BENCH_MESSY_ACTIONS
actions, default 20):
  - reference: one plain multinomial-logit fit on all rows (no cross-fitting, no calibration);
  - measured: `estimate_propensities` (5-fold cross-fit, per-fold temperature, ECE), its
    mean absolute error against the true logging probabilities, and IPS of a fixed
    candidate policy with estimated vs true propensities.
Budget allocation over 1,000,000 users (no-push + 3 pushes of cost 1, 1.5, 3):
  - reference: a naive sort-based allocator (each user's best value-per-cost push,
    users sorted by it, taken while the budget lasts);
  - measured: `allocate_budget` (hull greedy with its LP bound), `budget_curve`, and
    `fit_threshold` on a 100,000-user sample applied to the 1,000,000-user stream.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

from pushrl.envs.data.propensity import (
    PropensityConfig,
    encode_contexts,
    estimate_propensities,
    fit_multinomial_logit,
)
from pushrl.envs.data.synthetic import SyntheticConfig, generate_log
from pushrl.policies.budget import allocate_budget, budget_curve, fit_threshold

T = TypeVar("T")

N_ROWS = int(os.environ.get("PUSHRL_BENCH_MESSY_ROWS", 1_000_000))
N_ACTIONS = int(os.environ.get("PUSHRL_BENCH_MESSY_ACTIONS", 20))
N_USERS = int(os.environ.get("PUSHRL_BENCH_MESSY_USERS", 1_000_000))


def _timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    """(result, wall seconds, CPU seconds of this process): CPU time is steadier on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _propensity() -> None:
    start = time.perf_counter()
    config = SyntheticConfig(n_rows=N_ROWS, n_users=max(N_ROWS // 10, 1), n_actions=N_ACTIONS, logging="softmax", seed=0)
    data, truth = generate_log(config)
    print(f"log: {N_ROWS:,} rows, {N_ACTIONS} actions, softmax logging (generated in {time.perf_counter() - start:.1f} s)")
    x, _ = encode_contexts(data)
    single, t_ref, c_ref = _timed(lambda: fit_multinomial_logit(x, data.action, N_ACTIONS))
    print(f"reference single fit (no cross-fitting, no calibration): {t_ref:.1f} s wall, {c_ref:.1f} s CPU, "
          f"{single.n_iter} L-BFGS iterations")
    est, t, c = _timed(lambda: estimate_propensities(data, PropensityConfig(n_folds=5), replace_logged=True))
    print(f"estimate_propensities (5 folds, temperature, ECE): {t:.1f} s wall, {c:.1f} s CPU, iterations per fold "
          f"{list(est.fit.n_iter)}; {t / t_ref:.2f}x the reference wall time, {c / c_ref:.2f}x its CPU time")
    true_p = truth.logging_probabilities(*truth.row_inputs(data))
    print(f"  mean |P̂ - P| over (row, action): {np.abs(est.probabilities - true_p).mean():.5f}; ECE {est.ece:.5f}; "
          f"temperatures {[round(temp, 4) for temp in est.fit.temperatures]}")
    q = truth.expected_rewards_for(data, positions=False)
    pi = np.full(q.shape, 0.2 / N_ACTIONS)
    pi[np.arange(N_ROWS), q.argmax(axis=1)] += 0.8
    w = pi[np.arange(N_ROWS), data.action] * data.reward("click")
    terms = w / data.pscore
    half = 1.96 * terms.std(ddof=1) / np.sqrt(N_ROWS)
    print(f"  IPS of 80%-greedy candidate: true propensities {terms.mean():.5f} ± {half:.5f}, "
          f"estimated {np.mean(w / est.pscore):.5f}, true value {truth.policy_value(data, pi[:, :, None]):.5f}")


def naive_allocate(values: np.ndarray, costs: np.ndarray, budget: float) -> np.ndarray:
    """Reference: each user's best value-per-cost push, users sorted by that ratio, taken while the budget lasts."""
    gain = (values - values[:, :1]) / np.where(costs > 0, costs, np.inf)
    best = gain.argmax(axis=1)
    ratio = gain[np.arange(len(values)), best]
    order = np.argsort(-ratio, kind="stable")
    order = order[ratio[order] > 0]
    spent = np.cumsum(costs[best[order]])
    chosen = np.zeros(len(values), dtype=np.int64)
    take = order[spent <= budget]
    chosen[take] = best[take]
    return chosen


def _budget() -> None:
    rng = np.random.default_rng(0)
    costs = np.array([0.0, 1.0, 1.5, 3.0])
    base = rng.gamma(2.0, 0.5, size=(N_USERS, 1))
    uplift = rng.gamma(1.5, 1.0, size=(N_USERS, 3)) * np.array([0.6, 1.0, 2.2]) * rng.random((N_USERS, 1))
    values = np.hstack([base, base + uplift - 0.3])
    budget = 0.2 * N_USERS
    print(f"budget: {N_USERS:,} users, options cost {costs.tolist()}, budget {budget:,.0f}")
    rows = np.arange(N_USERS)
    naive, t_ref, c_ref = _timed(lambda: naive_allocate(values, costs, budget))
    v_ref = values[rows, naive].sum() - base.sum()
    print(f"reference naive sort-based allocator: {t_ref:.2f} s wall, {c_ref:.2f} s CPU, incremental value "
          f"{v_ref:,.0f}, cost {costs[naive].sum():,.0f}")
    alloc, t, c = _timed(lambda: allocate_budget(values, costs, budget))
    gain = alloc.value - base.sum()
    print(f"allocate_budget ({alloc.method}): {t:.2f} s wall, {c:.2f} s CPU ({t / t_ref:.2f}x / {c / c_ref:.2f}x the "
          f"reference), incremental value {gain:,.0f} ({gain / v_ref:.4f}x the reference's), cost {alloc.cost:,.0f}, "
          f"{alloc.n_pushes:,} pushes; LP bound {alloc.upper_bound - base.sum():,.0f} "
          f"(gap <= {(alloc.upper_bound - alloc.value) / gain:.2e} of the value)")
    curve, t, _ = _timed(lambda: budget_curve(values, costs, n_points=200))
    print(f"budget_curve (200 budgets): {t:.2f} s; incremental value at 10%/50%/100% of full spend: "
          + ", ".join(f"{curve.value[k] - base.sum():,.0f}" for k in (20, 100, 199)))
    sample = rng.choice(N_USERS, size=min(100_000, N_USERS // 10), replace=False)
    policy, t_fit, _ = _timed(lambda: fit_threshold(values[sample], costs, budget, n_users=N_USERS))
    acts, t_dec, _ = _timed(lambda: policy.decide(values, costs))
    gain = values[rows, acts].sum() - base.sum()
    print(f"fit_threshold on {len(sample):,} sampled users: {t_fit:.2f} s, lambda {policy.lam:.4f}; decide on {N_USERS:,}: "
          f"{t_dec:.2f} s; stream spend {costs[acts].sum():,.0f} ({costs[acts].sum() / budget:.3f}x budget), "
          f"incremental value {gain:,.0f}")


def main() -> None:
    _propensity()
    _budget()


if __name__ == "__main__":
    main()
