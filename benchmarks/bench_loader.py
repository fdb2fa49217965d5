"""Loader throughput on a generated 10-million-row log (issue: foundation).

Measures, each in a fresh process so peak memory is its own (imports happen
before the clock starts):
  - reference: pyarrow -> pandas read of the same Parquet file, no validation;
  - streaming validation (`iter_log_chunks`: bounded memory, nothing kept);
  - full load (`load_log`: validated LoggedData in memory);
  - CSV full load on a 1M-row slice, against pandas.read_csv of the same file.
"""

from __future__ import annotations

import os

import pandas as pd

from benchmarks.common import cache_dir, timed_in_fresh_process
from pushrl.envs.data.loaders import iter_log_chunks, load_catalogue, load_log
from pushrl.envs.data.synthetic import (
    SCHEMA,
    SyntheticConfig,
    catalogue_frame,
    make_truth,
    simulate_rows,
)

N_ROWS = int(os.environ.get("PUSHRL_BENCH_LOADER_ROWS", 10_000_000))


def _make_files(n_rows: int) -> tuple[str, str, str]:
    folder = cache_dir()
    pq_path, csv_path, cat_path = folder / f"log_{n_rows}.parquet", folder / "log_1m.csv", folder / "catalogue_80.csv"
    if not pq_path.exists():
        truth = make_truth(SyntheticConfig(n_rows=n_rows, n_users=n_rows // 10, n_actions=80, n_positions=3, seed=0))
        frame = simulate_rows(truth)
        tmp = pq_path.with_suffix(".tmp")
        frame.to_parquet(tmp, index=False, row_group_size=1_000_000)
        os.replace(tmp, pq_path)
        frame.iloc[:1_000_000].to_csv(csv_path, index=False)
        catalogue_frame(truth).to_csv(cat_path, index=False)
    return str(pq_path), str(csv_path), str(cat_path)


def _read_parquet(path: str) -> int:
    return len(pd.read_parquet(path))


def _read_csv(path: str) -> int:
    return len(pd.read_csv(path))


def _stream(path: str, cat: str) -> int:
    return sum(len(c) for c, _, _ in iter_log_chunks(path, SCHEMA, load_catalogue(cat), chunksize=1_000_000))


def _load(path: str, cat: str) -> int:
    return load_log(path, SCHEMA, catalogue=cat).n_rounds


def main() -> None:
    pq_path, csv_path, cat_path = _make_files(N_ROWS)
    size_mb = os.path.getsize(pq_path) / 2**20
    print(f"log: {N_ROWS:,} rows, 80 promotions, 3 positions, Parquet {size_mb:.0f} MiB")
    t_ref, m_ref, n = timed_in_fresh_process(_read_parquet, pq_path)
    print(f"reference pandas.read_parquet (no validation): {t_ref:.2f} s, {n / t_ref:,.0f} rows/s, peak {m_ref:,.0f} MiB")
    t, m, n = timed_in_fresh_process(_stream, pq_path, cat_path)
    print(f"streaming validation iter_log_chunks: {t:.2f} s, {n / t:,.0f} rows/s, peak {m:,.0f} MiB "
          f"({t / t_ref:.2f}x the reference time, {m / m_ref:.2f}x its memory)")
    t, m, n = timed_in_fresh_process(_load, pq_path, cat_path)
    print(f"full load_log (Parquet): {t:.2f} s, {n / t:,.0f} rows/s, peak {m:,.0f} MiB ({t / t_ref:.2f}x the reference time)")
    t_ref, m_ref, n = timed_in_fresh_process(_read_csv, csv_path)
    print(f"reference pandas.read_csv 1M rows: {t_ref:.2f} s, {n / t_ref:,.0f} rows/s, peak {m_ref:,.0f} MiB")
    t, m, n = timed_in_fresh_process(_load, csv_path, cat_path)
    print(f"full load_log (CSV, 1M rows): {t:.2f} s, {n / t:,.0f} rows/s, peak {m:,.0f} MiB ({t / t_ref:.2f}x the reference time)")
