"""The A/B test that would confirm an offline (OPE) result: plan it for the OPE lift, then simulate it.

Control = the logging policy's on-policy rate; lift to detect = the candidate's OPE lift, or
`default_lift` when OPE shows no positive lift, capped so the treated rate stays below 1
(`0.999 / control - 1`). The plan is the two-proportion z-test's (`plan_proportion_test`); the
simulation draws `n_experiments` seeded experiments of the planned size with each arm's rate from
the simulator (rates clipped to [1e-9, 1 - 1e-9]), and one more experiment analysed on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pushrl.policies.abtest.plan import TestPlan, plan_proportion_test
from pushrl.policies.abtest.simulate import ABResult, BernoulliSampler, analyze, simulate_many


@dataclass(frozen=True)
class ConfirmationTest:
    """A planned and simulated confirmation test (module docstring)."""

    planned_lift: float
    default_used: bool  # True: OPE showed no positive lift, so `default_lift` was planned for
    plan: TestPlan
    sim_rates: tuple[float, float]  # (control, candidate) rates the simulation drew from
    rejection_rate: float  # share of the simulated experiments that rejected
    one: ABResult  # one simulated experiment's analysis


def planned_lift(ope_lift: float, default_lift: float) -> float:
    """The OPE lift when it is finite and > 0, else `default_lift`."""
    return ope_lift if math.isfinite(ope_lift) and ope_lift > 0 else default_lift


def confirmation_test(control: float, ope_lift: float, candidate_sim: float, logging_sim: float, *,
                      default_lift: float, alpha: float, power: float, allocation: float, traffic_per_day: int,
                      n_experiments: int, seed: int) -> ConfirmationTest:
    """Plan the test for `ope_lift` over `control` (0 < control < 1) and simulate it at the planned size."""
    if not 0 < control < 1:
        raise ValueError(f"control must be a rate in (0, 1), got {control!r}")
    lift = planned_lift(ope_lift, default_lift)
    default_used = lift != ope_lift
    lift = min(lift, 0.999 / control - 1)
    plan = plan_proportion_test(control, lift, alpha=alpha, power=power, allocation=allocation,
                                traffic_per_day=traffic_per_day)
    n_c, n_t = plan.users_per_arm
    rates = (float(np.clip(logging_sim, 1e-9, 1 - 1e-9)), float(np.clip(candidate_sim, 1e-9, 1 - 1e-9)))
    many = simulate_many(BernoulliSampler(rates), n_c, n_t, n_experiments=n_experiments, alpha=alpha, seed=seed)
    rng = np.random.default_rng(seed)
    one = analyze(rng.random(n_c) < rates[0], rng.random(n_t) < rates[1], alpha=alpha)
    return ConfirmationTest(lift, default_used, plan, rates, float(many.reject.mean()), one)
