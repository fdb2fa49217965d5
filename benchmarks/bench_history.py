"""Push-history derivation (`pushrl.envs.data.history`) on a 10-million-row synthetic log (issue 17).

Measures, in this process:
  - reference: a plain pandas groupby-rolling count of `history_pushes_3d` (time window [t - 3 days, t),
    closed='left', so rows at the same timestamp are excluded, as in pushrl); checked equal to pushrl's column;
  - `derive_history` of every history column (counts 1/3/7 days, recent_pushes, days since push, decayed
    response rate, category pushes) in chunks of 1M rows at user boundaries, and as one chunk;
  - peak memory of each pushrl derivation above its input (tracemalloc, a separate pass).
Set PUSHRL_BENCH_HISTORY_ROWS for a smaller log.
"""

from __future__ import annotations

import os
import time
import tracemalloc

import numpy as np
import pandas as pd

from pushrl.envs.data.history import HistoryConfig, count_column, derive_history

N_ROWS = int(os.environ.get("PUSHRL_BENCH_HISTORY_ROWS", 10_000_000))
N_ACTIONS = 10  # the last one is the no-push action
CHUNK = 1_000_000


def make_log(n_rows: int, seed: int = 0) -> pd.DataFrame:
    """n_rows decisions of n_rows // 10 users over 28 days, 10 promotions (one no-push), clicks 0/1."""
    rng = np.random.default_rng(seed)
    seconds = rng.integers(0, 28 * 86_400, n_rows)
    return pd.DataFrame({
        "user_id": rng.integers(0, max(n_rows // 10, 1), n_rows),
        "timestamp": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(seconds, unit="s"),
        "action": rng.integers(0, N_ACTIONS, n_rows),
        "click": (rng.random(n_rows) < 0.05).astype(np.float64),
    }).drop_duplicates(["user_id", "timestamp", "action"], ignore_index=True)


def pandas_pushes_3d(frame: pd.DataFrame) -> np.ndarray:
    """The reference: groupby(user).rolling('3D', closed='left') over the push indicator, in row order."""
    df = frame[["user_id", "timestamp"]].assign(push=(frame["action"] != N_ACTIONS - 1).astype(np.float64),
                                                row=np.arange(len(frame)))
    df = df.sort_values(["user_id", "timestamp"], kind="stable")
    rolled = df.set_index("timestamp").groupby("user_id", sort=False)["push"].rolling("3D", closed="left").sum()
    out = np.empty(len(frame))
    out[df["row"].to_numpy()] = np.nan_to_num(rolled.to_numpy())
    return out


def _peak_mib(fn) -> float:
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    frame = make_log(N_ROWS)
    n = len(frame)
    cfg = HistoryConfig(no_push_action=N_ACTIONS - 1, reward="click", half_life_days=7.0, window=3.0,
                        categories=np.arange(N_ACTIONS) % 3)
    in_mib = frame.memory_usage(deep=True).sum() / 2**20
    print(f"log: {n:,} rows, {frame['user_id'].nunique():,} users, 28 days, {N_ACTIONS} promotions (one no-push); "
          f"input frame {in_mib:,.0f} MiB")
    start = time.perf_counter()
    reference = pandas_pushes_3d(frame)
    t_ref = time.perf_counter() - start
    print(f"reference pandas groupby-rolling history_pushes_3d only: {t_ref:.2f} s, {n / t_ref:,.0f} rows/s")
    for label, rows in (("chunks of 1M rows", CHUNK), ("one chunk", None)):
        start = time.perf_counter()
        out = derive_history(frame, cfg, rows_per_chunk=rows)
        t = time.perf_counter() - start
        if not np.array_equal(out[count_column(3)].to_numpy(), reference):
            raise AssertionError("pushrl's history_pushes_3d differs from the pandas reference")
        del out
        peak = _peak_mib(lambda rows=rows: derive_history(frame, cfg, rows_per_chunk=rows))
        print(f"pushrl derive_history, all {len(cfg.columns)} columns, {label}: {t:.2f} s, {n / t:,.0f} rows/s "
              f"({t_ref / t:.2f}x the reference's speed for one column); peak {peak:,.0f} MiB above the input "
              f"(tracemalloc); history_pushes_3d equal to the reference")
