"""`describe`: counts against pandas, ESS against its formula, regimes, streaming == in-memory."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pushrl.envs.data.describe import describe_data, describe_file
from pushrl.envs.data.loaders import load_catalogue, load_log
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.synthetic import SCHEMA, SyntheticConfig, generate_log


def test_counts_and_rates_match_pandas(log_files, raw_log):
    desc = describe_file(log_files["csv"], SCHEMA, load_catalogue(log_files["catalogue"]))
    assert desc.rows == len(raw_log)
    assert desc.users == raw_log["user_id"].nunique()
    assert desc.positions == raw_log["position"].value_counts().sort_index().to_dict()
    rates = raw_log.groupby("action")["click"].mean()
    np.testing.assert_allclose(desc.per_action.loc[rates.index, "click_rate"], rates.to_numpy())
    assert desc.rewards["click"] == pytest.approx(raw_log["click"].mean())
    assert desc.propensity["min"] == raw_log["propensity"].min()


def test_streaming_equals_in_memory(log_files):
    cat = load_catalogue(log_files["catalogue"])
    small = describe_file(log_files["parquet"], SCHEMA, cat, chunksize=23)
    whole = describe_data(load_log(log_files["parquet"], SCHEMA, catalogue=cat))
    assert small.rows == whole.rows and small.users == whole.users
    assert small.ess == pytest.approx(whole.ess, rel=1e-12)
    pd.testing.assert_frame_equal(small.per_action, whole.per_action)


def test_ess_formula_and_regimes():
    data, _ = generate_log(SyntheticConfig(n_rows=5000, logging="softmax", logging_temperature=0.3, seed=4))
    desc = describe_data(data)
    w = (1 / data.n_actions) / data.pscore
    assert desc.ess == pytest.approx(w.sum() ** 2 / (w**2).sum(), rel=1e-12)
    assert desc.logging_regime == "stochastic"
    uni, _ = generate_log(SyntheticConfig(n_rows=500, logging="uniform"))
    assert describe_data(uni).logging_regime == "uniform" and describe_data(uni).ess == pytest.approx(500)
    det, _ = generate_log(SyntheticConfig(n_rows=500, logging="deterministic"))
    d = describe_data(det)
    assert d.logging_regime == "deterministic"
    assert any("not identified" in w for w in d.warnings)
    absent = LoggedData.from_frame(uni.frame.drop(columns=["propensity", "action_index"]), schema=SCHEMA)
    assert describe_data(absent).logging_regime == "absent"


def test_json_is_serialisable(log_files):
    desc = describe_file(log_files["csv"], SCHEMA, load_catalogue(log_files["catalogue"]))
    json.dumps(desc.to_dict(), default=str, allow_nan=False)  # NaN is not JSON


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pushrl.experiments.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_describe_file_and_dataset(log_files):
    out = _cli("data", "describe", str(log_files["parquet"]), "--catalogue", str(log_files["catalogue"]))
    assert out.returncode == 0, out.stderr
    assert "rows: 400" in out.stdout and "logging regime: uniform" in out.stdout
    out = _cli("data", "describe", "hillstrom", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["rows"] == 44_800


def test_cli_describe_bad_file_exits_2_with_message(tmp_path):
    out = _cli("data", "describe", str(tmp_path / "missing.csv"))
    assert out.returncode == 2
    assert "does not exist" in out.stderr


def test_json_with_a_never_logged_promotion_has_null_rates(raw_log, raw_catalogue):
    from pushrl.envs.data.catalogue import Catalogue

    extra = raw_catalogue.copy()
    extra.loc[len(extra)] = [99, *extra.iloc[0, 1:].tolist()]
    data = LoggedData.from_frame(raw_log, schema=SCHEMA, catalogue=Catalogue.from_frame(extra, id_column="action"))
    doc = json.loads(json.dumps(describe_data(data).to_dict(), default=str, allow_nan=False))
    row = next(r for r in doc["per_action"] if r["action"] == 99)
    assert row["rows"] == 0 and row["click_rate"] is None


def test_describe_reports_the_support_table():
    """The issue's support table: per action, the share of contexts where its logging probability exceeds tau."""
    from pushrl.envs.data.synthetic import SyntheticConfig, generate_log

    data, truth = generate_log(SyntheticConfig(n_rows=3000, n_actions=4, logging="softmax", logging_temperature=0.25,
                                               seed=1))
    desc = describe_data(data)
    assert desc.support is not None and desc.support_tau == 0.01
    assert list(desc.support.index) == list(data.action_ids)
    doc = desc.to_dict()
    assert [r["action"] for r in doc["support"]] == list(data.action_ids)
    assert "support (logging probability > tau = 0.01" in desc.to_text()
    # a sharp softmax logger: actions fall below tau in some contexts; the table (logged propensities where the
    # pair was logged, a cross-fitted estimate elsewhere) must recover each action's true supported share
    from pushrl.envs.data.regime import context_ids

    true_p = truth.logging_probabilities(*truth.row_inputs(data))
    ctx, n_ctx = context_ids(data)
    counts = np.bincount(ctx, minlength=n_ctx)[:, None]
    context_p = np.stack([np.bincount(ctx, weights=true_p[:, a], minlength=n_ctx) for a in range(4)], 1) / counts
    true_share = (context_p > 0.01).mean(axis=0)  # the true logging probability per context, as the table defines it
    np.testing.assert_allclose(desc.support["supported_share"].to_numpy(), true_share, atol=0.1)
    assert desc.support["logged_rows"].tolist() == np.bincount(data.action, minlength=4).tolist()
    uniform, _ = generate_log(SyntheticConfig(n_rows=500, n_actions=4, seed=2))
    exact = describe_data(uniform)
    assert exact.support_source.startswith("exact") and (exact.support["supported_share"] == 1).all()
    assert describe_data(uniform, support=False).support is None
