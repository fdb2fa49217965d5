"""Loading from CSV and Parquet, chunked validation, and file-level errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pushrl.envs.common.errors import LoggedDataError
from pushrl.envs.data.loaders import iter_log_chunks, load_catalogue, load_log, save_log
from pushrl.envs.data.synthetic import SCHEMA


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
