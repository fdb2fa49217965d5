"""Uplift statistics: the weighted Qini curve against brute force, its bootstrap CI, and the statistics of
the uplift analysis (arms, lifts, the objectives it analyses, the fidelity table and the quality bar)."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.envs.data.synthetic import NO_PUSH_ID, SyntheticConfig, generate_log
from pushrl.envs.objectives import make_objective
from pushrl.policies.uplift import (
    Arms,
    FoldValues,
    analysed_objectives,
    bar_objectives,
    fidelity_table,
    ips_identified,
    lift,
    qini_curve,
    qini_weights,
    qini_with_ci,
    trained_for,
)


# weighted Qini --------------------------------------------------------------------------------
def _brute_weighted_qini(score, treated, outcome, weight):
    """From the definition, with loops: one cut after each distinct score, a row counting as `weight` users."""
    ns, gains = [0.0], [0.0]
    for s in sorted(set(score.tolist()), reverse=True):
        idx = [i for i in range(len(score)) if score[i] >= s]
        n_t = sum(weight[i] for i in idx if treated[i])
        n_c = sum(weight[i] for i in idx if not treated[i])
        y_t = sum(weight[i] * outcome[i] for i in idx if treated[i])
        y_c = sum(weight[i] * outcome[i] for i in idx if not treated[i])
        gains.append(y_t - (y_c * n_t / n_c if n_c > 0 else 0.0))
        ns.append(sum(weight[i] for i in idx))
    area = sum((ns[k + 1] - ns[k]) * (gains[k + 1] + gains[k]) / 2 for k in range(len(ns) - 1))
    return np.array(ns), np.array(gains), (area - 0.5 * ns[-1] * gains[-1]) / ns[-1] ** 2


@pytest.mark.parametrize("seed", range(5))
def test_weighted_qini_matches_brute_force_and_row_repetition(seed):
    rng = np.random.default_rng(seed)
    n = 40
    score = np.round(rng.normal(size=n), 1)  # ties
    treated = rng.random(n) < 0.6
    outcome = rng.poisson(1.0, n).astype(float)
    weight = rng.uniform(0.5, 4.0, n)
    c = qini_curve(score, treated, outcome, weight)
    ns, gains, coef = _brute_weighted_qini(score, treated, outcome, weight)
    np.testing.assert_allclose(c.n_targeted, ns, rtol=1e-12)
    np.testing.assert_allclose(c.gain, gains, rtol=1e-10, atol=1e-12)
    assert c.coefficient == pytest.approx(coef, rel=1e-10)
    # integer weights = the log with each row repeated that many times
    reps = rng.integers(1, 4, n)
    rep = qini_curve(np.repeat(score, reps), np.repeat(treated, reps), np.repeat(outcome, reps))
    w = qini_curve(score, treated, outcome, reps.astype(float))
    np.testing.assert_allclose(w.gain, rep.gain, rtol=1e-12)
    assert w.coefficient == pytest.approx(rep.coefficient, rel=1e-12)
    # constant weights leave the coefficient as it is
    assert qini_curve(score, treated, outcome, np.full(n, 3.0)).coefficient == pytest.approx(
        qini_curve(score, treated, outcome).coefficient, rel=1e-12)


def test_weighted_qini_refuses_bad_weights():
    with pytest.raises(ValueError, match="one value per user"):
        qini_curve(np.zeros(3), np.array([0, 1, 1]), np.zeros(3), np.ones(2))
    with pytest.raises(ValueError, match="finite and > 0; index 1"):
        qini_curve(np.zeros(3), np.array([0, 1, 1]), np.zeros(3), np.array([1.0, 0.0, 1.0]))


def test_qini_weights_and_ci():
    assert qini_weights(np.full(5, 0.25)) is None  # uniform log: unweighted
    w = qini_weights(np.array([0.5, 0.25, 0.25]))
    np.testing.assert_allclose(w, [0.6, 1.2, 1.2])
    assert w.mean() == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    n = 300
    score, treated = rng.normal(size=n), rng.random(n) < 0.5
    outcome = (rng.random(n) < 0.2 + 0.3 * treated * (score > 0)).astype(float)
    boot = rng.integers(0, n, size=(100, n))
    c, lo, hi = qini_with_ci(score, treated, outcome, None, boot, 0.05)
    assert c.coefficient == qini_curve(score, treated, outcome).coefficient
    assert lo < c.coefficient < hi and lo > 0  # a real targeting signal


def test_arms_lift_and_trained_for():
    arms = Arms(np.array(["a", "none", "b"]), 1)
    assert arms.no_push_id == "none" and arms.pushes == [0, 2] and arms.no_push_label == "always none"
    assert arms.always() == {"always a": 0, "always b": 2, "always none": 1}
    assert lift(1.5, -1.0) == 2.5 and np.isnan(lift(1.0, 0.0))
    assert trained_for("t_learner", "click", "profit") == "click" and trained_for("linucb", "click", "profit") == "profit"


def _shop(logging: str = "business_rule"):
    return generate_log(SyntheticConfig(n_rows=600, n_users=100, n_actions=4, no_push=True, organic_conversion=0.5,
                                        logging=logging, readable_promotions=True, seed=1))[0]


def test_analysed_objectives_and_the_bar_objectives():
    data = _shop()
    conversion = make_objective("conversion", data.action_ids)
    objs = analysed_objectives(data, conversion, NO_PUSH_ID, "revenue", 0.3, 0.1)
    assert list(objs) == ["click", "conversion", "revenue", "profit"] and objs["conversion"] is conversion
    assert objs["profit"].cost_vector(data.action_ids).tolist() == [0.1] * 3 + [0.0]
    assert "profit" not in analysed_objectives(data, conversion, NO_PUSH_ID, None, 0.3, 0.1)
    assert bar_objectives(conversion, objs, data.reward_names, None) == ("conversion", "profit")
    assert bar_objectives(objs["profit"], objs, data.reward_names, "click") == ("click", "profit")
    assert bar_objectives(objs["profit"], objs, data.reward_names, "nope") == (data.reward_names[0], "profit")


def test_ips_identified_on_stochastic_and_deterministic_logs():
    assert ips_identified(_shop()) == (True, "")
    ok, why = ips_identified(_shop("rule"))
    assert not ok and "deterministic" in why


def test_fidelity_table_pools_folds_and_checks_the_ci():
    arms = Arms(np.array(["x", "none"]), 1)
    rng = np.random.default_rng(0)
    values = {}
    for lab, tf in (("always x", "-"), ("always none", "-"), ("p", "o")):
        ips = rng.normal(1.0, 0.5, 40)
        fv = FoldValues(np.full(40, 1.0), ips)
        fv.folds = [{"fold": k, "rows": 20, "sim": 1.0, "ips_terms": ips[20 * k:20 * (k + 1)]} for k in range(2)]
        values[(lab, tf, "o")] = fv
    t = fidelity_table(values, arms, ["o"], "p", "o", 0.05)
    pooled = t[t["scope"] == "pooled"]
    assert list(pooled["policy"]) == ["always x", "always none", "best learned: p (for o)"]
    assert len(t) == 3 * 3 and (pooled["rows"] == 40).all()
    np.testing.assert_allclose(pooled["ips"], [values[(k, tf, "o")].ips.mean() for k, tf in
                                               (("always x", "-"), ("always none", "-"), ("p", "o"))])
    assert ((pooled["ci_low"] <= 1.0) & (1.0 <= pooled["ci_high"])).eq(pooled["inside_ci"]).all()
