"""Bad inputs to A/B planning and simulation raise ValueError naming the value and what was expected."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pushrl.policies.abtest import (
    BernoulliSampler,
    GroupSequentialDesign,
    NormalSampler,
    ZeroInflatedLogNormalSampler,
    analyze,
    analyze_sequential,
    draw_stats,
    plan_mean_test,
    plan_proportion_test,
    simulate_many,
)

GOOD_P = dict(control_rate=0.04, lift=0.1)
GOOD_M = dict(control_mean=25.0, control_sd=40.0, lift=0.05)

PROPORTION_CASES = [
    (dict(alpha=0.0), r"alpha must be in \(0, 1\), got 0.0"),
    (dict(alpha=1.5), r"alpha must be in \(0, 1\), got 1.5"),
    (dict(alpha=math.nan), r"alpha must be in \(0, 1\), got nan"),
    (dict(power=0.0), r"power must be in \(0, 1\), got 0.0"),
    (dict(power=1.0), r"power must be in \(0, 1\), got 1.0"),
    (dict(power=0.04, alpha=0.05), r"power must exceed alpha"),
    (dict(traffic_per_day=0), r"traffic_per_day must be a finite number > 0, got 0"),
    (dict(traffic_per_day=-20_000), r"traffic_per_day must be a finite number > 0, got -20000"),
    (dict(lift=0.0), r"lift must be a non-zero relative lift \(0.10 = \+10 %\), got 0.0"),
    (dict(lift=math.inf), r"lift must be a non-zero relative lift"),
    (dict(control_rate=0.0), r"control_rate must be in \(0, 1\), got 0.0"),
    (dict(control_rate=1.0), r"control_rate must be in \(0, 1\), got 1.0"),
    (dict(control_rate=4.0), r"control_rate must be in \(0, 1\), got 4.0"),
    (dict(allocation=0.0), r"allocation must be in \(0, 1\) \(share of traffic to treatment\), got 0.0"),
    (dict(allocation=1.0), r"allocation must be in \(0, 1\)"),
    (dict(lift=30.0), r"lift=30.0 moves the treatment rate to 1.24, outside \(0, 1\); lift is relative"),
    (dict(lift=-1.0), r"lift=-1.0 moves the treatment rate to 0, outside \(0, 1\)"),
    (dict(alternative="up"), r"alternative must be one of \('two-sided', 'larger', 'smaller'\), got 'up'"),
    (dict(alternative="larger", lift=-0.1), r"lift=-0.1 makes treatment lower than control, against alternative='larger'"),
    (dict(alternative="smaller"), r"lift=0.1 makes treatment higher than control, against alternative='smaller'"),
    (dict(method="exact"), r"method must be one of \('normal', 'arcsine'\), got 'exact'"),
    (dict(days=14), r"days=14 needs traffic_per_day"),
    (dict(days=0, traffic_per_day=1000), r"days must be a finite number > 0, got 0"),
]


@pytest.mark.parametrize(("override", "message"), PROPORTION_CASES)
def test_bad_proportion_plan_inputs(override, message):
    with pytest.raises(ValueError, match=message):
        plan_proportion_test(**{**GOOD_P, **override})


MEAN_CASES = [
    (dict(control_sd=0.0), r"control_sd must be a finite number > 0, got 0.0"),
    (dict(control_sd=-3.0), r"control_sd must be a finite number > 0, got -3.0"),
    (dict(treatment_sd=0.0), r"treatment_sd must be a finite number > 0, got 0.0"),
    (dict(control_mean=0.0), r"control_mean must be finite and non-zero \(lift is relative to it\), got 0.0"),
    (dict(lift=0.0), r"lift must be a non-zero relative lift"),
    (dict(power=1.2), r"power must be in \(0, 1\), got 1.2"),
    (dict(allocation=-0.5), r"allocation must be in \(0, 1\)"),
    (dict(traffic_per_day=0.0), r"traffic_per_day must be a finite number > 0"),
    (dict(control_mean=-10.0, alternative="larger"), r"makes treatment lower than control"),
]


@pytest.mark.parametrize(("override", "message"), MEAN_CASES)
def test_bad_mean_plan_inputs(override, message):
    with pytest.raises(ValueError, match=message):
        plan_mean_test(**{**GOOD_M, **override})


def test_bad_durations_on_a_plan():
    plan = plan_proportion_test(0.04, 0.1, traffic_per_day=20_000)
    with pytest.raises(ValueError, match=r"days must be > 0"):
        plan.power_curve([0, 1])
    with pytest.raises(ValueError, match=r"durations need traffic_per_day"):
        plan_proportion_test(0.04, 0.1).mde_at(3)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(n_looks=0), r"n_looks must be an integer in \[1, 100\], got 0"),
    (dict(n_looks=101), r"n_looks must be an integer in \[1, 100\], got 101"),
    (dict(n_looks=2.5), r"n_looks must be an integer in \[1, 100\], got 2.5"),
    (dict(n_looks=3, alpha=1.0), r"alpha must be in \(0, 1\), got 1.0"),
    (dict(n_looks=3, alternative="less"), r"alternative must be one of"),
])
def test_bad_sequential_designs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GroupSequentialDesign(**kwargs)


def test_drift_for_power_below_alpha():
    with pytest.raises(ValueError, match=r"power must be in \(alpha, 1\) = \(0.05, 1\), got 0.01"):
        GroupSequentialDesign(3).drift_for_power(0.01)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: BernoulliSampler(1.5), r"rate must be a number or a \(control, treatment\) pair in \[0.0, 1.0\], got 1.5"),
    (lambda: BernoulliSampler((0.1, 0.2, 0.3)), r"rate must be a number or a \(control, treatment\) pair"),
    (lambda: NormalSampler(1.0, -2.0), r"sd must be a number or a \(control, treatment\) pair in \[0.0, inf\]"),
    (lambda: ZeroInflatedLogNormalSampler(0.1, 3.0, (1.0, -1.0)), r"log_sd must be"),
    (lambda: BernoulliSampler(0.1)("ctrl", 5, np.random.default_rng(0)), r"arm must be one of \('control', 'treatment'\), got 'ctrl'"),
])
def test_bad_samplers(make, message):
    with pytest.raises(ValueError, match=message):
        make()


SIM_CASES = [
    (dict(n_experiments=0), r"n_experiments must be a positive integer, got 0"),
    (dict(n_looks=0), r"n_looks must be a positive integer, got 0"),
    (dict(n_control=0), r"n_control must be a positive integer, got 0"),
    (dict(n_treatment=10.5), r"n_treatment must be a positive integer, got 10.5"),
    (dict(metric="median"), r"metric must be 'proportion' \(z-test\) or 'mean' \(Welch\), got 'median'"),
    (dict(alpha=0.0), r"alpha must be in \(0, 1\), got 0.0"),
    (dict(alternative="greater"), r"alternative must be one of"),
    (dict(n_control=5, n_treatment=5, n_looks=5), r"each arm needs >= 2 users at the first of 5 looks, got \[1, 1\]"),
]


@pytest.mark.parametrize(("override", "message"), SIM_CASES)
def test_bad_simulation_inputs(override, message):
    kwargs = dict(n_control=1000, n_treatment=1000, n_experiments=10, seed=0) | override
    with pytest.raises(ValueError, match=message):
        simulate_many(BernoulliSampler(0.1), **kwargs)


def test_sampler_without_metric_needs_one():
    def per_user(arm: str, n_users: int, rng: np.random.Generator) -> np.ndarray:
        return rng.random(n_users)

    with pytest.raises(ValueError, match=r"metric must be 'proportion' \(z-test\) or 'mean' \(Welch\), got None"):
        simulate_many(per_user, 100, 100, n_experiments=5)


def test_samplers_returning_the_wrong_shape():
    def short(arm: str, n_users: int, rng: np.random.Generator) -> np.ndarray:
        return np.zeros(n_users - 1)

    with pytest.raises(ValueError, match=r"sampler\('control', 30, rng\) returned shape \(29,\), expected \(30,\)"):
        draw_stats(short, "control", 3, 10, np.random.default_rng(0))

    class Batched:
        def batched(self, arm, n_experiments, n_users, rng):
            return np.zeros((n_experiments + 1, n_users))

    with pytest.raises(ValueError, match=r"batched sampler returned \(4,\) experiments of \[10\] users, expected \(3,\) of 10"):
        draw_stats(Batched(), "treatment", 3, 10, np.random.default_rng(0))


@pytest.mark.parametrize(("control", "treatment", "message"), [
    (np.zeros((2, 5)), np.zeros(5), r"control rewards must be a finite 1-D array of >= 2 users, got shape \(2, 5\)"),
    (np.zeros(5), np.array([0.0, np.nan, 1.0]), r"treatment rewards must be a finite 1-D array"),
    (np.zeros(1), np.zeros(5), r"control rewards must be a finite 1-D array of >= 2 users, got shape \(1,\)"),
])
def test_bad_rewards_to_analyze(control, treatment, message):
    with pytest.raises(ValueError, match=message):
        analyze(control, treatment)


def test_too_few_users_for_the_looks():
    with pytest.raises(ValueError, match=r"each arm needs >= 2 users at look 1 of 5"):
        analyze_sequential(np.zeros(6), np.zeros(6), n_looks=5)
