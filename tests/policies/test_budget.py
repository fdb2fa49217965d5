"""Budgeted allocation: exact DP and greedy against brute force, the Lagrangian stream policy, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.policies.budget import (
    FRACTIONS,
    allocate_budget,
    budget_curve,
    budget_table,
    check_problem,
    fit_threshold,
    hull_steps,
    unit_costs,
)


def brute_force(values: np.ndarray, costs: np.ndarray, budgets: float | list[float]) -> float | list[float]:
    """The optimum at each budget by enumerating every assignment (n <= 12)."""
    n, a = values.shape
    c = np.broadcast_to(costs, values.shape)
    combos = np.stack(np.unravel_index(np.arange(a**n), (a,) * n), axis=1)
    total_v = np.zeros(len(combos))
    total_c = np.zeros(len(combos))
    for i in range(n):
        total_v += values[i, combos[:, i]]
        total_c += c[i, combos[:, i]]
    best = [float(total_v[total_c <= b + 1e-9].max()) for b in np.atleast_1d(budgets)]
    return best if isinstance(budgets, list) else best[0]


def instance(seed: int, n: int, a: int, integer: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(n, a))
    if integer:
        costs = rng.integers(1, 4, size=(n, a)).astype(float)
    else:
        costs = rng.uniform(0.2, 3.0, size=(n, a))
    costs[:, 0] = 0.0  # action 0: the no-push
    return values, costs


@pytest.mark.parametrize("seed", range(8))
def test_exact_dp_matches_brute_force(seed):
    values, costs = instance(seed, n=8, a=4, integer=True)
    budgets = [1, 3, 6, 11]
    for budget, best in zip(budgets, brute_force(values, costs, budgets), strict=True):
        alloc = allocate_budget(values, costs, budget, method="exact")
        assert alloc.method == "exact"
        assert alloc.cost <= budget
        assert alloc.value == pytest.approx(best, abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_greedy_is_exact_for_unit_costs(seed):
    rng = np.random.default_rng(100 + seed)
    values = rng.normal(size=(11, 3))
    costs = unit_costs(3, no_push=1)
    budgets = [1, 2, 5, 11]
    for budget, best in zip(budgets, brute_force(values, costs, budgets), strict=True):
        alloc = allocate_budget(values, costs, budget, method="greedy")
        assert alloc.method == "greedy" and alloc.cost <= budget
        assert alloc.value == pytest.approx(best, abs=1e-9)


@pytest.mark.parametrize("seed", range(6))
def test_greedy_within_stated_bound(seed):
    values, costs = instance(200 + seed, n=8, a=4, integer=False)
    budgets = [0.5, 2.0, 4.5, 9.0]
    for budget, best in zip(budgets, brute_force(values, costs, budgets), strict=True):
        alloc = allocate_budget(values, costs, budget, method="greedy")
        assert alloc.cost <= budget + 1e-9
        assert best <= alloc.upper_bound + 1e-9  # the LP bound is an upper bound
        assert alloc.value <= best + 1e-9  # feasible
        assert alloc.value >= alloc.upper_bound - alloc.max_regret - 1e-9  # the stated guarantee


def test_greedy_is_not_always_optimal_but_auto_uses_exact():
    # ratio 1.1 for cost 1 comes first, then the ratio-1.0 push of cost 10 no longer fits
    values = np.array([[0.0, 1.1], [0.0, 10.0]])
    costs = np.array([[0.0, 1.0], [0.0, 10.0]])
    greedy = allocate_budget(values, costs, 10, method="greedy")
    assert greedy.value == pytest.approx(1.1) and greedy.upper_bound == pytest.approx(10.1)
    assert greedy.max_regret == pytest.approx(10.0)
    exact = allocate_budget(values, costs, 10)
    assert exact.method == "exact" and exact.value == pytest.approx(10.0) == brute_force(values, costs, 10)
    assert exact.actions.tolist() == [0, 1]


def test_greedy_fill_pass_uses_leftover_budget():
    values = np.array([[0.0, 10.0], [0.0, 3.0], [0.0, 0.5]])
    costs = np.array([[0.0, 5.0], [0.0, 4.0], [0.0, 1.0]])
    alloc = allocate_budget(values, costs, 6.0, method="greedy")
    # ratios 2.0, 0.75, 0.5: user 0 fits, user 1 does not, user 2 still fits
    assert alloc.actions.tolist() == [1, 0, 1]
    assert alloc.cost == 6.0


def test_hull_steps_are_concave_per_user():
    values, costs = instance(7, n=200, a=6, integer=False)
    steps = hull_steps(values, costs, np.zeros(200, dtype=np.int64))
    assert np.all(np.diff(steps.ratio) <= 0)
    for u in range(200):
        mine = steps.rank[steps.user == u]
        assert mine.tolist() == list(range(len(mine)))


def test_value_curve_is_monotone_and_matches_allocation_for_unit_costs():
    rng = np.random.default_rng(3)
    values = rng.normal(size=(500, 4))
    costs = unit_costs(4, no_push=0)
    curve = budget_curve(values, costs, budgets=np.arange(0, 501, 50))
    assert np.all(np.diff(curve.value) >= -1e-12) and np.all(curve.upper >= curve.value - 1e-12)
    for b, v in zip(curve.budget[1:], curve.value[1:], strict=True):
        assert v == pytest.approx(allocate_budget(values, costs, float(b), method="greedy").value)
    assert curve.n_pushes[-1] == int((values[:, 1:].max(axis=1) > values[:, 0]).sum())
    assert budget_curve(values, costs, n_points=7).budget.shape == (7,)


def test_threshold_meets_budget_and_is_optimal_for_its_spend():
    values, costs = instance(11, n=9, a=3, integer=True)
    policy = fit_threshold(values, costs, budget=4.0)
    assert policy.expected_cost_per_user * 9 <= 4.0 + 1e-9
    spend = policy.expected_cost_per_user * 9
    best = brute_force(values, costs, spend)
    assert policy.expected_value_per_user * 9 == pytest.approx(best, abs=1e-9)  # Everett
    acts = policy.decide(values, costs)
    assert costs[np.arange(9), acts].sum() == pytest.approx(spend)


def test_threshold_generalises_to_a_stream():
    rng = np.random.default_rng(5)
    sample = rng.gamma(2.0, size=(20_000, 3)) * [0.0, 1.0, 1.5]
    costs = np.array([0.0, 1.0, 2.0])
    policy = fit_threshold(sample, costs, budget=300.0, n_users=1000)
    assert policy.lam > 0 and policy.expected_cost_per_user <= 0.3 + 1e-12
    assert policy.expected_cost_per_user > 0.29
    stream = rng.gamma(2.0, size=(50_000, 3)) * [0.0, 1.0, 1.5]
    spent = costs[policy.decide(stream, costs)].mean()
    assert spent == pytest.approx(0.3, rel=0.05)
    loose = fit_threshold(sample, costs, budget=1e9)
    assert loose.lam == 0.0


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda v, c: allocate_budget(v, c, 0), ValueError, r"budget must be a finite number > 0, got 0"),
        (lambda v, c: allocate_budget(v, c, -2.5), ValueError, r"budget must be .* > 0, got -2.5"),
        (lambda v, c: allocate_budget(v, c, float("nan")), ValueError, r"budget .* got nan"),
        (lambda v, c: allocate_budget(v, c, "10"), TypeError, r"budget must be a number, got str '10'"),
        (lambda v, c: fit_threshold(v, c, budget=0.0), ValueError, r"budget must be .* > 0, got 0.0"),
        (lambda v, c: fit_threshold(v, c, budget=1.0, n_users=0), ValueError, r"n_users must be an int >= 1, got 0"),
        (lambda v, c: allocate_budget(v, c, 1, method="lp"), ValueError, r"method must be one of"),
        (lambda v, c: allocate_budget(v, c + 0.5, 1), ValueError, r"users \[0, 1, 2\] have none"),
        (lambda v, c: allocate_budget(v, -c, 1), ValueError, r"costs must be finite and >= 0; user 0"),
        (lambda v, c: allocate_budget(v[0], c, 1), ValueError, r"values must be a non-empty 2-D array .* got shape \(3,\)"),
        (lambda v, c: allocate_budget(v, c[:2], 1), ValueError, r"costs must have shape \(n_actions,\) = \(3,\)"),
        (lambda v, c: allocate_budget(v, c * 0.5, 1, method="exact"), ValueError, r"needs integer costs"),
        (lambda v, c: unit_costs(3, no_push=3), ValueError, r"no_push must be an action index in \[0, 3\), got 3"),
        (lambda v, c: budget_curve(v, c, budgets=np.array([-1.0])), ValueError, r"budgets must be .* >= 0"),
    ],
)
def test_bad_input(call, error, match):
    values = np.array([[0.0, 1.0, 2.0], [0.0, 0.5, 0.1], [0.0, 3.0, 1.0]])
    costs = np.array([0.0, 1.0, 2.0])
    with pytest.raises(error, match=match):
        call(values, costs)


def test_non_finite_values_named():
    values = np.array([[0.0, 1.0], [0.0, np.nan]])
    with pytest.raises(ValueError, match=r"user 1 has \[0.0, nan\]"):
        check_problem(values, np.array([0.0, 1.0]))


# the value-versus-budget table -----------------------------------------------------------------
def _budget_problem(n: int = 3000, no_push: int = 0, seed: int = 0):
    rng = np.random.default_rng(seed)
    q = 0.05 + rng.normal(0.0, 0.02, (n, 3))
    q[:, 1] += 0.01
    q[:, no_push] = 0.05
    action = rng.integers(0, 3, n)
    reward = (rng.random(n) < np.clip(q[np.arange(n), action], 0, 1)).astype(float)
    return q, action, reward


def test_budget_table_respects_budgets_and_matches_a_direct_computation():
    n = 3000
    q, action, reward = _budget_problem(n)
    table = budget_table(q, 0, reward, action, np.full(n, 1 / 3), seed=0, n_bootstrap=50)
    assert list(table["budget_share"]) == list(FRACTIONS)
    assert (table["pushes"] <= table["budget_share"] * n + 1e-9).all()
    assert table["pushes"].iloc[0] == 0 and abs(table["simulator"].iloc[0] - 0.05) < 1e-12
    # more budget never lowers the (model's) value, and the full budget sends only pushes that pay
    assert np.all(np.diff(table["simulator"]) >= -1e-12)
    assert table["pushes"].iloc[-1] == int((q[:, 1:].max(axis=1) > 0.05).sum())
    best = np.where(q[:, 1:].max(axis=1) > 0.05, 1 + q[:, 1:].argmax(axis=1), 0)
    assert abs(table["simulator"].iloc[-1] - q[np.arange(n), best].mean()) < 1e-12


def test_non_uniform_propensities_and_a_no_push_action_that_is_not_first():
    """Budget 0 = always no push: SNIPS = the inverse-propensity weighted mean of the no-push rows."""
    n = 3000
    q, _, _ = _budget_problem(n, no_push=2, seed=1)
    rng = np.random.default_rng(5)
    probs = rng.dirichlet([2.0, 2.0, 2.0], n)  # a context-dependent logging policy
    action = (rng.random((n, 1)) > np.cumsum(probs, axis=1)).sum(axis=1).clip(0, 2)
    pscore = probs[np.arange(n), action]
    reward = (rng.random(n) < q[np.arange(n), action]).astype(float)
    table = budget_table(q, 2, reward, action, pscore, seed=0, n_bootstrap=30)
    w = (action == 2) / pscore
    assert table["snips"].iloc[0] == pytest.approx(np.sum(w * reward) / np.sum(w), rel=1e-12)
    assert (table["pushes"] <= table["budget_share"] * n + 1e-9).all()
    with pytest.raises(ValueError, match="no_push must be an action index"):
        budget_table(q, 3, reward, action, pscore, seed=0)
