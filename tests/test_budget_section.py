"""Value versus budget: the allocation respects the budget and the values are the right ones, on a
uniform log, a log with non-uniform logged propensities, and a deterministic one (simulator only)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pushrl.experiments.budget_section import FRACTIONS, budget_section, budget_table
from pushrl.experiments.outputs import RunFolder


def _problem(n: int = 3000, no_push: int = 0, seed: int = 0):
    rng = np.random.default_rng(seed)
    q = 0.05 + rng.normal(0.0, 0.02, (n, 3))
    q[:, 1] += 0.01
    q[:, no_push] = 0.05
    action = rng.integers(0, 3, n)
    reward = (rng.random(n) < np.clip(q[np.arange(n), action], 0, 1)).astype(float)
    return q, action, reward


def test_budget_table_respects_budgets_and_matches_a_direct_computation():
    n = 3000
    q, action, reward = _problem(n)
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
    q, _, _ = _problem(n, no_push=2, seed=1)
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


def test_deterministic_log_gets_the_simulator_only(tmp_path):
    n = 800
    q, action, reward = _problem(n)
    run = RunFolder(tmp_path)
    metrics = budget_section(run, "shop", q, 0, reward, action, np.ones(n), "conversion", 0, no_push_id="hold")
    assert all(np.isnan(m["snips"]) and np.isfinite(m["simulator"]) for m in metrics.values())
    title, md = run.sections[0]
    assert title == "shop: value versus send budget"
    assert "not identified" in md and "`hold`" in md and "n/a" in md
    assert not re.search(r"e-mail", md, re.IGNORECASE)
    assert (tmp_path / "shop" / "budget.csv").exists()
