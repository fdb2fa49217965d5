"""The tutorial's sample own-log: what the files hold, that load_log reads them, and that the truth matches them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.envs.data.example_log import (
    CATALOGUE_FILE,
    EXAMPLE_PROMOTIONS,
    LOG_COLUMNS,
    LOG_FILE,
    example_truth,
    write_example_log,
)
from pushrl.envs.data.loaders import load_log
from pushrl.envs.data.schema import LogSchema
from pushrl.envs.data.synthetic import NO_PUSH_ID
from pushrl.policies.policy import to_action_dist

SCHEMA = LogSchema(rewards=("click", "conversion", "revenue"), optional_rewards=())
N_ROWS = 20_000


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> tuple[Path, Path]:
    return write_example_log(tmp_path_factory.mktemp("example") / "new" / "folder", n_rows=N_ROWS, seed=3)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_files_hold_the_documented_columns(example):
    log_path, catalogue_path = example
    assert (log_path.name, catalogue_path.name) == (LOG_FILE, CATALOGUE_FILE)
    assert sorted(p.name for p in log_path.parent.iterdir()) == sorted([LOG_FILE, CATALOGUE_FILE])  # no temp files left
    log, cat = pd.read_csv(log_path), pd.read_csv(catalogue_path)
    assert tuple(log.columns) == LOG_COLUMNS and len(log) == N_ROWS
    assert list(cat.columns) == ["action", "discount", "category", "channel"]
    assert len(cat) == EXAMPLE_PROMOTIONS + 1 and cat["action"].iloc[-1] == NO_PUSH_ID
    assert cat["action"].str.fullmatch(r"[a-z]+\d+_(email|push|sms)|no_push").all()
    assert set(log["action"]) <= set(cat["action"])
    assert log["user_id"].str.fullmatch(r"U\d{5}").all() and 1_000 < log["user_id"].nunique() <= 2_000
    ts = pd.to_datetime(log["timestamp"], format="ISO8601", utc=True)
    assert log["timestamp"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").all() and ts.is_monotonic_increasing
    assert set(log["device"]) == {"ios", "android", "web"} and log["age"].between(18, 80).all()
    profile = ["age", "tenure_days", "past_orders", "sessions_30d", "device", "region"]
    assert (log.groupby("user_id")[profile].nunique() == 1).all().all()  # one profile per user


def test_the_log_is_shop_like(example):
    log = pd.read_csv(example[0])
    no_push = log["action"] == NO_PUSH_ID
    assert no_push.mean() > 0.02 and (log.loc[no_push, "click"] == 0).all()
    organic = (log["conversion"] == 1) & (log["click"] == 0)
    assert organic.sum() > 100 and (log.loc[no_push, "conversion"] == 1).any()
    assert (log.loc[log["conversion"] == 0, "revenue"] == 0).all()
    assert 0.01 < log["propensity"].min() and log["propensity"].max() < 0.9  # the softmax business rule
    assert log["recent_pushes"].max() >= 2


def test_load_log_reads_it_and_the_truth_matches_the_rows(example):
    log_path, catalogue_path = example
    data = load_log(log_path, schema=SCHEMA, catalogue=catalogue_path)
    assert data.n_rounds == N_ROWS and data.columns.rewards == ("click", "conversion", "revenue")
    assert set(data.columns.numeric_features) == {"age", "tenure_days", "past_orders", "sessions_30d", "recent_pushes"}
    assert set(data.columns.categorical_features) == {"device", "region"}
    assert data.columns.has_propensity and data.columns.has_timestamp and data.columns.has_user_id
    truth = example_truth(N_ROWS, seed=3)
    np.testing.assert_array_equal(data.action_ids, truth.action_ids)
    probs = truth.logging_probabilities(*truth.row_inputs(data))
    np.testing.assert_allclose(data.pscore, probs[np.arange(data.n_rounds), data.action], rtol=1e-12)
    for reward in ("click", "conversion", "revenue"):  # the truth's value of the logging policy is the logged mean
        y = data.reward(reward)
        value = truth.policy_value(data, to_action_dist(probs, 1), reward)
        assert abs(y.mean() - value) < 4 * y.std() / np.sqrt(len(y)), reward


def test_the_user_columns_are_monotone_in_the_latent_features(example):
    log = pd.read_csv(example[0]).drop_duplicates("user_id")
    truth = example_truth(N_ROWS, seed=3)
    x = truth.user_features[truth.user_index(log["user_id"].to_numpy())]
    for k, column in enumerate(["age", "tenure_days", "past_orders", "sessions_30d"]):
        order = np.argsort(x[:, k])
        assert np.all(np.diff(log[column].to_numpy()[order]) >= 0), column


def test_same_seed_same_bytes_other_seed_other_files(tmp_path, example):
    a = write_example_log(tmp_path / "a", n_rows=N_ROWS, seed=3)
    assert [_sha(p) for p in a] == [_sha(p) for p in example]
    b = write_example_log(tmp_path / "b", n_rows=N_ROWS, seed=4)
    assert _sha(b[0]) != _sha(a[0])


def test_rule_logging_writes_propensity_one(tmp_path):
    log_path, catalogue_path = write_example_log(tmp_path, n_rows=2_000, logging="rule")
    data = load_log(log_path, schema=SCHEMA, catalogue=catalogue_path)
    assert np.all(data.pscore == 1.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"n_rows": 0}, "n_rows"),
    ({"n_rows": 2.5}, "n_rows"),
    ({"logging": "greedy"}, "logging"),
])
def test_bad_arguments_are_refused_by_name_and_write_nothing(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_example_log(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_a_file_in_place_of_the_folder_is_refused(tmp_path):
    target = tmp_path / "taken"
    target.write_text("x")
    with pytest.raises(ValueError, match="directory"):
        write_example_log(target, n_rows=100)
