"""OPE of an external policy file on a generated 10-million-row log, streamed (issue: offline to online).

The log is the loader benchmark's 10M-row Parquet file (80 promotions, 3 positions),
read and validated chunk by chunk; the policy is a context-free `.npy`
(1, 80, 3) in the Open Bandit Pipeline layout. IPS and SNIPS with 200
Poisson-bootstrap resamples, in a fresh process so peak memory is its own;
the reference is the same process only reading and validating the chunks.
"""

from __future__ import annotations

import numpy as np

from benchmarks.bench_loader import _make_files
from benchmarks.common import cache_dir, timed_in_fresh_process
from pushrl.envs.data.loaders import iter_log_chunks, load_catalogue
from pushrl.envs.data.synthetic import SCHEMA
from pushrl.policies.external import load_external_policy
from pushrl.policies.ope import ESTIMATORS, OPEInputs, stream_intervals

N_ROWS = 10_000_000
CHUNK = 250_000  # rows per chunk: the policy's (chunk, 80, 3) float64 probabilities are 480 MB


def _read_only(path: str, cat: str) -> int:
    return sum(len(c) for c, _, _ in iter_log_chunks(path, SCHEMA, load_catalogue(cat), chunksize=CHUNK))


def _ope(path: str, cat: str, policy_path: str) -> dict:
    ext = load_external_policy(policy_path, N_ROWS, 80, 3)

    def chunks():
        for chunk, _, _ in iter_log_chunks(path, SCHEMA, load_catalogue(cat), chunksize=CHUNK):
            rows = chunk.index.to_numpy()
            yield OPEInputs(np.ascontiguousarray(ext.rows(rows)), chunk["click"].to_numpy(),
                            chunk["action_index"].to_numpy(), chunk["propensity"].to_numpy(),
                            chunk["position"].to_numpy(), None, 80)

    res = stream_intervals({"ips": ESTIMATORS["ips"](), "snips": ESTIMATORS["snips"]()}, chunks(), n_bootstrap=200, seed=0)
    return {k: (v.value, v.ci_low, v.ci_high) for k, v in res.items()}


def main() -> None:
    pq_path, _, cat_path = _make_files(N_ROWS)
    policy = cache_dir() / "external_policy_1x80x3.npy"
    rng = np.random.default_rng(0)
    np.save(policy, rng.dirichlet(np.ones(80), size=3).T[None, :, :])
    t_ref, m_ref, n = timed_in_fresh_process(_read_only, pq_path, cat_path)
    print(f"reference: stream + validate {n:,} rows: {t_ref:.1f} s, peak {m_ref:,.0f} MiB")
    t, m, res = timed_in_fresh_process(_ope, pq_path, cat_path, str(policy))
    print(f"external policy OPE (IPS + SNIPS, 200 bootstrap resamples), streamed: {t:.1f} s, peak {m:,.0f} MiB "
          f"(goal < 4,096 MiB); {t / t_ref:.2f}x the reference time")
    for k, (v, lo, hi) in res.items():
        print(f"  {k}: {v:.5f} [{lo:.5f}, {hi:.5f}]")
