"""Drift report: windows, PSI against a brute-force loop, injected shifts found, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from pushrl.envs.data.drift import drift_report, psi, time_windows
from pushrl.envs.data.hillstrom import load_hillstrom
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.synthetic import SCHEMA, SyntheticConfig, generate_log


@pytest.fixture(scope="module")
def log() -> LoggedData:
    return generate_log(SyntheticConfig(n_rows=6_000, n_users=600, seed=3))[0]


def _shifted(data: LoggedData) -> LoggedData:
    """The same log with u0 shifted by +1 and segment s0 relabelled s2 in the last third of the time range."""
    raw = data.frame.drop(columns=["action_index"]).copy()
    late = raw["timestamp"] >= raw["timestamp"].quantile(2 / 3)
    raw.loc[late, "u0"] += 1.0
    raw.loc[late & (raw["segment"] == "s0"), "segment"] = "s2"
    return LoggedData.from_frame(raw, schema=SCHEMA, catalogue=data.catalogue)


def brute_force_psi(ref, cur, categorical, n_bins=10, eps=1e-4) -> float:
    """PSI by explicit loops over values and bins."""
    if categorical:
        cats = sorted(set(map(str, ref)) | set(map(str, cur)))
        bins_ref = [sum(1 for v in ref if str(v) == c) for c in cats]
        bins_cur = [sum(1 for v in cur if str(v) == c) for c in cats]
    else:
        qs = sorted(set(float(np.quantile(ref, k / n_bins)) for k in range(1, n_bins)))
        bins_ref, bins_cur = [0] * (len(qs) + 1), [0] * (len(qs) + 1)
        for values, bins in ((ref, bins_ref), (cur, bins_cur)):
            for v in values:
                bins[sum(1 for e in qs if v >= e)] += 1
    total = 0.0
    for r, c in zip(bins_ref, bins_cur, strict=True):
        p_r, p_c = max(r / len(ref), eps), max(c / len(cur), eps)
        total += (p_c - p_r) * math.log(p_c / p_r)
    return total


@pytest.mark.parametrize("seed", range(4))
def test_psi_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=300)
    cur = rng.normal(loc=0.3 * seed, scale=1 + 0.2 * seed, size=250)
    assert psi(ref, cur) == pytest.approx(brute_force_psi(ref, cur, False), rel=1e-12)
    ints_ref, ints_cur = rng.integers(0, 4, size=200), rng.integers(0, 6, size=150)  # few values: merged edges
    assert psi(ints_ref, ints_cur, n_bins=7) == pytest.approx(brute_force_psi(ints_ref, ints_cur, False, 7), rel=1e-12)
    cats_ref = rng.choice(["a", "b", "c"], size=200, p=[0.5, 0.3, 0.2])
    cats_cur = rng.choice(["a", "b", "d"], size=180)  # "c" vanishes, "d" is new: eps bins
    assert psi(cats_ref, cats_cur, categorical=True) == pytest.approx(
        brute_force_psi(cats_ref, cats_cur, True), rel=1e-12)


def test_psi_is_zero_for_identical_and_grows_with_shift():
    x = np.random.default_rng(0).normal(size=2_000)
    assert psi(x, x) == 0.0
    shifts = [psi(x, x + s) for s in (0.1, 0.5, 1.0)]
    assert shifts == sorted(shifts) and shifts[0] < 0.1 < shifts[-1]


def test_equal_count_windows_partition_the_log_in_time_order(log):
    windows = time_windows(log, n_windows=4)
    rows = np.concatenate([w.rows for w in windows])
    assert sorted(rows.tolist()) == list(range(log.n_rounds))
    ts = log.timestamp
    for a, b in zip(windows[:-1], windows[1:], strict=True):
        assert ts.iloc[a.rows].max() < ts.iloc[b.rows].min() and a.end < b.start
    assert [len(w.rows) for w in windows] == [1500] * 4
    assert [w.label for w in windows] == ["w0", "w1", "w2", "w3"]


def test_calendar_windows(log):
    windows = time_windows(log, freq="W")
    weeks = log.timestamp.dt.tz_localize(None).dt.to_period("W")
    assert [len(w.rows) for w in windows] == weeks.value_counts().sort_index().tolist()
    assert windows[0].label == str(weeks.min())


def test_ties_stay_in_one_window():
    frame = pd.DataFrame({"timestamp": ["2026-01-01"] * 5 + ["2026-01-02"] * 3, "x": np.arange(8.0),
                          "action": 0, "click": 0.0})
    data = LoggedData.from_frame(frame)
    windows = time_windows(data, n_windows=2)
    assert [w.rows.tolist() for w in windows] == [[0, 1, 2, 3, 4], [5, 6, 7]]


def test_report_finds_the_injected_shift(log):
    stable = drift_report(log, n_windows=3)
    assert stable.psi.to_numpy().max() < 0.1 and stable.warnings == ()
    report = drift_report(_shifted(log), n_windows=3)
    assert report.psi.loc["w2", "u0"] > 0.25 and report.psi.loc["w2", "segment"] > 0.25
    assert report.psi.loc["w1", "u0"] < 0.1 and (report.psi.loc["w0"] == 0).all()
    assert any("feature 'u0': major shift" in w and "window w2" in w for w in report.warnings)
    shifted = _shifted(log)
    windows = time_windows(shifted, n_windows=3)
    col = shifted.frame["u0"].to_numpy()
    assert report.psi.loc["w2", "u0"] == pytest.approx(brute_force_psi(col[windows[0].rows], col[windows[2].rows], False))


def test_reward_rates_per_window(log):
    report = drift_report(log, freq="W", features=("u0",))
    windows = time_windows(log, freq="W")
    for w in windows:
        assert report.reward_rates.loc[w.label, "click"] == pytest.approx(log.reward("click")[w.rows].mean())
        assert report.windows.loc[w.label, "rows"] == len(w.rows)
    assert list(report.psi.columns) == ["u0"]
    json.dumps(report.to_dict())
    assert "PSI per feature" in report.to_text()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, r"give exactly one of n_windows and freq, got n_windows=None, freq=None"),
        ({"n_windows": 3, "freq": "D"}, r"give exactly one of n_windows and freq"),
        ({"n_windows": 1}, r"n_windows must be an int >= 2 .*got 1"),
        ({"freq": "fortnightly"}, r"freq must be a pandas period frequency .* got 'fortnightly'"),
        ({"freq": "Y"}, r"fall into 1 window\(s\); drift needs at least 2"),
        ({"n_windows": 3, "n_bins": 1}, r"n_bins must be an int >= 2, got 1"),
        ({"n_windows": 3, "eps": 0.0}, r"eps must be in \(0, 1\), got 0.0"),
        ({"n_windows": 3, "features": ("nope",)}, r"features \['nope'\] are not features of this log"),
    ],
)
def test_bad_input(log, kwargs, match):
    with pytest.raises(ValueError, match=match):
        drift_report(log, **kwargs)


def test_log_without_timestamps_is_refused():
    with pytest.raises(ValueError, match=r"log 'hillstrom' has no timestamp column"):
        drift_report(load_hillstrom(), n_windows=2)
