"""Simulating the online A/B test: analyses against statsmodels/scipy, boundaries against
published values, and error rates over 1,000 seeded, batched experiments."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pushrl.policies.abtest import (
    ArmStats,
    BernoulliSampler,
    GroupSequentialDesign,
    NormalSampler,
    ZeroInflatedLogNormalSampler,
    analyze,
    analyze_sequential,
    boundary_crossing_probabilities,
    draw_stats,
    obrien_fleming_spending,
    plan_mean_test,
    plan_proportion_test,
    simulate_many,
    welch_test,
    z_test,
)

sm_prop = pytest.importorskip("statsmodels.stats.proportion")
N_EXP = 1000
SCIPY_ALT = {"two-sided": "two-sided", "larger": "greater", "smaller": "less"}


# --- the fixed-horizon analysis ------------------------------------------------------------

@pytest.mark.parametrize("alternative", ["two-sided", "larger", "smaller"])
def test_z_test_matches_statsmodels_proportions_ztest(alternative):
    rng = np.random.default_rng(3)
    c = (rng.random(5_000) < 0.10).astype(float)
    t = (rng.random(4_000) < 0.115).astype(float)
    res = analyze(c, t, alternative=alternative)
    z, p = sm_prop.proportions_ztest([t.sum(), c.sum()], [t.size, c.size], alternative=alternative)
    assert res.statistic == pytest.approx(z, rel=1e-12)
    assert res.p_value == pytest.approx(p, rel=1e-10)
    if alternative == "two-sided":
        lo, hi = sm_prop.confint_proportions_2indep(t.sum(), t.size, c.sum(), c.size, method="wald", compare="diff")
        assert res.diff_ci == pytest.approx((lo, hi), rel=1e-10)
        lo, hi = sm_prop.confint_proportions_2indep(t.sum(), t.size, c.sum(), c.size, method="log", compare="ratio")
        assert res.lift_ci == pytest.approx((lo - 1, hi - 1), rel=1e-10)


@pytest.mark.parametrize("alternative", ["two-sided", "larger", "smaller"])
def test_welch_matches_scipy_ttest_ind_unequal_var(alternative):
    rng = np.random.default_rng(4)
    c, t = rng.normal(10, 3, 300), rng.normal(10.6, 5, 200)
    res = analyze(c, t, metric="mean", alternative=alternative)
    ref = stats.ttest_ind(t, c, equal_var=False, alternative=SCIPY_ALT[alternative])
    assert res.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert res.p_value == pytest.approx(ref.pvalue, rel=1e-9)
    assert res.diff_ci == pytest.approx(tuple(ref.confidence_interval(0.95)), rel=1e-9)
    assert res.significant == (ref.pvalue < 0.05)


def test_arm_stats_from_rewards_and_batched_tests_match_one_at_a_time():
    rng = np.random.default_rng(5)
    c, t = rng.normal(2.0, 1.5, (4, 50)), rng.normal(2.3, 1.0, (4, 40))
    sc, st = ArmStats.from_rewards(c), ArmStats.from_rewards(t)
    assert np.allclose(sc.mean, c.mean(axis=1)) and np.allclose(sc.var, c.var(axis=1, ddof=1))
    welch, p_welch, _ = welch_test(sc, st)
    bc, bt = (rng.random((4, 60)) < 0.3).astype(float), (rng.random((4, 70)) < 0.4).astype(float)
    z, p_z = z_test(ArmStats.from_rewards(bc), ArmStats.from_rewards(bt), "larger")
    for i in range(4):
        one = analyze(c[i], t[i], metric="mean")
        assert (welch[i], p_welch[i]) == pytest.approx((one.statistic, one.p_value), rel=1e-12)
        one = analyze(bc[i], bt[i], alternative="larger")
        assert (z[i], p_z[i]) == pytest.approx((one.statistic, one.p_value), rel=1e-12)


# --- group-sequential boundaries -----------------------------------------------------------

@pytest.mark.parametrize("alternative, alpha", [("larger", 0.025), ("two-sided", 0.05)])
def test_obrien_fleming_boundaries_match_published_values(alternative, alpha):
    """K = 3, one-sided 0.025 (= two-sided 0.05): 3.7103, 2.5114, 1.9930 (gsDesign sfLDOF, rpact asOF)."""
    design = GroupSequentialDesign(3, alpha, alternative)
    assert design.boundaries == pytest.approx([3.7103, 2.5114, 1.9930], abs=1e-4)


def test_crossing_probabilities_match_rpact():
    """rpact's unit test: constant bounds ±Φ⁻¹(0.95) at t = (1:4)/4, per-look exits below the lower bound."""
    c = np.full(4, stats.norm.isf(0.05))
    up, lo = boundary_crossing_probabilities(c, -c, np.arange(1, 5) / 4)
    assert lo == pytest.approx([0.05, 0.030074925, 0.020961248, 0.01595848], abs=1e-7)
    assert up == pytest.approx(lo, abs=1e-12)


