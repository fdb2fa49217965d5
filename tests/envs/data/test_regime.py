"""Logging regime detection: each regime on synthetic logs, the support table against the truth, bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pushrl.envs.common.errors import LoggedDataError
from pushrl.envs.data.hillstrom import load_hillstrom
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.propensity import PropensityConfig
from pushrl.envs.data.regime import classify_regime, context_ids, detect_regime
from pushrl.envs.data.synthetic import SCHEMA, SyntheticConfig, generate_log


def _log(logging: str, n_rows: int = 4000, seed: int = 0, **kw):
    return generate_log(SyntheticConfig(n_rows=n_rows, n_users=800, logging=logging, seed=seed, **kw))


def _without_propensity(data: LoggedData) -> LoggedData:
    return LoggedData.from_frame(data.frame.drop(columns=["propensity", "action_index"]), schema=SCHEMA,
                                 catalogue=data.catalogue)


def _truth_support(data, truth, tau):
    """Brute force: the true probabilities of each distinct context (first row), share above tau."""
    probs = truth.logging_probabilities(*truth.row_inputs(data))
    first = data.features().drop_duplicates().index.to_numpy()
    return (probs[first] > tau).mean(axis=0)


def test_context_ids_match_distinct_feature_rows():
    data, _ = _log("uniform")
    ctx, n_ctx = context_ids(data)
    assert n_ctx == len(data.features().drop_duplicates())
    frame = data.features().reset_index(drop=True)
    for i, j in [(0, 1), (5, 9), (10, 400)]:
        assert (ctx[i] == ctx[j]) == frame.iloc[i].equals(frame.iloc[j])
    same = context_ids(data, ("segment",))
    assert same[1] == data.frame["segment"].nunique()


def test_uniform_regime_and_exact_support():
    data, _ = _log("uniform")
    r = detect_regime(data, tau=0.05)
    assert r.regime == "uniform" and r.has_propensity
    assert r.support_source.startswith("exact")
    assert (r.support["supported_share"] == 1.0).all() and r.full_support_share == 1.0
    assert (detect_regime(data, tau=0.2).support["supported_share"] == 0.0).all()
    assert r.support["logged_rows"].sum() == data.n_rounds


def test_stochastic_regime_support_with_known_probabilities():
    data, truth = _log("softmax", logging_temperature=0.5)
    probs = truth.logging_probabilities(*truth.row_inputs(data))
    r = detect_regime(data, tau=0.02, probabilities=probs)
    assert r.regime == "stochastic" and r.support_source == "given"
    np.testing.assert_allclose(r.support["supported_share"], _truth_support(data, truth, 0.02))
    first = data.features().drop_duplicates().index.to_numpy()
    assert r.full_support_share == pytest.approx((probs[first] > 0.02).all(axis=1).mean())
    assert r.support["supported_share"].min() < 0.5 and any("under half the contexts" in w for w in r.warnings)


def test_stochastic_support_estimated_when_only_logged_propensities_are_known():
    data, truth = _log("softmax", n_rows=6000)
    r = detect_regime(data, tau=0.02, estimate_config=PropensityConfig(n_folds=3))
    assert r.support_source.startswith("logged propensities where the (context, action) pair was logged, else estimated")
    truth_share = _truth_support(data, truth, 0.02)
    assert np.max(np.abs(r.support["supported_share"].to_numpy() - truth_share)) < 0.1


def test_absent_propensities_estimate_support_and_say_so():
    data, truth = _log("softmax", n_rows=6000)
    r = detect_regime(_without_propensity(data), tau=0.02, estimate_config=PropensityConfig(n_folds=3))
    assert r.regime == "absent" and not r.has_propensity
    assert r.support_source.startswith("estimated (cross-fitted multinomial logistic regression")
    assert "several actions" in r.evidence
    assert np.max(np.abs(r.support["supported_share"].to_numpy() - _truth_support(data, truth, 0.02))) < 0.1
    assert any("estimate them explicitly" in w for w in r.warnings)


def test_deterministic_from_propensities_and_from_contexts():
    data, _ = _log("deterministic")
    r = detect_regime(data)
    assert r.regime == "deterministic" and r.evidence == "every logged propensity is 1.0"
    assert r.n_multi_action_contexts == 0 and r.support_source.startswith("exact (deterministic")
    ctx, n_ctx = context_ids(data)
    once = pd.DataFrame({"c": ctx, "a": data.action}).drop_duplicates()
    np.testing.assert_allclose(r.support["supported_share"], np.bincount(once["a"], minlength=data.n_actions) / n_ctx)
    blind = detect_regime(_without_propensity(data), support=False)
    assert blind.regime == "deterministic" and "repeated contexts got exactly one action" in blind.evidence
    assert blind.support is None
    assert any("not identified" in w for w in blind.warnings)


def test_absent_without_enough_repeats_is_not_called_deterministic():
    frame = pd.DataFrame({"x": np.arange(30.0), "action": [0, 1, 2] * 10, "click": 0.0})
    frame.loc[[0, 3], "x"] = 99.0  # one repeated context, logged with actions 0 and 0
    frame.loc[3, "action"] = 0
    data = LoggedData.from_frame(frame)
    r = classify_regime(data)
    assert r.regime == "absent" and "cannot be tested" in r.evidence
    assert classify_regime(data, min_repeated_contexts=1).regime == "deterministic"
    one = LoggedData.from_frame(frame.assign(action=7))
    assert "only one action" in classify_regime(one).evidence


def test_hillstrom_is_uniform_over_its_three_actions():
    r = detect_regime(load_hillstrom())
    assert r.regime == "uniform" and r.evidence == "every propensity is 1/3"
    assert list(r.support.index) == ["No E-Mail", "Mens E-Mail", "Womens E-Mail"]
    assert r.support["logged_rows"].sum() == 44_800 and r.n_multi_action_contexts > 0


def test_text_and_json():
    data, _ = _log("uniform", n_rows=500)
    r = detect_regime(data)
    json.dumps(r.to_dict())
    text = r.to_text()
    assert "logging regime: uniform" in text and "supported_share" in text


def test_propensity_one_on_some_rows_warns():
    frame = pd.DataFrame({"x": np.arange(6.0), "action": [0, 1, 0, 1, 0, 1], "click": 0.0,
                          "propensity": [1.0, 0.5, 0.5, 0.5, 1.0, 0.5]})
    r = classify_regime(LoggedData.from_frame(frame))
    assert r.regime == "stochastic"
    assert any("2 rows (33.3%) have propensity 1.0" in w for w in r.warnings)


# -- bad input ---------------------------------------------------------------------------
def _frame(**changes) -> pd.DataFrame:
    frame = pd.DataFrame({
        "x": [0.1, 0.2, 0.3, 0.1, 0.5, 0.2],
        "seg": ["a", "b", "a", "a", "b", "b"],
        "action": [0, 1, 0, 1, 1, 0],
        "click": [0, 1, 0, 0, 1, 0],
        "propensity": 1.0,
    })
    for k, v in changes.items():
        frame[k] = v
    return frame


def test_contradiction_all_one_but_several_actions_names_rows():
    data = LoggedData.from_frame(_frame(), name="contradiction")
    # rows 0 and 3 share context (0.1, "a") with actions 0 and 1; rows 1 and 5 share (0.2, "b") with 1 and 0
    with pytest.raises(LoggedDataError, match=r"contradiction: column 'propensity': every propensity is 1.0 "
                                              r"\(deterministic logging\) but 2 identical contexts were logged "
                                              r"with different actions at rows \[0, 1, 3, 5\]"):
        detect_regime(data)


def test_contradiction_absent_once_the_contexts_differ():
    data = LoggedData.from_frame(_frame(x=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]))
    assert classify_regime(data).regime == "deterministic"


@pytest.mark.parametrize(
    ("propensity", "match"),
    [
        ([1.0, np.nan, 0.5, 0.5, np.nan, 0.5], r"column 'propensity': NaN, missing or infinite values at rows \[1, 4\]"),
        ([1.0, 0.5, 0.0, 0.5, 0.5, 0.5], r"column 'propensity': propensity outside \(0, 1\] at rows \[2\]"),
        ([1.0, 0.5, 1.5, 0.5, 0.5, "x"], r"column 'propensity': wrong dtype: non-numeric value 'x' .* at rows \[5\]"),
    ],
)
def test_partly_missing_or_invalid_propensities_refused_by_loggeddata(propensity, match):
    with pytest.raises(LoggedDataError, match=match):
        LoggedData.from_frame(_frame(propensity=propensity))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tau": 1.0}, r"tau must be a number in \[0, 1\), got 1.0"),
        ({"tau": -0.1}, r"tau must be a number in \[0, 1\), got -0.1"),
        ({"min_repeated_contexts": 0}, r"min_repeated_contexts must be an int >= 1, got 0"),
        ({"context_columns": ("nope",)}, r"context columns \['nope'\] are not in the log"),
        ({"probabilities": np.ones((2, 2))}, r"probabilities must be a finite \(n_rounds, n_actions\) = \(6, 2\) array"),
    ],
)
def test_bad_arguments(kwargs, match):
    data = LoggedData.from_frame(_frame(propensity=0.5))
    with pytest.raises(ValueError, match=match):
        detect_regime(data, **kwargs)
