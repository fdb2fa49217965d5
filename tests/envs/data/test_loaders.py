"""Loading from CSV and Parquet, chunked validation, and file-level errors."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pushrl.envs.common.errors import LoggedDataError
from pushrl.envs.data.loaders import (
    iter_log_chunks,
    load_catalogue,
    load_log,
    read_table_chunks,
    save_log,
)
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.schema import LogSchema
from pushrl.envs.data.synthetic import SCHEMA
from pushrl.envs.data.validation import numeric_looking_rows


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_csv_and_parquet_load_the_same(log_files, raw_log, fmt):
    data = load_log(log_files[fmt], SCHEMA, catalogue=log_files["catalogue"])
    assert data.n_rounds == len(raw_log)
    np.testing.assert_allclose(data.pscore, raw_log["propensity"].to_numpy(), rtol=1e-15)
    np.testing.assert_array_equal(data.frame["u0"].to_numpy(), raw_log["u0"].to_numpy())
    assert (data.timestamp.to_numpy() == pd.to_datetime(raw_log["timestamp"], utc=True).to_numpy()).all()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_chunked_equals_whole(log_files, fmt):
    whole = load_log(log_files[fmt], SCHEMA, catalogue=log_files["catalogue"])
    chunked = load_log(log_files[fmt], SCHEMA, catalogue=log_files["catalogue"], chunksize=37)
    pd.testing.assert_frame_equal(whole.frame, chunked.frame)


def test_chunk_errors_report_file_row_numbers(tmp_path, raw_log, log_files):
    raw_log.loc[[5, 250], "propensity"] = 2.0
    path = tmp_path / "bad.csv"
    raw_log.to_csv(path, index=False)
    with pytest.raises(LoggedDataError) as info:
        for _ in iter_log_chunks(path, SCHEMA, load_catalogue(log_files["catalogue"]), chunksize=100):
            pass
    assert info.value.rows == [5]  # first chunk fails first
    raw_log.loc[5, "propensity"] = 0.5
    raw_log.to_csv(path, index=False)
    with pytest.raises(LoggedDataError) as info:
        load_log(path, SCHEMA, catalogue=log_files["catalogue"], chunksize=100)
    assert info.value.rows == [250]


def test_path_does_not_exist(tmp_path):
    with pytest.raises(LoggedDataError, match="does not exist"):
        load_log(tmp_path / "nope.parquet")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("")
    with pytest.raises(LoggedDataError, match="empty"):
        load_log(p)


def test_header_only_file(tmp_path):
    p = tmp_path / "header.csv"
    p.write_text("action,click,propensity\n")
    with pytest.raises(LoggedDataError, match="no rows"):
        load_log(p)


def test_text_file_called_parquet(tmp_path):
    p = tmp_path / "fake.parquet"
    p.write_text("action,click\n1,0\n")
    with pytest.raises(LoggedDataError, match="not a readable Parquet file"):
        load_log(p)


def test_binary_file_called_csv(tmp_path, log_files):
    p = tmp_path / "fake.csv"
    p.write_bytes(log_files["parquet"].read_bytes())
    with pytest.raises(LoggedDataError, match="not a readable CSV file"):
        load_log(p)


def test_unknown_extension(tmp_path):
    p = tmp_path / "log.xlsx"
    p.write_text("x")
    with pytest.raises(LoggedDataError, match="unsupported file extension"):
        load_log(p)


def test_save_and_reload_roundtrip(tmp_path, log_files):
    data = load_log(log_files["csv"], SCHEMA, catalogue=log_files["catalogue"])
    out = save_log(data, tmp_path / "out" / "log.parquet")
    again = load_log(out, SCHEMA, catalogue=data.catalogue)
    pd.testing.assert_frame_equal(data.frame, again.frame)
    assert data.fingerprint() == again.fingerprint()


def test_fingerprint_changes_with_data(log_files):
    data = load_log(log_files["csv"], SCHEMA, catalogue=log_files["catalogue"])
    other = data.subset(np.arange(1, data.n_rounds))
    assert data.fingerprint() != other.fingerprint()


def _store_log(n: int = 60, unknown_rows: tuple[int, ...] = (7, 41)) -> pd.DataFrame:
    """A minimal log whose integer `store` column holds "unknown" at `unknown_rows`."""
    store: list[object] = [str(100 + i % 7) for i in range(n)]
    for r in unknown_rows:
        store[r] = "unknown"
    return pd.DataFrame({"action": [i % 3 for i in range(n)], "click": [i % 2 for i in range(n)],
                         "store": store, "segment": ["A", "B", "C"] * (n // 3)})


STORE_SCHEMA = LogSchema(rewards=("click",), optional_rewards=())


@pytest.mark.parametrize("header", ["action,click,city,city", "action,click,city,action"])
def test_duplicate_csv_header_is_refused_by_name(tmp_path, header):
    p = tmp_path / "dup.csv"
    p.write_text(header + "\n1,0,Paris,Lyon\n2,1,Rome,Oslo\n")
    twice = "city" if header.endswith("city,city") else "action"
    with pytest.raises(LoggedDataError, match=rf"duplicate column name\(s\) in the header: '{twice}' at columns") as info:
        load_log(p, STORE_SCHEMA)
    assert info.value.column == twice and "city.1" not in str(info.value) and "action.1" not in str(info.value)
    with pytest.raises(LoggedDataError, match="duplicate column name"):
        load_catalogue(p)


def test_duplicate_header_refused_in_gzip_csv_and_with_csv_options(tmp_path):
    p = tmp_path / "dup.csv.gz"
    pd.DataFrame([[1, 0, 2]], columns=["action", "click", "x"]).to_csv(p, index=False)
    assert load_log(p, STORE_SCHEMA).n_rounds == 1  # a clean header loads
    p.write_bytes(gzip.compress(b"action;click;x;x\n1;0;2;3\n"))
    with pytest.raises(LoggedDataError, match="'x' at columns \\[2, 3\\]"):
        list(read_table_chunks(p, sep=";"))


def test_two_unnamed_header_cells_are_left_to_pandas(tmp_path):
    p = tmp_path / "unnamed.csv"
    p.write_text(",,action,click\n0,0,1,0\n1,1,2,1\n")
    assert list(next(read_table_chunks(p)).columns) == ["Unnamed: 0", "Unnamed: 1", "action", "click"]


def test_duplicate_parquet_names_are_refused(tmp_path):
    p = tmp_path / "dup.parquet"
    table = pa.Table.from_arrays([pa.array([1, 2]), pa.array([0, 1]), pa.array([3, 4]), pa.array([5, 6])],
                                 names=["action", "click", "x", "x"])
    pq.write_table(table, p)
    with pytest.raises(LoggedDataError, match="duplicate column name.*'x'") as info:
        load_log(p, STORE_SCHEMA)
    assert info.value.column == "x"


def test_duplicate_frame_columns_are_refused():
    frame = pd.DataFrame([[1, 0, 2, 3]], columns=["action", "click", "x", "x"])
    with pytest.raises(LoggedDataError, match=r"duplicate column name\(s\) \['x'\]"):
        LoggedData.from_frame(frame, schema=STORE_SCHEMA)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_numeric_looking_column_is_refused_naming_the_rows(tmp_path, fmt):
    p = tmp_path / f"log.{fmt}"
    frame = _store_log()
    frame.to_csv(p, index=False) if fmt == "csv" else frame.to_parquet(p, index=False)
    with pytest.raises(LoggedDataError) as info:
        load_log(p, STORE_SCHEMA)
    err = info.value
    assert err.column == "store" and err.rows == [7, 41] and err.n_bad == 2
    assert "numeric-looking column: 58 of 60 values are numbers, 2 are not ('unknown')" in str(err)
    assert "clean those rows" in str(err) and "data.categorical: [store]" in str(err)
    assert "\n" not in str(err)


def test_numeric_looking_column_declared_categorical_loads(tmp_path):
    p = tmp_path / "log.csv"
    _store_log().to_csv(p, index=False)
    schema = LogSchema(rewards=("click",), optional_rewards=(), categorical_features=("store",))
    data = load_log(p, schema)
    assert data.columns.categorical_features == ("store", "segment") and data.columns.numeric_features == ()
    assert data.frame["store"].iloc[7] == "unknown" and data.frame["store"].iloc[0] == "100"


def test_text_columns_stay_categorical_and_numbers_numeric(tmp_path):
    p = tmp_path / "log.csv"
    frame = _store_log(unknown_rows=())
    frame["code"] = ["12", "x7", "x8"] * 20  # a third are numbers: a text column, not numeric-looking
    frame.to_csv(p, index=False)
    data = load_log(p, STORE_SCHEMA)
    assert data.columns.numeric_features == ("store",)
    assert data.columns.categorical_features == ("segment", "code")
    assert set(data.frame["code"]) == {"12", "x7", "x8"}


def test_stray_words_after_the_first_chunk_are_refused_with_the_same_advice(tmp_path):
    p = tmp_path / "log.csv"
    _store_log(unknown_rows=(45,)).to_csv(p, index=False)
    with pytest.raises(LoggedDataError, match="wrong dtype: non-numeric value 'unknown'") as info:
        load_log(p, STORE_SCHEMA, chunksize=20)  # the first chunk is all numbers: store is numeric
    assert info.value.column == "store" and info.value.rows == [45]
    assert "data.categorical=[store]" in str(info.value)


@pytest.mark.parametrize(("n_words", "looking"), [(0, False), (1, True), (5, True), (6, False), (100, False)])
def test_numeric_looking_threshold(n_words, looking):
    values = pd.Series(["unknown"] * n_words + [str(i) for i in range(100 - min(n_words, 100))] + [None, np.nan],
                       dtype=object)
    rows = numeric_looking_rows(values)
    if looking:
        assert rows is not None and rows.tolist() == list(range(n_words))
    else:
        assert rows is None
    assert numeric_looking_rows(pd.Series([1.0, 2.0, np.nan])) is None  # numbers already: not text
