"""Splits never leak the future; without timestamps they are stratified and say so."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pushrl.envs.data.hillstrom import load_hillstrom
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.split import split_log, time_split_indices
from pushrl.envs.data.synthetic import SCHEMA


def test_time_split_has_no_leakage(raw_log):
    data = LoggedData.from_frame(raw_log, schema=SCHEMA)
    s = split_log(data)
    assert s.method == "time"
    assert s.train.timestamp.max() < s.validation.timestamp.min()
    assert s.validation.timestamp.max() < s.test.timestamp.min()
    assert s.train.n_rounds + s.validation.n_rounds + s.test.n_rounds == data.n_rounds


def test_ties_at_the_cut_stay_together():
    ts = np.array([0, 1, 1, 1, 1, 2, 3, 3, 4, 5], dtype="datetime64[s]")
    parts = time_split_indices(ts, (0.3, 0.3, 0.4))
    for earlier, later in zip(parts, parts[1:], strict=False):
        if len(earlier) and len(later):
            assert ts[earlier].max() < ts[later].min()
    assert sorted(np.concatenate(parts)) == list(range(10))


def test_time_split_is_by_time_not_by_row_order(raw_log):
    shuffled = raw_log.sample(frac=1.0, random_state=1).reset_index(drop=True)
    s = split_log(LoggedData.from_frame(shuffled, schema=SCHEMA))
    assert s.train.timestamp.max() < s.test.timestamp.min()


def test_random_split_without_timestamps_is_stratified_and_stated():
    data = load_hillstrom()
    s = split_log(data, seed=4)
    assert s.method == "random-stratified"
    assert "not a time split" in s.note and "seed 4" in s.note
    full = pd.Series(data.action).value_counts(normalize=True).sort_index()
    for part in (s.train, s.validation, s.test):
        share = pd.Series(part.action).value_counts(normalize=True).sort_index()
        np.testing.assert_allclose(share.to_numpy(), full.to_numpy(), atol=2e-3)
    again = split_log(data, seed=4)
    np.testing.assert_array_equal(again.test.frame["history"], s.test.frame["history"])
    other = split_log(data, seed=5)
    assert not np.array_equal(other.test.frame["history"].to_numpy(), s.test.frame["history"].to_numpy())


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.7, 0.4, -0.1), (0.2, 0.2, 0.2)])
def test_bad_fractions(raw_log, fractions):
    with pytest.raises(ValueError, match="fractions"):
        split_log(LoggedData.from_frame(raw_log, schema=SCHEMA), fractions)
