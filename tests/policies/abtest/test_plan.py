"""Planning the online A/B test: sample sizes against statsmodels, days, MDE, power curve."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.optimize import brentq

from pushrl.policies.abtest import (
    mean_power,
    plan_mean_test,
    plan_proportion_test,
    proportion_power,
)

sm_power = pytest.importorskip("statsmodels.stats.power")
sm_prop = pytest.importorskip("statsmodels.stats.proportion")

PROPORTION_CASES = [  # control rate, relative lift, share to treatment, alternative
    (0.04, 0.10, 0.5, "two-sided"),
    (0.04, 0.10, 0.2, "two-sided"),
    (0.30, -0.05, 0.7, "two-sided"),
    (0.04, 0.10, 0.5, "larger"),
    (0.50, -0.10, 0.4, "smaller"),
    (0.002, 0.25, 0.5, "two-sided"),
]


@pytest.mark.parametrize(("p0", "lift", "allocation", "alternative"), PROPORTION_CASES)
def test_proportion_sizes_match_statsmodels_pooled_z_power(p0, lift, allocation, alternative):
    """method='normal' is statsmodels' power_proportions_2indep (pooled H0, unpooled H1): same n to 1 user."""
    plan = plan_proportion_test(p0, lift, allocation=allocation, alternative=alternative)
    p1 = p0 * (1 + lift)
    ratio = (1 - allocation) / allocation  # statsmodels: sample 1 = treatment, nobs2 = ratio * nobs1

    def gap(n1: float) -> float:
        return sm_prop.power_proportions_2indep(p1 - p0, p0, n1, ratio=ratio, alternative=alternative,
                                                return_results=False) - 0.8

    n_treatment = brentq(gap, 2, 1e10)
    assert abs(plan.users_per_arm[1] - math.ceil(n_treatment)) <= 1
    assert abs(plan.users_per_arm[0] - math.ceil(n_treatment * ratio)) <= 1
    # and the power function itself, at an arbitrary size
    mine = proportion_power(p0, lift, 12_345 * ratio, 12_345, alternative=alternative)
    ref = sm_prop.power_proportions_2indep(p1 - p0, p0, 12_345, ratio=ratio, alternative=alternative,
                                           return_results=False)
    assert mine == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize(("p0", "lift", "allocation", "alternative"), PROPORTION_CASES)
def test_proportion_sizes_match_statsmodels_arcsine(p0, lift, allocation, alternative):
    """method='arcsine' is NormalIndPower with Cohen's h (proportion_effectsize): same n to 1 user."""
    plan = plan_proportion_test(p0, lift, allocation=allocation, alternative=alternative, method="arcsine")
    h = sm_prop.proportion_effectsize(p0 * (1 + lift), p0)
    n_control = sm_power.NormalIndPower().solve_power(
        effect_size=h, alpha=0.05, power=0.8, ratio=allocation / (1 - allocation), alternative=alternative)
    assert abs(plan.users_per_arm[0] - math.ceil(n_control)) <= 1
    assert abs(plan.users_per_arm[1] - math.ceil(n_control * allocation / (1 - allocation))) <= 1


@pytest.mark.parametrize(("p0", "lift"), [(0.04, 0.10), (0.10, 0.05), (0.02, -0.15)])
def test_normal_and_arcsine_formulas_agree_for_small_lifts(p0, lift):
    """The two approximations differ by O(lift): stated tolerance 3 % of the sample size."""
    normal = plan_proportion_test(p0, lift).users_per_arm[0]
    arcsine = plan_proportion_test(p0, lift, method="arcsine").users_per_arm[0]
    assert normal == pytest.approx(arcsine, rel=0.03)


@pytest.mark.parametrize(("mean", "sd", "lift", "allocation"), [
    (25.0, 40.0, 0.05, 0.5), (10.0, 3.0, -0.02, 0.5), (1.0, 5.0, 0.3, 0.5),
    (25.0, 40.0, 0.05, 0.3), (2.0, 1.0, 0.1, 0.8),
])
def test_welch_sizes_match_statsmodels_ttest_equal_variances(mean, sd, lift, allocation):
    """Equal sds: Welch's df equals Student's for equal arms (same n to 1 user); otherwise within 0.05 %."""
    plan = plan_mean_test(mean, sd, lift, allocation=allocation)
    ratio = allocation / (1 - allocation)
    n_control = sm_power.TTestIndPower().solve_power(effect_size=mean * lift / sd, alpha=0.05, power=0.8, ratio=ratio)
    tol = 1 if allocation == 0.5 else max(1, 5e-4 * n_control)
    assert abs(plan.users_per_arm[0] - math.ceil(n_control)) <= tol
    assert abs(plan.users_per_arm[1] - math.ceil(n_control * ratio)) <= tol * ratio + 1


