"""Every kind of bad input is refused with the column, the rows and what was expected."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from pushrl.envs.common.errors import LoggedDataError
from pushrl.envs.data.catalogue import Catalogue
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.synthetic import SCHEMA


def _load(frame: pd.DataFrame, catalogue_frame: pd.DataFrame | None = None) -> LoggedData:
    cat = Catalogue.from_frame(catalogue_frame, id_column="action") if catalogue_frame is not None else None
    return LoggedData.from_frame(frame, schema=SCHEMA, catalogue=cat)


def _set(frame: pd.DataFrame, column: str, rows: list[int], value) -> pd.DataFrame:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        frame[column] = frame[column].astype(object)
    elif isinstance(value, float):
        frame[column] = frame[column].astype(np.float64)
    frame.loc[rows, column] = value
    return frame


CASES = [
    # (description, corruption, column, rows, message fragment)
    ("missing required column", lambda f: f.drop(columns=["click"]), "click", [], "missing required column"),
    ("missing action column", lambda f: f.drop(columns=["action"]), "action", [], "missing required column"),
    ("wrong dtype in reward", lambda f: _set(f, "click", [3], "yes"), "click", [3], "wrong dtype"),
    ("wrong dtype in propensity", lambda f: _set(f, "propensity", [5, 9], "high"), "propensity", [5, 9], "wrong dtype"),
    ("NaN reward", lambda f: _set(f, "click", [2], np.nan), "click", [2], "NaN"),
    ("inf feature", lambda f: _set(f, "u1", [7], np.inf), "u1", [7], "infinite"),
    ("NaN propensity", lambda f: _set(f, "propensity", [11], np.nan), "propensity", [11], "NaN"),
    ("zero propensity", lambda f: _set(f, "propensity", [4], 0.0), "propensity", [4], r"outside \(0, 1\]"),
    ("propensity above one", lambda f: _set(f, "propensity", [8], 1.5), "propensity", [8], r"outside \(0, 1\]"),
    ("negative propensity", lambda f: _set(f, "propensity", [1], -0.2), "propensity", [1], r"outside \(0, 1\]"),
    ("action not in catalogue", lambda f: _set(f, "action", [6], 99), "action", [6], "not in the catalogue"),
    ("negative revenue", lambda f: _set(f, "revenue", [12], -3.0), "revenue", [12], "negative"),
    ("non-binary click", lambda f: _set(f, "click", [13], 2.0), "click", [13], "other than 0 or 1"),
    ("unparseable timestamp", lambda f: _set(f, "timestamp", [14], "not a date"), "timestamp", [14], "do not parse"),
    ("missing categorical", lambda f: _set(f, "segment", [15], None), "segment", [15], "missing category"),
    ("negative position", lambda f: _set(f, "position", [16], -1), "position", [16], "negative"),
    ("fractional position", lambda f: _set(f, "position", [17], 0.5), "position", [17], "not an integer"),
]


@pytest.mark.parametrize("desc, corrupt, column, rows, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_names_column_and_rows(raw_log, raw_catalogue, desc, corrupt, column, rows, fragment):
    bad = corrupt(raw_log.copy())
    with pytest.raises(LoggedDataError, match=fragment) as info:
        _load(bad, raw_catalogue)
    err = info.value
    assert err.column == column
    assert err.rows == rows
    assert f"'{column}'" in str(err)
    assert "expected" in str(err)


def test_valid_log_is_accepted_unchanged(raw_log, raw_catalogue):
    data = _load(raw_log.copy(), raw_catalogue)
    assert data.n_rounds == len(raw_log)
    np.testing.assert_array_equal(data.pscore, raw_log["propensity"].to_numpy())
    np.testing.assert_array_equal(data.reward("click"), raw_log["click"].to_numpy())
    np.testing.assert_array_equal(data.catalogue.ids[data.action], raw_log["action"].to_numpy())


def test_duplicate_catalogue_ids(raw_catalogue):
    cat = pd.concat([raw_catalogue, raw_catalogue.iloc[[1]]], ignore_index=True)
    with pytest.raises(LoggedDataError, match="duplicate promotion ids") as info:
        Catalogue.from_frame(cat, id_column="action")
    assert info.value.rows == [1, len(cat) - 1]


def test_revenue_without_conversion(raw_log, raw_catalogue):
    row = int(np.flatnonzero(raw_log["conversion"].to_numpy() == 0)[0])
    raw_log.loc[row, "revenue"] = 10.0
    with pytest.raises(LoggedDataError, match="revenue > 0 where conversion is 0") as info:
        _load(raw_log, raw_catalogue)
    assert info.value.rows == [row]


def test_empty_frame_refused(raw_log):
    with pytest.raises(LoggedDataError, match="no rows"):
        _load(raw_log.iloc[:0])


def test_position_beyond_declared_slots(raw_log, raw_catalogue):
    with pytest.raises(LoggedDataError, match="beyond the number of slots"):
        LoggedData.from_frame(raw_log, schema=SCHEMA, catalogue=Catalogue.from_frame(raw_catalogue), n_positions=1)


def test_many_bad_rows_reported_with_count(raw_log, raw_catalogue):
    raw_log.loc[:49, "propensity"] = 0.0
    with pytest.raises(LoggedDataError) as info:
        _load(raw_log, raw_catalogue)
    assert info.value.n_bad == 50
    assert info.value.rows == [0, 1, 2, 3, 4]
    assert "and 45 more" in str(info.value)


def test_log_without_optional_columns(raw_log):
    slim = raw_log.drop(columns=["timestamp", "user_id", "position", "conversion", "revenue"])
    data = LoggedData.from_frame(slim, schema=SCHEMA)
    assert data.timestamp is None and data.user_id is None
    assert data.n_positions == 1 and set(data.position) == {0}
    assert data.reward_names == ("click",)


def test_propensity_column_absent_is_allowed(raw_log):
    data = LoggedData.from_frame(raw_log.drop(columns=["propensity"]), schema=SCHEMA)
    assert data.pscore is None


# unsubscribe: an outcome column (not a reward) ----------------------------------------------------------------------
def _with_unsubscribe(raw_log: pd.DataFrame, column: str = "unsubscribe") -> pd.DataFrame:
    """The log with a 0/1 unsubscribe column: each user unsubscribes at their last row (by time) and never before."""
    frame = raw_log.copy()
    last = frame.sort_values("timestamp").groupby("user_id").tail(1).index
    frame[column] = 0
    frame.loc[last, column] = 1
    return frame


def test_unsubscribe_is_an_outcome_not_a_reward_nor_a_feature(raw_log, raw_catalogue):
    frame = _with_unsubscribe(raw_log)
    data = _load(frame, raw_catalogue)
    assert data.has_unsubscribe and data.reward_names == ("click", "conversion", "revenue")
    assert "unsubscribe" not in data.feature_names
    np.testing.assert_array_equal(data.unsubscribe, frame["unsubscribe"].to_numpy(dtype=float))
    assert data.unsubscribe_observed.all() and data.warnings == ()  # nobody was pushed after unsubscribing
    # absent column: no role; the role off (None or excluded): the column is a plain (look-alike) feature
    assert not _load(raw_log, raw_catalogue).has_unsubscribe and _load(raw_log, raw_catalogue).unsubscribe is None
    off = LoggedData.from_frame(frame, schema=replace(SCHEMA, unsubscribe=None))
    assert not off.has_unsubscribe and "unsubscribe" in off.feature_names
    assert not LoggedData.from_frame(frame, schema=replace(SCHEMA, exclude=("unsubscribe",))).has_unsubscribe


def test_unsubscribe_column_is_renameable(raw_log, raw_catalogue):
    frame = _with_unsubscribe(raw_log, "opted_out")
    data = LoggedData.from_frame(frame, schema=replace(SCHEMA, unsubscribe="opted_out"))
    np.testing.assert_array_equal(data.unsubscribe, frame["opted_out"].to_numpy(dtype=float))
    assert "opted_out" not in data.feature_names
    frame.loc[[3, 8], "opted_out"] = 2
    with pytest.raises(LoggedDataError, match="value other than 0 or 1") as info:
        LoggedData.from_frame(frame, schema=replace(SCHEMA, unsubscribe="opted_out"))
    assert info.value.column == "opted_out" and info.value.rows == [3, 8]


@pytest.mark.parametrize(("value", "fragment"), [(0.5, "other than 0 or 1"), (-1, "other than 0 or 1"),
                                                 (np.nan, "NaN"), ("yes", "wrong dtype")])
def test_unsubscribe_not_0_or_1_is_refused_naming_column_and_rows(raw_log, raw_catalogue, value, fragment):
    frame = _set(_with_unsubscribe(raw_log), "unsubscribe", [5, 17], value)
    with pytest.raises(LoggedDataError, match=fragment) as info:
        _load(frame, raw_catalogue)
    assert info.value.column == "unsubscribe" and info.value.rows == [5, 17] and "0 or 1" in str(info.value)


def test_unsubscribe_cannot_also_be_a_reward(raw_log):
    with pytest.raises(ValueError, match="several roles.*unsubscribe is an outcome, not a reward"):
        replace(SCHEMA, rewards=("click", "unsubscribe"))
    # with the role renamed, a column literally called `unsubscribe` would shadow the canonical one
    frame = _with_unsubscribe(_with_unsubscribe(raw_log), "opted_out")
    with pytest.raises(LoggedDataError, match="column 'unsubscribe': .*reward or feature"):
        LoggedData.from_frame(frame, schema=replace(SCHEMA, unsubscribe="opted_out"))


def _pushed_after(frame: pd.DataFrame, no_push: object | None) -> tuple[set, list[int]]:
    """Brute force: (users, rows) with a row strictly later than the user's first unsubscribe, not a no-push."""
    users, rows = set(), []
    for i, row in frame.iterrows():
        mine = frame[(frame["user_id"] == row["user_id"]) & (frame["unsubscribe"] == 1)]
        if len(mine) and pd.Timestamp(row["timestamp"]) > pd.to_datetime(mine["timestamp"]).min() \
                and row["action"] != no_push:
            users.add(row["user_id"])
            rows.append(int(i))
    return users, rows


