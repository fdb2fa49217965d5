"""Simulated online A/B tests (issue: from offline to online): 1,000 tests of 100,000 users each.

Times, in this process after a warm-up (best of 5 for the millisecond-scale paths):
  - reference: a naive loop, one experiment at a time (per-user rewards, then `analyze`);
  - `simulate_many` on per-user rewards, blocks of experiments as 2-D arrays (no `batched`);
  - `simulate_many` on exact sufficient statistics (`BernoulliSampler.batched`);
  - the same, group-sequential with 5 looks, and zero-inflated lognormal spend (Welch).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pushrl.policies.abtest import (
    BernoulliSampler,
    GroupSequentialDesign,
    ZeroInflatedLogNormalSampler,
    analyze,
    simulate_many,
)

N_EXPERIMENTS = int(os.environ.get("PUSHRL_BENCH_ABTEST_EXPERIMENTS", 1000))
USERS = 100_000  # per experiment, both arms
RATES = (0.04, 0.044)


def _timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    """Best wall time of `repeat` runs (the CPU is shared) and the last result."""
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def _naive_loop(sampler: BernoulliSampler, n_experiments: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_experiments):
        c, t = sampler("control", USERS // 2, rng), sampler("treatment", USERS // 2, rng)
        hits += analyze(c, t).significant
    return hits / n_experiments


def main() -> None:
    sampler = BernoulliSampler(RATES)
    half = USERS // 2

    def per_user(arm: str, n_users: int, rng: np.random.Generator) -> np.ndarray:
        return sampler(arm, n_users, rng)

    GroupSequentialDesign(5)  # warm-up: boundaries are computed once and cached
    simulate_many(sampler, half, half, n_experiments=10, seed=0)
    print(f"{N_EXPERIMENTS:,} A/B tests of {USERS:,} users (rates {RATES[0]} vs {RATES[1]}, z-test, alpha 0.05)")

    t_ref, rate = _timed(lambda: _naive_loop(sampler, N_EXPERIMENTS, 1))
    print(f"reference naive loop (per-user draws + analyze per experiment): {t_ref:.2f} s, power {rate:.3f}")
    t, res = _timed(lambda: simulate_many(per_user, half, half, n_experiments=N_EXPERIMENTS, metric="proportion", seed=2))
    print(f"simulate_many, per-user rewards in 2-D blocks: {t:.2f} s, power {res.rejection_rate:.3f} "
          f"(speed-up {t_ref / t:.1f}x over the reference)")
    t, res = _timed(lambda: simulate_many(sampler, half, half, n_experiments=N_EXPERIMENTS, seed=3), repeat=5)
    print(f"simulate_many, sufficient statistics (batched): {t * 1e3:.1f} ms, power {res.rejection_rate:.3f} "
          f"(speed-up {t_ref / t:,.0f}x)")
    t, res = _timed(lambda: simulate_many(sampler, half, half, n_experiments=N_EXPERIMENTS, n_looks=5, seed=4), repeat=5)
    print(f"simulate_many, group sequential 5 looks (batched): {t * 1e3:.1f} ms, power {res.rejection_rate:.3f}, "
          f"users at stop {res.mean_users_at_stop / USERS:.1%} of the maximum (speed-up {t_ref / t:,.0f}x)")
    spend = ZeroInflatedLogNormalSampler(0.05, (3.0, 3.0 + np.log(1.1)), 1.0)
    t, res = _timed(lambda: simulate_many(spend, half, half, n_experiments=N_EXPERIMENTS, seed=5))
    print(f"simulate_many, zero-inflated lognormal spend, Welch (batched): {t:.2f} s, power {res.rejection_rate:.3f}")
    t, _ = _timed(lambda: GroupSequentialDesign(30, 0.05, "larger"))
    print(f"O'Brien-Fleming boundaries by recursive integration, 30 looks one-sided: {t:.2f} s")


if __name__ == "__main__":
    main()