@pytest.mark.parametrize("n_looks", [2, 5, 12])
@pytest.mark.parametrize("alternative", ["two-sided", "larger"])
def test_design_spends_exactly_the_obrien_fleming_alpha(n_looks, alternative):
    design = GroupSequentialDesign(n_looks, 0.05, alternative)
    side = 0.025 if alternative == "two-sided" else 0.05
    spent = np.cumsum(design.crossing_probabilities(0.0)) / (2 if alternative == "two-sided" else 1)
    assert spent == pytest.approx(obrien_fleming_spending(design.information, side), abs=1e-9)
    assert design.power(0.0) == pytest.approx(0.05, abs=1e-9)
    assert np.all(np.diff(design.boundaries) < 0)


def test_two_look_boundaries_against_the_bivariate_normal():
    """Independent check: P(|Z1| < c1, |Z2| < c2) = 1 − α with corr(Z1, Z2) = √(t1 / t2)."""
    design = GroupSequentialDesign(2, 0.05)
    c1, c2 = design.boundaries
    mvn = stats.multivariate_normal(mean=[0, 0], cov=[[1, math.sqrt(0.5)], [math.sqrt(0.5), 1]])
    inside = mvn.cdf([c1, c2], lower_limit=[-c1, -c2])
    assert inside == pytest.approx(0.95, abs=1e-5)


def test_crossing_probabilities_under_drift_match_brownian_motion_monte_carlo():
    design = GroupSequentialDesign(4, 0.05)
    drift, n = 2.8, 200_000
    rng = np.random.default_rng(6)
    b = np.cumsum(rng.normal(drift / 4, math.sqrt(1 / 4), (n, 4)), axis=1)  # B(t) at t = k/4
    z = b / np.sqrt(design.information)
    crossed = np.abs(z) >= design.boundaries
    first = np.where(crossed.any(axis=1), crossed.argmax(axis=1), -1)
    mc = np.array([(first == k).mean() for k in range(4)])
    p = design.crossing_probabilities(drift)
    assert np.all(np.abs(mc - p) <= 4 * np.sqrt(p * (1 - p) / n) + 1e-4)


def test_inflation_and_expected_size():
    assert GroupSequentialDesign(1).inflation_factor(0.8) == pytest.approx(1.0, abs=1e-9)
    design = GroupSequentialDesign(5)
    inflation = design.inflation_factor(0.8)
    assert 1.0 < inflation < 1.1
    drift = design.drift_for_power(0.8)
    assert design.power(drift) == pytest.approx(0.8, abs=1e-9)
    assert drift == pytest.approx(math.sqrt(inflation) * (stats.norm.isf(0.025) + stats.norm.isf(0.2)), rel=1e-3)
    assert 0.5 < design.expected_fraction(drift) < 1.0
    assert design.expected_fraction(0.0) > design.expected_fraction(drift)


# --- 1,000 experiments at once -------------------------------------------------------------

def _within_two_se(rate: float, alpha: float, n: int) -> bool:
    return abs(rate - alpha) <= 2 * math.sqrt(alpha * (1 - alpha) / n)


@pytest.mark.parametrize("n_looks", [1, 5])
@pytest.mark.parametrize("sampler", [
    BernoulliSampler(0.04), NormalSampler(25.0, 40.0), ZeroInflatedLogNormalSampler(0.2, 3.0, 0.8),
], ids=["bernoulli-z", "normal-welch", "ziln-welch"])
def test_aa_false_positive_rate_is_alpha(sampler, n_looks):
    res = simulate_many(sampler, 40_000, 40_000, n_experiments=N_EXP, n_looks=n_looks, seed=20240611)
    assert res.n_experiments == N_EXP
    assert _within_two_se(res.rejection_rate, 0.05, N_EXP), res.to_text()


def test_aa_one_sided_false_positive_rate_is_alpha():
    res = simulate_many(BernoulliSampler(0.1), 10_000, 10_000, alternative="larger", n_looks=4, seed=77)
    assert _within_two_se(res.rejection_rate, 0.05, N_EXP), res.to_text()


@pytest.mark.parametrize("kind", ["proportion", "spend"])
def test_ab_power_at_the_planned_size_is_the_planned_power(kind):
    if kind == "proportion":
        plan = plan_proportion_test(0.04, 0.1, allocation=0.4)
        sampler = BernoulliSampler((0.04, 0.044))
    else:
        sampler = ZeroInflatedLogNormalSampler(0.2, (3.0, 3.0 + math.log(1.05)), 0.8)  # +5 % spend per buyer
        mean_c, mean_t = sampler.arm_mean("control"), sampler.arm_mean("treatment")
        plan = plan_mean_test(mean_c, sampler.arm_sd("control"), mean_t / mean_c - 1,
                              treatment_sd=sampler.arm_sd("treatment"))
    res = simulate_many(sampler, *plan.users_per_arm, n_experiments=N_EXP, seed=99)
    assert abs(res.rejection_rate - plan.achieved_power) <= 0.05, res.to_text()