@pytest.mark.parametrize("method", ["normal", "arcsine"])
def test_plan_is_the_smallest_size_reaching_the_power(method):
    plan = plan_proportion_test(0.05, 0.08, power=0.9, allocation=0.3, method=method)
    n_c, n_t = plan.users_per_arm
    assert plan.achieved_power >= 0.9
    assert proportion_power(0.05, 0.08, n_c - 1, (n_c - 1) * 0.3 / 0.7, method=method) < 0.9
    assert n_t / n_c == pytest.approx(0.3 / 0.7, abs=1 / n_c)
    assert plan.total_users == n_c + n_t


def test_unequal_treatment_sd_needs_more_users():
    same = plan_mean_test(25.0, 40.0, 0.05).users_per_arm
    wider = plan_mean_test(25.0, 40.0, 0.05, treatment_sd=50.0).users_per_arm
    assert wider[0] > same[0]
    assert mean_power(25.0, 40.0, 0.05, *wider, treatment_sd=50.0) >= 0.8


def test_one_sided_needs_fewer_users_and_more_power_needs_more():
    two = plan_proportion_test(0.04, 0.1).total_users
    assert plan_proportion_test(0.04, 0.1, alternative="larger").total_users < two
    assert plan_proportion_test(0.04, 0.1, power=0.9).total_users > two
    assert plan_proportion_test(0.04, 0.1, alpha=0.01).total_users > two


@pytest.mark.parametrize("allocation", [0.5, 0.2, 0.9])
def test_days_are_the_first_whole_day_with_enough_users_in_both_arms(allocation):
    traffic = 7_000.0
    plan = plan_proportion_test(0.04, 0.1, allocation=allocation, traffic_per_day=traffic)
    shares = np.array([1 - allocation, allocation])
    need = np.array(plan.users_per_arm)
    assert np.all(plan.days * traffic * shares >= need - 1e-6)
    assert np.any((plan.days - 1) * traffic * shares < need)


def test_mde_round_trips_to_the_planned_lift():
    """At exactly the planned users (fractional days) the MDE is the lift the plan was made for."""
    traffic = 20_000.0
    for lift in (0.1, -0.07):
        plan = plan_proportion_test(0.04, lift, traffic_per_day=traffic)
        exact_days = plan.users_per_arm[0] / (traffic * 0.5)
        assert plan.mde_at(exact_days) == pytest.approx(lift, rel=2e-3)
    plan = plan_mean_test(25.0, 40.0, 0.05, traffic_per_day=5_000.0, days=14)
    assert plan.mde == pytest.approx(plan.mde_at(14))
    assert plan.mde_at(14 / 4) == pytest.approx(2 * plan.mde, rel=0.02)  # MDE ∝ 1/√n
    assert plan.mde_days == 14


def test_mde_is_inf_when_no_lift_keeps_the_rate_inside_0_1():
    plan = plan_proportion_test(0.5, 0.5, traffic_per_day=2.0, days=1)  # 1 user per arm
    assert math.isinf(plan.mde)
    assert "not detectable" in plan.to_text()


def test_power_curve_rises_with_duration_and_crosses_the_target_at_the_planned_days():
    plan = plan_proportion_test(0.04, 0.1, traffic_per_day=20_000, allocation=0.3)
    days = np.arange(1, 31)
    curve = plan.power_curve(days)
    assert curve.shape == days.shape
    assert np.all(np.diff(curve) > 0)
    assert curve[plan.days - 1] >= 0.8 > (curve[plan.days - 2] if plan.days > 1 else 0.0)
    n_c, n_t = 7 * 20_000 * 0.7, 7 * 20_000 * 0.3
    assert curve[6] == pytest.approx(proportion_power(0.04, 0.1, n_c, n_t))


def test_without_traffic_there_are_no_days_but_sizes_still():
    plan = plan_proportion_test(0.04, 0.1)
    assert plan.days is None and plan.mde is None
    assert plan.users_per_arm[0] > 0
    with pytest.raises(ValueError, match="traffic_per_day"):
        plan.power_curve([1, 2])


def test_to_dict_is_json_and_to_text_names_the_numbers():
    plan = plan_proportion_test(0.04, 0.1, traffic_per_day=20_000, days=14)
    d = json.loads(json.dumps(plan.to_dict()))
    assert d["users_per_arm"] == {"control": plan.users_per_arm[0], "treatment": plan.users_per_arm[1]}
    assert d["days"] == plan.days and d["inputs"]["lift"] == 0.1 and d["test"] == plan.test
    text = plan.to_text()
    assert f"{plan.users_per_arm[0]:,}" in text and f"days needed: {plan.days}" in text
    assert "MDE after 14 days" in text


def test_plan_is_frozen():
    plan = plan_proportion_test(0.04, 0.1)
    with pytest.raises(AttributeError):
        plan.days = 3  # type: ignore[misc]
