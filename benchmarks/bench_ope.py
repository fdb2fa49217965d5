"""OPE throughput: point estimates and 200-resample bootstrap CIs of IPS, SNIPS and DR.

Log: 80 actions, 3 positions; per row an evaluation policy and a reward
model (n, 80, 3) drawn from 64 user types, a softmax logging policy with
exact propensities, Bernoulli clicks.

- 10M rows, generated and evaluated in chunks in a fresh process (first, so
  its peak memory is its own; goal < 4 GiB): point estimates and one-pass CIs
  through `BootstrapAccumulator` (Poisson bootstrap).
- 1M rows in memory, side by side with obp 0.5.7's estimators on the same
  arrays (point estimates and `estimate_interval` with 200 resamples), and
  against a naive bootstrap that loops over resamples in Python (multinomial
  resampling of the same per-row terms; goal: >= 5x slower than ours).

Every time includes input validation, as obp's does. Ratios are obp / ours.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterator

import numpy as np

from benchmarks.common import timed_in_fresh_process
from pushrl.policies.ope import (
    BootstrapAccumulator,
    DoublyRobust,
    InverseProbabilityWeighting,
    OPEInputs,
    SelfNormalizedIPS,
    estimate_intervals,
)

N_ACTIONS, LEN_LIST, N_TYPES, N_BOOT = 80, 3, 64, 200
N_MEMORY = int(os.environ.get("PUSHRL_BENCH_OPE_ROWS", 1_000_000))
N_STREAM = int(os.environ.get("PUSHRL_BENCH_OPE_STREAM_ROWS", 10_000_000))
CHUNK = 250_000
ESTIMATORS = {
    "ips": InverseProbabilityWeighting(),
    "snips": SelfNormalizedIPS(),
    "dr": DoublyRobust(),
}


def _label(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n:,}"


class LogGenerator:
    """Seeded synthetic multi-position log; `chunk(n)` reuses its buffers (valid until the next call)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        shape = (N_TYPES, N_ACTIONS, LEN_LIST)
        self.evaluation = (
            self.rng.dirichlet(np.full(N_ACTIONS, 0.3), size=(N_TYPES, LEN_LIST))
            .transpose(0, 2, 1)
            .copy()
        )
        logits = self.rng.normal(0.0, 1.0, shape)
        self.logging = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        self.ctr = 1 / (1 + np.exp(-self.rng.normal(-3.0, 0.7, shape)))
        self.q_hat = np.clip(self.ctr + self.rng.normal(0.0, 0.01, shape), 0.0, 1.0)
        self.cdf = np.cumsum(self.logging.transpose(0, 2, 1), axis=2)  # (type, position, action)
        self.cdf[:, :, -1] = 1.0
        self._buffers: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def chunk(self, n: int) -> dict[str, np.ndarray]:
        if n not in self._buffers:
            self._buffers = {
                n: (np.empty((n, N_ACTIONS, LEN_LIST)), np.empty((n, N_ACTIONS, LEN_LIST)))
            }
        dist, q_hat = self._buffers[n]
        user = self.rng.integers(0, N_TYPES, n)
        position = self.rng.integers(0, LEN_LIST, n)
        u = self.rng.random(n)
        group = user * LEN_LIST + position
        action = np.empty(n, dtype=np.intp)
        order = np.argsort(group, kind="stable")
        edges = np.concatenate([[0], np.cumsum(np.bincount(group, minlength=N_TYPES * LEN_LIST))])
        cdf = self.cdf.reshape(N_TYPES * LEN_LIST, N_ACTIONS)
        for g in range(N_TYPES * LEN_LIST):  # a loop over 192 (type, position) groups, not rows
            rows = order[edges[g] : edges[g + 1]]
            action[rows] = np.searchsorted(cdf[g], u[rows], side="right")
        np.take(self.evaluation, user, axis=0, out=dist)
        np.take(self.q_hat, user, axis=0, out=q_hat)
        return {
            "action_dist": dist,
            "reward": (self.rng.random(n) < self.ctr[user, action, position]).astype(np.float64),
            "action": action,
            "pscore": self.logging[user, action, position],
            "position": position,
            "estimated_rewards_by_reg_model": q_hat,
        }