def test_sequential_power_and_average_size_match_the_design():
    """Max size = plan × inflation keeps the power; mean users at stop matches the recursion's."""
    mean, sd, lift = 25.0, 40.0, 0.05
    plan = plan_mean_test(mean, sd, lift)
    design = GroupSequentialDesign(5)
    n = math.ceil(plan.users_per_arm[0] * design.inflation_factor(0.8))
    res = simulate_many(NormalSampler((mean, mean * (1 + lift)), sd), n, n, n_looks=5, seed=123)
    assert abs(res.rejection_rate - 0.8) <= 0.05, res.to_text()
    drift = mean * lift / math.sqrt(2 * sd**2 / n)
    fraction = res.users_at_stop / (2 * n)
    assert abs(fraction.mean() - design.expected_fraction(drift)) <= 4 * fraction.std() / math.sqrt(N_EXP) + 1e-3
    assert res.mean_users_at_stop < 2 * n
    assert np.array_equal(res.boundaries, design.boundaries)
    looks = np.bincount(res.stop_look, minlength=6)[1:]
    assert looks.sum() == N_EXP and np.all(res.users_at_stop[res.stop_look == 5] == 2 * n)


def test_same_seed_same_experiments_and_other_seed_differs():
    sampler = ZeroInflatedLogNormalSampler(0.1, (3.0, 3.1), 1.0)
    a = simulate_many(sampler, 5_000, 5_000, n_experiments=200, n_looks=3, seed=1)
    b = simulate_many(sampler, 5_000, 5_000, n_experiments=200, n_looks=3, seed=1)
    c = simulate_many(sampler, 5_000, 5_000, n_experiments=200, n_looks=3, seed=2)
    assert np.array_equal(a.lift, b.lift) and np.array_equal(a.stop_look, b.stop_look)
    assert not np.array_equal(a.lift, c.lift)


def test_per_user_sampler_without_batched_path_is_reduced_exactly():
    bern = BernoulliSampler(0.3)

    def per_user(arm: str, n_users: int, rng: np.random.Generator) -> np.ndarray:
        return bern(arm, n_users, rng)

    stats_ = draw_stats(per_user, "control", 7, 11, np.random.default_rng(8))
    raw = per_user("control", 77, np.random.default_rng(8)).reshape(7, 11)
    assert np.array_equal(stats_.total, raw.sum(axis=1)) and np.all(stats_.n == 11)
    res = simulate_many(per_user, 2_000, 2_000, n_experiments=300, metric="proportion", seed=3)
    assert res.n_experiments == 300  # an A/A test: the false-positive rate is alpha, within 3 SE
    assert abs(res.rejection_rate - 0.05) <= 3 * math.sqrt(0.05 * 0.95 / 300), res.rejection_rate


@pytest.mark.parametrize("sampler", [
    BernoulliSampler((0.2, 0.3)), NormalSampler((1.0, 2.0), (3.0, 1.0)),
    ZeroInflatedLogNormalSampler((0.1, 0.3), (1.0, 2.0), (0.5, 1.2)),
], ids=["bernoulli", "normal", "ziln"])
def test_batched_statistics_follow_the_per_user_distribution(sampler):
    rng = np.random.default_rng(10)
    for arm in ("control", "treatment"):
        n_users, n_exp = 400, 3000
        s = draw_stats(sampler, arm, n_exp, n_users, rng)
        mu, sd = sampler.arm_mean(arm), sampler.arm_sd(arm)
        assert abs(s.mean.mean() - mu) <= 4 * sd / math.sqrt(n_users * n_exp)
        assert s.mean.std(ddof=1) == pytest.approx(sd / math.sqrt(n_users), rel=0.1)
        assert s.var.mean() == pytest.approx(sd**2, rel=0.05)
        per_user = sampler(arm, n_users * 50, rng)
        assert abs(per_user.mean() - mu) <= 5 * sd / math.sqrt(per_user.size)


def test_analyze_sequential_stops_at_the_first_crossing():
    rng = np.random.default_rng(12)
    c = (rng.random(40_000) < 0.05).astype(float)
    t = (rng.random(40_000) < 0.07).astype(float)  # +40 %: crosses early
    res = analyze_sequential(c, t, n_looks=5)
    k = res.stop_look
    assert res.reject and k < 5 and len(res.z) == k
    assert abs(res.z[-1]) >= res.design.boundaries[k - 1]
    assert np.all(np.abs(res.z[:-1]) < res.design.boundaries[: k - 1])
    assert tuple(res.users_at_looks[-1]) == (round(k * 40_000 / 5),) * 2
    assert res.at_stop.n_control == res.users_at_looks[-1][0]
    same = analyze_sequential(c, c[::-1].copy(), n_looks=5)
    assert same.stop_look == 5 and not same.reject
