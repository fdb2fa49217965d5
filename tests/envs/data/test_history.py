"""History features from the log: vectorised == a plain loop, chunked == whole, no leakage, bad input by name."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pushrl.envs.common.errors import LoggedDataError
from pushrl.envs.data.history import (
    CATEGORY,
    DAYS_SINCE,
    RATE,
    RECENT,
    HistoryConfig,
    derive_history,
    derive_history_chunks,
    history_at,
    user_chunks,
)
from pushrl.envs.data.synthetic import recent_push_counts

NO_PUSH = 4
CATS = np.array(["a", "b", "a", "c", "none"])  # category per integer action 0..4 (4 = no push)
START = pd.Timestamp("2026-01-01", tz="UTC")


def random_log(n: int = 400, n_users: int = 12, seed: int = 0, datetimes: bool = True) -> pd.DataFrame:
    """Ties (times on a half-day grid), no-push rows, several users, rows in random (not time) order."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"user_id": rng.integers(0, n_users, n).astype(str),
                          "day": rng.integers(0, 40, n) / 2.0,
                          "action": rng.integers(0, 5, n),
                          "click": rng.integers(0, 2, n).astype(float)})
    frame = frame.drop_duplicates(["user_id", "day", "action"]).reset_index(drop=True)
    frame["timestamp"] = START + pd.to_timedelta(frame["day"], unit="D") if datetimes else frame["day"]
    return frame


def brute_force(frame: pd.DataFrame, cfg: HistoryConfig) -> pd.DataFrame:
    """A plain loop over every row and every earlier row of its user (times in days)."""
    day = frame["day"].to_numpy()
    user = frame["user_id"].to_numpy()
    act = frame["action"].to_numpy()
    y = frame["click"].to_numpy()
    rows = []
    for i in range(len(frame)):
        rec = {RECENT: 0.0, "history_pushes_1d": 0.0, "history_pushes_3d": 0.0, "history_pushes_7d": 0.0,
               CATEGORY: 0.0}
        last, num, den = None, 0.0, 0.0
        for j in range(len(frame)):
            if user[j] != user[i] or not day[j] < day[i] or act[j] == cfg.no_push_action:
                continue
            age = day[i] - day[j]
            for w, name in ((cfg.window, RECENT), (1, "history_pushes_1d"), (3, "history_pushes_3d"), (7, "history_pushes_7d")):
                rec[name] += age <= w
            rec[CATEGORY] += age <= 7 and CATS[act[j]] == CATS[act[i]]
            last = day[j] if last is None else max(last, day[j])
            weight = 0.5 ** (age / cfg.half_life_days)
            num, den = num + weight * y[j], den + weight
        rec[DAYS_SINCE] = cfg.days_since_cap if last is None else min(day[i] - last, cfg.days_since_cap)
        rec[RATE] = num / den if den > 0 else 0.0
        rows.append(rec)
    return pd.DataFrame(rows)[list(cfg.columns)]


def config(**kw) -> HistoryConfig:
    return HistoryConfig(no_push_action=NO_PUSH, reward="click", categories=CATS, half_life_days=2.5, **kw)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("datetimes", [True, False])
def test_vectorised_equals_brute_force(seed, datetimes):
    frame = random_log(seed=seed, datetimes=datetimes)
    cfg = config()
    got = derive_history(frame, cfg)
    want = brute_force(frame, cfg)
    assert (frame.groupby(["user_id", "day"]).size() > 1).any()  # the log has ties
    assert got.index.equals(frame.index)
    for col in cfg.columns:
        np.testing.assert_allclose(got[col].to_numpy(), want[col].to_numpy(), rtol=1e-12, atol=1e-12, err_msg=col)
    assert got[RATE].between(0, 1).all() and (got[RATE] > 0).any() and (got[DAYS_SINCE] == 365).any()


def test_window_and_cap_parameters():
    frame = random_log(seed=3)
    cfg = config(window=2.0, days_since_cap=4.0)
    got, want = derive_history(frame, cfg), brute_force(frame, cfg)
    np.testing.assert_allclose(got[RECENT], want[RECENT])
    np.testing.assert_allclose(got[DAYS_SINCE], want[DAYS_SINCE])
    assert got[DAYS_SINCE].max() == 4.0


def test_chunked_equals_whole():
    frame = random_log(n=600, n_users=30, seed=4)
    cfg = config()
    whole = derive_history(frame, cfg)
    for rows in (1, 7, 50, 10_000):
        pd.testing.assert_frame_equal(derive_history(frame, cfg, rows_per_chunk=rows), whole)