def test_pushes_after_an_unsubscribe_are_a_warning_naming_users_and_rows(raw_log, raw_catalogue):
    frame = raw_log.copy()
    order = frame.sort_values("timestamp")
    first = order.groupby("user_id").head(1).index[:6]  # six users unsubscribe at their first row
    frame["unsubscribe"] = 0
    frame.loc[first, "unsubscribe"] = 1
    no_push = raw_catalogue["action"].iloc[-1]
    users, rows = _pushed_after(frame, no_push)
    assert len(users) >= 3 and len(rows) > 5
    data = LoggedData.from_frame(frame, schema=replace(SCHEMA, no_push_action=no_push),
                                 catalogue=Catalogue.from_frame(raw_catalogue, id_column="action"))
    (warning,) = [w for w in data.warnings if "after unsubscribing" in w]
    assert f"{len(users)} user(s) still got pushes after unsubscribing ({len(rows)} row(s)" in warning
    assert "first rows " + ", ".join(map(str, sorted(rows)[:5])) + ", ..." in warning
    assert warning.startswith("column 'unsubscribe'")
    # the outcome is not observed on a user's rows after their unsubscribe, no-push rows included
    _, later = _pushed_after(frame, None)
    assert sorted(np.flatnonzero(~data.unsubscribe_observed).tolist()) == sorted(later)
    assert data.subset(np.array(later)).unsubscribe_observed.sum() == 0  # kept through a split
    # without user ids or timestamps, order is unknown: no warning, every row observed
    bare = LoggedData.from_frame(frame.drop(columns=["timestamp"]), schema=SCHEMA)
    assert bare.unsubscribe_observed.all() and not any("after unsubscribing" in w for w in bare.warnings)


def test_save_and_load_keep_the_unsubscribe_role(raw_log, raw_catalogue, tmp_path):
    from pushrl.envs.data.loaders import load_log, save_log

    data = _load(_with_unsubscribe(raw_log), raw_catalogue)
    back = load_log(save_log(data, tmp_path / "log.parquet"), SCHEMA, catalogue=data.catalogue)
    np.testing.assert_array_equal(back.unsubscribe, data.unsubscribe)
    assert back.feature_names == data.feature_names and back.reward_names == data.reward_names
