"""Value versus budget: the allocation respects the budget and the values are the right ones."""

from __future__ import annotations

import numpy as np

from pushrl.experiments.budget_section import FRACTIONS, budget_table


def test_budget_table_respects_budgets_and_matches_a_direct_computation():
    rng = np.random.default_rng(0)
    n = 3000
    q = np.column_stack([np.full(n, 0.05), 0.05 + rng.normal(0.01, 0.02, n), 0.05 + rng.normal(0.0, 0.02, n)])
    action = rng.integers(0, 3, n)
    reward = (rng.random(n) < q[np.arange(n), action]).astype(float)
    table = budget_table(q, 0, reward, action, np.full(n, 1 / 3), seed=0, n_bootstrap=50)
    assert list(table["budget_share"]) == list(FRACTIONS)
    assert (table["emails"] <= table["budget_share"] * n + 1e-9).all()
    assert table["emails"].iloc[0] == 0 and abs(table["simulator"].iloc[0] - 0.05) < 1e-12
    # more budget never lowers the (model's) value, and the full budget sends only e-mails that pay
    assert np.all(np.diff(table["simulator"]) >= -1e-12)
    assert table["emails"].iloc[-1] == int((q[:, 1:].max(axis=1) > 0.05).sum())
    best = np.where(q[:, 1:].max(axis=1) > 0.05, 1 + q[:, 1:].argmax(axis=1), 0)
    assert abs(table["simulator"].iloc[-1] - q[np.arange(n), best].mean()) < 1e-12