def test_user_chunks_never_split_a_user_and_streaming_matches():
    frame = random_log(n=500, n_users=25, seed=5).sort_values(["user_id", "timestamp"]).reset_index(drop=True)
    pieces = [frame.iloc[lo: lo + 37] for lo in range(0, len(frame), 37)]
    chunks = list(user_chunks(pieces))
    assert sum(len(c) for c in chunks) == len(frame)
    seen = [set(c["user_id"]) for c in chunks]
    assert all(not (a & b) for k, a in enumerate(seen) for b in seen[k + 1:])
    cfg = config()
    streamed = pd.concat(derive_history_chunks(chunks, cfg))
    pd.testing.assert_frame_equal(streamed, derive_history(frame, cfg))


def test_a_user_split_across_chunks_is_refused():
    frame = random_log(seed=6).sort_values("user_id").reset_index(drop=True)
    with pytest.raises(LoggedDataError, match="spans two chunks"):
        list(derive_history_chunks([frame.iloc[:101], frame.iloc[101:]], config()))


def test_recent_pushes_matches_the_synthetic_generators_count():
    """Every row a push, continuous times (no ties): the same count as `recent_push_counts`."""
    rng = np.random.default_rng(7)
    user, t = rng.integers(0, 50, 3000), np.sort(rng.uniform(0, 28, 3000))
    frame = pd.DataFrame({"user_id": user, "timestamp": t, "action": 0})
    got = derive_history(frame, HistoryConfig(window=3.0))[RECENT].to_numpy()
    np.testing.assert_array_equal(got, recent_push_counts(user, t, 3.0))
    assert got.max() >= 3


def test_no_leakage_from_own_or_later_rows():
    """Flipping the outcomes of a row, its ties and its user's later rows leaves that row's features as they were
    (while later rows' rates do change, so the check can fail)."""
    frame = random_log(seed=8)
    cfg = config()
    before = derive_history(frame, cfg)
    rng = np.random.default_rng(0)
    moved = 0
    for i in rng.choice(len(frame), 15, replace=False):
        t_i, u_i = frame.loc[i, "day"], frame.loc[i, "user_id"]
        later = (frame["user_id"] == u_i) & (frame["day"] >= t_i)  # the row itself, its ties and later rows
        changed = frame.copy()
        changed.loc[later, "click"] = 1 - changed.loc[later, "click"]
        after = derive_history(changed, cfg)
        pd.testing.assert_series_equal(after.loc[i], before.loc[i])
        moved += int((after.loc[later, RATE] != before.loc[later, RATE]).any())
    assert moved > 0


def test_duplicate_user_timestamp_action_is_refused_with_rows():
    frame = random_log(seed=9)
    dup = pd.concat([frame, frame.iloc[[3]]], ignore_index=True)
    with pytest.raises(LoggedDataError, match="duplicate") as err:
        derive_history(dup, config())
    assert err.value.rows == [3, len(frame)]
    assert "user_id, timestamp, action" in str(err.value)


def test_time_going_backwards_in_file_order_is_fine():
    frame = random_log(seed=10)
    shuffled = frame.sample(frac=1.0, random_state=0)
    got = derive_history(shuffled, config())
    pd.testing.assert_frame_equal(got.loc[frame.index], derive_history(frame, config()))


def test_non_binary_reward_and_bad_config_are_refused():
    frame = random_log(seed=11)
    frame.loc[5, "click"] = 2.0
    with pytest.raises(LoggedDataError, match="click.*0/1.*rows \\[5\\]"):
        derive_history(frame, config())
    with pytest.raises(ValueError, match="half_life_days"):
        HistoryConfig(half_life_days=0)


def test_history_at_equals_the_log_derivation():
    frame = random_log(seed=12)
    cfg = config()
    logged = derive_history(frame, cfg)
    for i in range(0, len(frame), 17):
        events = frame[frame["user_id"] == frame.loc[i, "user_id"]]
        got = history_at(events, frame.loc[i, "timestamp"], cfg, action=frame.loc[i, "action"])
        for col in cfg.columns:
            assert math.isclose(got[col], logged.loc[i, col], rel_tol=1e-12, abs_tol=1e-12), (i, col)


def test_decayed_rate_closed_form():
    """Two pushes (click at day 0, none at day 2), half-life 2: at day 4 rate = 0.25 / (0.25 + 0.5) = 1/3."""
    frame = pd.DataFrame({"user_id": "u", "timestamp": [0.0, 2.0, 4.0], "action": 0, "click": [1.0, 0.0, 0.0]})
    got = derive_history(frame, HistoryConfig(reward="click", half_life_days=2.0))
    np.testing.assert_allclose(got[RATE], [0.0, 1.0, 1 / 3])
    np.testing.assert_allclose(got[DAYS_SINCE], [365.0, 2.0, 2.0])
