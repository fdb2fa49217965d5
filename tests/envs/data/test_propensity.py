"""Propensity estimation: IPS with estimated vs true propensities, sklearn agreement, calibration, refusals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pushrl.envs.common.errors import LoggedDataError
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.propensity import (
    PropensityConfig,
    cross_fit_probabilities,
    encode_contexts,
    estimate_propensities,
    fit_multinomial_logit,
    fit_temperature,
    fold_assignment,
    reliability_table,
    softmax,
    write_reliability_png,
)
from pushrl.envs.data.synthetic import SCHEMA, SyntheticConfig, generate_log
from pushrl.policies.ope import ESTIMATORS, cross_fit_mean_rewards


def _drop_propensity(data: LoggedData) -> LoggedData:
    return LoggedData.from_frame(data.frame.drop(columns=["propensity", "action_index"]), schema=SCHEMA,
                                 catalogue=data.catalogue, name=data.name)


def _candidate(truth, data) -> np.ndarray:
    """A fixed evaluation policy: 80% greedy on the true click rate, 20% uniform."""
    q = truth.expected_rewards_for(data, positions=False)
    pi = np.full(q.shape, 0.2 / q.shape[1])
    pi[np.arange(len(q)), q.argmax(axis=1)] += 0.8
    return pi


@pytest.mark.parametrize(("logging", "seed"), [("uniform", 5), ("softmax", 5), ("softmax", 6)])
def test_ips_and_dr_with_estimated_propensities_land_in_the_true_ci(logging, seed):
    data, truth = generate_log(SyntheticConfig(n_rows=10_000, n_users=2_000, logging=logging, seed=seed))
    pi = _candidate(truth, data)
    est = estimate_propensities(_drop_propensity(data), PropensityConfig(seed=seed))
    rows, a, r = np.arange(data.n_rounds), data.action, data.reward("click")
    terms_true = pi[rows, a] / data.pscore * r
    ips_true = terms_true.mean()
    half = 1.96 * terms_true.std(ddof=1) / np.sqrt(len(r))
    ips_est = (pi[rows, a] / est.data.pscore * r).mean()
    assert abs(ips_est - ips_true) <= half, (ips_true, half, ips_est)
    # DR too: the estimated-propensity point estimate lies in the true-propensity bootstrap CI
    q_hat = cross_fit_mean_rewards(r, a, None, data.n_actions, 1, n_folds=5, seed=seed)
    dr = ESTIMATORS["dr"]()
    common = {"action_dist": pi[:, :, None], "reward": r, "action": a, "estimated_rewards_by_reg_model": q_hat}
    dr_true = dr.estimate_interval(**common, pscore=data.pscore, n_bootstrap=300, seed=seed)
    dr_est = dr.estimate_policy_value(**common, pscore=est.data.pscore)
    assert dr_true.ci_low <= dr_est <= dr_true.ci_high, (dr_true, dr_est)
    # and the estimate is a real one: close to the truth, not a copy of it
    true_probs = truth.logging_probabilities(*truth.row_inputs(data))
    assert np.abs(est.probabilities - true_probs).mean() < 0.01
    assert not np.array_equal(est.pscore, data.pscore)


def test_estimated_log_is_marked_and_usable():
    data, _ = generate_log(SyntheticConfig(n_rows=3_000, logging="softmax", seed=2))
    est = estimate_propensities(_drop_propensity(data), PropensityConfig(n_folds=3, clip=0.02))
    assert est.data.pscore is not None and est.data.columns.has_propensity
    assert est.data.notes[-1] == est.note
    assert est.note.startswith("propensities estimated (cross-fitted multinomial logistic regression, 3 folds, seed 0")
    assert "clipped at 0.02" in est.note and "ECE" in est.note
    np.testing.assert_allclose(est.probabilities.sum(axis=1), 1.0)
    assert est.pscore.min() >= 0.02
    raw = est.probabilities[np.arange(data.n_rounds), data.action]
    assert est.n_clipped == int((raw < 0.02).sum()) > 0
    np.testing.assert_array_equal(est.data.pscore, np.maximum(raw, 0.02))
    json.dumps(est.to_dict())


def test_trimming_drops_rows_and_says_so():
    data, _ = generate_log(SyntheticConfig(n_rows=3_000, logging="softmax", seed=2))
    est = estimate_propensities(_drop_propensity(data), PropensityConfig(n_folds=3, trim=0.05))
    raw = est.probabilities[np.arange(data.n_rounds), data.action]
    assert est.data.n_rounds == int((raw >= 0.05).sum()) < data.n_rounds
    assert f"trimmed below 0.05: {int((raw < 0.05).sum()):,} rows dropped" in est.note
    assert est.data.pscore.min() >= 0.05


def test_matches_sklearn_logistic_regression():
    sklearn_lm = pytest.importorskip("sklearn.linear_model")
    data, _ = generate_log(SyntheticConfig(n_rows=3_000, n_actions=5, logging="softmax", seed=3))
    x, _ = encode_contexts(data)
    for l2 in (0.1, 1.0, 10.0):
        ours = fit_multinomial_logit(x, data.action, 5, l2=l2, tol=1e-10, max_iter=5000)
        ref = sklearn_lm.LogisticRegression(C=1.0 / l2, tol=1e-12, max_iter=10_000).fit(x, data.action)
        assert ours.converged
        np.testing.assert_allclose(ours.predict_proba(x), ref.predict_proba(x), atol=1e-5)


def test_out_of_fold_probabilities_ignore_their_own_labels():
    data, _ = generate_log(SyntheticConfig(n_rows=2_000, n_actions=4, logging="softmax", seed=4))
    config = PropensityConfig(n_folds=4, calibration="none", tol=1e-10, max_iter=5000)
    fit = cross_fit_probabilities(data, config)
    fold0 = fit.folds == 0
    frame = data.frame.copy()
    frame.loc[fold0, "action_index"] = (frame.loc[fold0, "action_index"] + 1) % 4
    shuffled = LoggedData.from_canonical(frame, data.catalogue, data.columns, None, "x", "<test>")
    again = cross_fit_probabilities(shuffled, config)
    np.testing.assert_allclose(again.probabilities[fold0], fit.probabilities[fold0], atol=1e-5)
    assert np.abs(again.probabilities[~fold0] - fit.probabilities[~fold0]).max() > 1e-3


def test_folds_are_seeded_and_balanced():
    a, b, c = fold_assignment(103, 5, 1), fold_assignment(103, 5, 1), fold_assignment(103, 5, 2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert sorted(np.bincount(a).tolist()) == [20, 20, 21, 21, 21]


def test_temperature_recovers_a_known_scale():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=2.0, size=(20_000, 6))
    p = softmax(logits.copy())
    y = (rng.random((20_000, 1)) > np.cumsum(p, axis=1)).sum(axis=1)
    assert fit_temperature(logits * 2.5, y) == pytest.approx(2.5, rel=0.05)
    assert fit_temperature(logits / 2.0, y) == pytest.approx(0.5, rel=0.05)


def test_temperature_flattens_an_overfitted_uniform_log():
    data, _ = generate_log(SyntheticConfig(n_rows=2_000, n_actions=10, logging="uniform", seed=9))
    bare = _drop_propensity(data)
    plain = cross_fit_probabilities(bare, PropensityConfig(n_folds=3, calibration="none", l2=1e-3))
    scaled = cross_fit_probabilities(bare, PropensityConfig(n_folds=3, calibration="temperature", l2=1e-3))
    assert min(scaled.temperatures) > 2  # the model fits noise; held-out folds say so
    err_plain, err_scaled = np.abs(plain.probabilities - 0.1).mean(), np.abs(scaled.probabilities - 0.1).mean()
    assert err_scaled < 0.5 * err_plain


@pytest.mark.parametrize("binning", ["quantile", "uniform"])
def test_reliability_table_and_ece_against_brute_force(binning):
    rng = np.random.default_rng(1)
    probs = softmax(rng.normal(size=(400, 3)))
    action = rng.integers(0, 3, size=400)
    table, ece = reliability_table(probs, action, n_bins=5, binning=binning)
    # brute force: loop over every (row, action) pair
    edges = np.r_[table["lower"].to_numpy(), 1.0] if binning == "quantile" else np.linspace(0, 1, 6)
    total, acc = 0, 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        pred, hit = [], []
        for i in range(400):
            for k in range(3):
                last = hi == edges[-1]
                if lo <= probs[i, k] and (probs[i, k] < hi or last):
                    pred.append(probs[i, k])
                    hit.append(float(action[i] == k))
        if pred:
            total += len(pred)
            acc += abs(sum(hit) - sum(pred))
    assert total == 1200 == table["count"].sum()
    assert ece == pytest.approx(acc / total)
    assert np.all(np.diff(table["mean_predicted"]) > 0)


def test_calibration_error_is_small_for_a_well_specified_model():
    data, _ = generate_log(SyntheticConfig(n_rows=8_000, logging="softmax", seed=8))
    est = estimate_propensities(_drop_propensity(data))
    assert est.ece < 0.01
    miscalibrated = softmax(np.log(est.probabilities) * 3.0)
    assert reliability_table(miscalibrated, data.action)[1] > 3 * est.ece


def test_misspecified_logging_policy_is_flagged():
    data, _ = generate_log(SyntheticConfig(n_rows=10_000, n_users=2_000, logging="epsilon_greedy", seed=5))
    est = estimate_propensities(_drop_propensity(data), PropensityConfig(seed=5))
    assert est.ece > 0.02
    assert any("poorly calibrated" in w and "epsilon-greedy" in w for w in est.warnings)


def test_reliability_png(tmp_path):
    data, _ = generate_log(SyntheticConfig(n_rows=2_000, logging="softmax", seed=8))
    est = estimate_propensities(_drop_propensity(data), PropensityConfig(n_folds=2))
    path = write_reliability_png(est.reliability, tmp_path / "plots" / "reliability.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["reliability.png"]  # no temp file left


# -- refusals and bad input --------------------------------------------------------------
def test_deterministic_log_is_refused_not_estimated():
    data, _ = generate_log(SyntheticConfig(n_rows=4_000, n_users=800, logging="deterministic", seed=1))
    with pytest.raises(LoggedDataError, match=r"column 'action': logging is deterministic \(no propensity column, "
                                              r"and each of the [\d,]+ repeated contexts got exactly one action\): "
                                              r"propensities were not estimated"):
        estimate_propensities(_drop_propensity(data))
    with pytest.raises(LoggedDataError, match=r"every logged propensity is 1.0.*not estimated.*use the direct method"):
        estimate_propensities(data, replace_logged=True)


def test_logged_propensities_are_not_overwritten_unless_asked():
    data, _ = generate_log(SyntheticConfig(n_rows=500, logging="uniform"))
    with pytest.raises(ValueError, match=r"already has logged propensities; .*replace_logged=True"):
        estimate_propensities(data)
    est = estimate_propensities(data, PropensityConfig(n_folds=2), replace_logged=True)
    assert "propensities estimated" in est.data.notes[-1]


def test_partly_missing_propensities_are_refused_by_loggeddata():
    data, _ = generate_log(SyntheticConfig(n_rows=50, logging="uniform"))
    raw = data.frame.drop(columns=["action_index"])
    raw.loc[[3, 17, 18], "propensity"] = np.nan
    with pytest.raises(LoggedDataError, match=r"column 'propensity': NaN, missing or infinite values "
                                              r"at rows \[3, 17, 18\] \(0-based data rows\)"):
        LoggedData.from_frame(raw, schema=SCHEMA, catalogue=data.catalogue)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_folds": 1}, r"n_folds must be an int >= 2, got 1"),
        ({"l2": -1.0}, r"l2 must be a finite number >= 0, got -1.0"),
        ({"clip": 1.0}, r"clip must be in \[0, 1\), got 1.0"),
        ({"trim": -0.1}, r"trim must be in \[0, 1\), got -0.1"),
        ({"calibration": "isotonic"}, r"calibration must be one of \('temperature', 'none'\), got 'isotonic'"),
        ({"binning": "log"}, r"binning must be one of"),
        ({"tol": 0.0}, r"tol must be > 0"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PropensityConfig(**kwargs)


def test_trim_removing_everything_is_refused():
    data, _ = generate_log(SyntheticConfig(n_rows=300, logging="uniform"))
    with pytest.raises(ValueError, match=r"trim=0.9 removes every row"):
        estimate_propensities(_drop_propensity(data), PropensityConfig(n_folds=2, trim=0.9))


def test_fit_rejects_bad_labels():
    with pytest.raises(ValueError, match=r"y must be non-empty class indices in \[0, 3\), got range \[0, 3\]"):
        fit_multinomial_logit(np.zeros((3, 2)), np.array([0, 1, 3]), 3)
    with pytest.raises(ValueError, match=r"cross-fitting needs at least n_folds = 5 rows, got 3"):
        fold_assignment(3, 5, 0)


def test_frame_layout_unchanged_apart_from_propensity():
    data, _ = generate_log(SyntheticConfig(n_rows=400, logging="softmax"))
    bare = _drop_propensity(data)
    est = estimate_propensities(bare, PropensityConfig(n_folds=2))
    pd.testing.assert_frame_equal(est.data.frame.drop(columns=["propensity"]), bare.frame)
