"""Shared fixtures: small valid logs written to disk in both formats."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import settings

from pushrl.envs.data.synthetic import SyntheticConfig, catalogue_frame, make_truth, simulate_rows

# CI runs the same examples every time (no flaky red builds); locally they vary.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")



@pytest.fixture(scope="session")
def small_truth():
    return make_truth(SyntheticConfig(n_rows=400, n_users=50, n_actions=5, n_positions=2, seed=7))


@pytest.fixture()
def raw_log(small_truth) -> pd.DataFrame:
    """A valid raw log table (fresh copy per test)."""
    return simulate_rows(small_truth)


@pytest.fixture()
def raw_catalogue(small_truth) -> pd.DataFrame:
    return catalogue_frame(small_truth)


@pytest.fixture()
def log_files(tmp_path: Path, raw_log: pd.DataFrame, raw_catalogue: pd.DataFrame) -> dict[str, Path]:
    csv, pq, cat = tmp_path / "log.csv", tmp_path / "log.parquet", tmp_path / "catalogue.csv"
    raw_log.to_csv(csv, index=False)
    raw_log.to_parquet(pq, index=False)
    raw_catalogue.to_csv(cat, index=False)
    return {"csv": csv, "parquet": pq, "catalogue": cat}