def _best_of(fn: Callable[[], object], repeat: int = 2) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def stream_case(n_rows: int, chunk_rows: int) -> dict[str, object]:
    """Runs in a fresh process: generate chunk by chunk, evaluate, report times and peak RSS."""
    gen = LogGenerator(seed=1)
    point_accs = {
        name: BootstrapAccumulator({name: est}, n_bootstrap=0) for name, est in ESTIMATORS.items()
    }
    ci_acc = BootstrapAccumulator(ESTIMATORS, n_bootstrap=N_BOOT, seed=0)
    times = {name: 0.0 for name in ESTIMATORS} | {"ci": 0.0, "generate": 0.0}

    def chunks() -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, n_rows, chunk_rows):
            t0 = time.perf_counter()
            arrays = gen.chunk(min(chunk_rows, n_rows - start))
            times["generate"] += time.perf_counter() - t0
            yield arrays

    for arrays in chunks():
        for name, acc in point_accs.items():
            t0 = time.perf_counter()
            acc.update(OPEInputs(**arrays))  # each estimator validates its own copy of the inputs
            times[name] += time.perf_counter() - t0
        t0 = time.perf_counter()
        ci_acc.update(OPEInputs(**arrays))
        times["ci"] += time.perf_counter() - t0
    values = {name: acc.policy_values()[name] for name, acc in point_accs.items()}
    return {
        "times": times,
        "values": values,
        "intervals": ci_acc.intervals(0.05),
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def naive_bootstrap(
    terms: dict[str, tuple[np.ndarray, ...]], n_bootstrap: int, seed: int
) -> dict[str, np.ndarray]:
    """The loop we replace: per resample, draw n row indices and recompute every estimator."""
    rng = np.random.default_rng(seed)
    n = next(iter(terms.values()))[0].size
    out = {name: np.empty(n_bootstrap) for name in terms}
    for b in range(n_bootstrap):
        idx = rng.integers(0, n, n)
        for name, columns in terms.items():
            if len(columns) == 1:
                out[name][b] = columns[0][idx].mean()
            else:
                out[name][b] = columns[0][idx].sum() / columns[1][idx].sum()
    return out


def memory_case(n: int) -> None:
    import obp.ope as obp_ope  # test-only reference, imported here so the streaming child never loads it

    arrays = LogGenerator(seed=2).chunk(n)
    label = _label(n)
    obp_estimators = {
        "ips": obp_ope.InverseProbabilityWeighting(),
        "snips": obp_ope.SelfNormalizedInverseProbabilityWeighting(),
        "dr": obp_ope.DoublyRobust(),
    }
    for name, ours in ESTIMATORS.items():
        t_ours, v_ours = _best_of(lambda ours=ours: ours.estimate_policy_value(**arrays))
        t_obp, v_obp = _best_of(
            lambda name=name: obp_estimators[name].estimate_policy_value(**arrays)
        )
        rel = abs(v_ours - v_obp) / abs(v_obp)
        print(
            f"{name} point {label}: {t_ours:.3f} s (obp {t_obp:.3f} s, {t_obp / t_ours:.1f}x); rel. diff {rel:.1e}",
            flush=True,
        )
    for name, ours in ESTIMATORS.items():
        start = time.perf_counter()
        interval = ours.estimate_interval(**arrays, n_bootstrap=N_BOOT, seed=0)
        t_ours = time.perf_counter() - start
        start = time.perf_counter()
        theirs = obp_estimators[name].estimate_interval(
            **arrays, n_bootstrap_samples=N_BOOT, random_state=0
        )
        t_obp = time.perf_counter() - start
        low, high = (
            (theirs[k] for k in theirs if "lower" in k),
            (theirs[k] for k in theirs if "upper" in k),
        )
        print(
            f"{name} ci {label} ({N_BOOT} resamples): {t_ours:.3f} s (obp {t_obp:.3f} s, {t_obp / t_ours:.1f}x); "
            f"ours [{interval.ci_low:.5f}, {interval.ci_high:.5f}] obp [{next(low):.5f}, {next(high):.5f}]",
            flush=True,
        )
    start = time.perf_counter()
    inputs = OPEInputs(**arrays)
    together = estimate_intervals(ESTIMATORS, inputs, n_bootstrap=N_BOOT, seed=0)
    t_all = time.perf_counter() - start
    print(f"ips+snips+dr ci {label}, one pass on the same resamples: {t_all:.3f} s", flush=True)

    # bootstrap machinery alone: both sides start from validated inputs with per-row terms computed
    terms = {name: est.row_terms(inputs) for name, est in ESTIMATORS.items()}
    naive_terms = {
        "ips": (terms["ips"].mean_term,),
        "snips": (terms["snips"].ratio_numerator, terms["snips"].ratio_denominator),
        "dr": (terms["dr"].mean_term,),
    }
    start, cpu = time.perf_counter(), time.process_time()
    acc = BootstrapAccumulator(ESTIMATORS, n_bootstrap=N_BOOT, seed=0)
    acc.update(inputs)
    vectorised = acc.intervals(0.05)
    t_vec, c_vec = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    naive = naive_bootstrap(naive_terms, N_BOOT, seed=0)
    t_naive, c_naive = time.perf_counter() - start, time.process_time() - cpu
    print(
        f"bootstrap ips+snips+dr {label}, {N_BOOT} resamples: vectorised {t_vec:.3f} s, naive per-resample "
        f"loop {t_naive:.3f} s, speed-up {t_naive / t_vec:.1f}x (CPU time {c_vec:.3f} s vs {c_naive:.3f} s, "
        f"{c_naive / c_vec:.1f}x)",
        flush=True,
    )
    for name in ESTIMATORS:
        low, high = np.percentile(naive[name], [2.5, 97.5])
        print(
            f"  {name}: value {together[name].value:.5f}, CI vectorised [{vectorised[name].ci_low:.5f}, "
            f"{vectorised[name].ci_high:.5f}], naive [{low:.5f}, {high:.5f}]"
        )
    print(
        f"peak RSS of the benchmark process so far (earlier benchmarks included): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB"
    )


def main() -> None:
    label = _label(N_STREAM)
    print(
        f"log: {N_ACTIONS} actions, {LEN_LIST} positions; {N_BOOT} bootstrap resamples", flush=True
    )
    seconds, vm_hwm_mib, result = timed_in_fresh_process(stream_case, N_STREAM, CHUNK)
    times = result["times"]
    print(f"--- {label} rows, streamed in chunks of {CHUNK:,} (fresh process) ---")
    for name in ESTIMATORS:
        print(f"{name} point {label}: {times[name]:.3f} s (value {result['values'][name]:.5f})")
    print(f"ips+snips+dr ci {label}, one pass: {times['ci']:.3f} s")
    for name, interval in result["intervals"].items():
        print(f"  {name}: {interval.value:.5f} [{interval.ci_low:.5f}, {interval.ci_high:.5f}]")
    print(
        f"generation {times['generate']:.1f} s (not counted above); process total {seconds:.1f} s; "
        f"peak RSS {result['ru_maxrss_mib'] / 1024:.2f} GiB (getrusage ru_maxrss; VmHWM {vm_hwm_mib / 1024:.2f} GiB), "
        f"goal < 4 GiB",
        flush=True,
    )
    print(f"--- {_label(N_MEMORY)} rows in memory, against obp 0.5.7 ---", flush=True)
    memory_case(N_MEMORY)


if __name__ == "__main__":
    main()
