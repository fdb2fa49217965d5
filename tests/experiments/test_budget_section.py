"""The value-versus-budget report section on a deterministic log (simulator only); the table itself is
tested in tests/policies/test_budget.py."""

from __future__ import annotations

import re

import numpy as np

from pushrl.experiments.budget_section import budget_section
from pushrl.experiments.outputs import RunFolder


def test_deterministic_log_gets_the_simulator_only(tmp_path):
    n = 800
    rng = np.random.default_rng(0)
    q = np.column_stack([np.full(n, 0.05), 0.05 + rng.uniform(-0.03, 0.05, (n, 2))])  # no push first
    action = rng.integers(0, 3, n)
    reward = (rng.random(n) < q[np.arange(n), action]).astype(float)
    run = RunFolder(tmp_path)
    metrics = budget_section(run, "shop", q, 0, reward, action, np.ones(n), "conversion", 0, no_push_id="hold")
    assert all(np.isnan(m["snips"]) and np.isfinite(m["simulator"]) for m in metrics.values())
    title, md = run.sections[0]
    assert title == "shop: value versus send budget"
    assert "not identified" in md and "`hold`" in md and "n/a" in md
    assert not re.search(r"e-mail", md, re.IGNORECASE)
    assert (tmp_path / "shop" / "budget.csv").exists()
