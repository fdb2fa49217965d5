"""The confirmation test: the plan is the planner's for the OPE lift (or the default), the simulation is seeded."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.policies.abtest import plan_proportion_test
from pushrl.policies.abtest.confirmation import confirmation_test, planned_lift

SETTINGS = {"default_lift": 0.05, "alpha": 0.05, "power": 0.8, "allocation": 0.5, "traffic_per_day": 10_000,
            "n_experiments": 200, "seed": 0}


def test_plans_for_the_ope_lift_and_simulates_at_that_size():
    t = confirmation_test(0.05, 0.3, 0.065, 0.05, **SETTINGS)
    want = plan_proportion_test(0.05, 0.3, alpha=0.05, power=0.8, allocation=0.5, traffic_per_day=10_000)
    assert t.plan.users_per_arm == want.users_per_arm and t.planned_lift == 0.3 and not t.default_used
    assert t.sim_rates == (0.05, 0.065)
    assert 0.6 < t.rejection_rate < 0.95  # about the planned power, simulated at the simulator's rates
    again = confirmation_test(0.05, 0.3, 0.065, 0.05, **SETTINGS)
    assert again.one.p_value == t.one.p_value and again.rejection_rate == t.rejection_rate


def test_no_positive_lift_plans_the_default_and_a_huge_lift_is_capped():
    assert planned_lift(-0.1, 0.05) == 0.05 and planned_lift(float("nan"), 0.05) == 0.05 and planned_lift(0.2, 0.05) == 0.2
    t = confirmation_test(0.05, -0.1, 0.05, 0.05, **SETTINGS)
    assert t.default_used and t.planned_lift == 0.05
    capped = confirmation_test(0.5, 5.0, 0.9, 0.5, **SETTINGS)
    assert capped.planned_lift == pytest.approx(0.999 / 0.5 - 1) and not capped.default_used
    with pytest.raises(ValueError, match="control must be a rate in"):
        confirmation_test(1.0, 0.1, 0.5, 0.5, **SETTINGS)
    assert np.isfinite(t.one.lift)
