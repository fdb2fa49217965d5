"""LinUCB / LinTS throughput: ours (batched) vs a per-example loop vs MABWiser, same data, same run.

Learning: rounds/s of the online loop (choose, observe, update) with updates
every BATCH rounds for ours and MABWiser; the reference decides and updates one
row at a time. Selection: rows/s of choosing actions for a block of contexts
from a trained state. Run with `python -m benchmarks bandits`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from pushrl.agents.bandits import LinTS, LinUCB

N_ACTIONS = 80
FEATURE_SIZES = (20, 40)
BATCH = 256
ALPHA, RIDGE = 1.0, 1.0
N_OURS, N_REF, N_MAB = 20_480, 1_000, 5_120  # rounds timed in the learning loops
N_SELECT, N_SELECT_REF = 4_096, 400  # rows timed in action selection


class PerExampleLinear:
    """Textbook loop: one row at a time, per-arm inverse refreshed with np.linalg.inv on update."""

    def __init__(self, n_actions: int, d: int, kind: str, rng: np.random.Generator) -> None:
        self.kind, self.rng = kind, rng
        self.A = [RIDGE * np.eye(d) for _ in range(n_actions)]
        self.b = [np.zeros(d) for _ in range(n_actions)]
        self.A_inv = [np.eye(d) / RIDGE for _ in range(n_actions)]
        self.theta = [np.zeros(d) for _ in range(n_actions)]
        self.chol = [np.eye(d) / np.sqrt(RIDGE) for _ in range(n_actions)]

    def select(self, x: np.ndarray) -> int:
        scores = []
        for k in range(len(self.A)):
            if self.kind == "linucb":
                scores.append(self.theta[k] @ x + ALPHA * np.sqrt(x @ self.A_inv[k] @ x))
            else:
                theta = self.theta[k] + ALPHA * self.chol[k] @ self.rng.standard_normal(len(x))
                scores.append(theta @ x)
        return int(np.argmax(scores))

    def update(self, x: np.ndarray, a: int, r: float) -> None:
        self.A[a] += np.outer(x, x)
        self.b[a] += r * x
        self.A_inv[a] = np.linalg.inv(self.A[a])
        self.theta[a] = self.A_inv[a] @ self.b[a]
        if self.kind == "lints":
            self.chol[a] = np.linalg.cholesky(self.A_inv[a])


class Problem:
    """Linear rewards with Gaussian noise; contexts have an intercept column."""

    def __init__(self, d: int, seed: int = 0) -> None:
        self.theta = np.random.default_rng(seed).normal(size=(N_ACTIONS, d)) / np.sqrt(d)

    def draw_contexts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.column_stack([np.ones(n), rng.normal(size=(n, self.theta.shape[1] - 1))])

    def reward_fn(
        self, contexts: np.ndarray, actions: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        q = np.einsum("nd,nd->n", contexts, self.theta[actions])
        return q + 0.3 * rng.normal(size=len(actions))


def _rate(n: int, fn: Callable[[], object], repeat: int = 3) -> float:
    """Best of `repeat` runs of `fn`, as n / seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return n / best


def _ours(kind: str, d: int):
    cls = LinUCB if kind == "linucb" else LinTS
    return cls(N_ACTIONS, d, alpha=ALPHA, ridge=RIDGE, seed=0)


def _learning(kind: str, d: int, problem: Problem) -> dict[str, float]:
    rates = {
        "ours": _rate(
            N_OURS,
            lambda: _ours(kind, d).run_online(problem, N_OURS, BATCH, np.random.default_rng(1)),
        )
    }

    def reference_loop() -> None:
        rng = np.random.default_rng(1)
        ref = PerExampleLinear(N_ACTIONS, d, kind, rng)
        for x in problem.draw_contexts(N_REF, rng):
            a = ref.select(x)
            ref.update(x, a, float(problem.reward_fn(x[None], np.array([a]), rng)[0]))

    rates["reference"] = _rate(N_REF, reference_loop, repeat=1)
    mab = _mabwiser(kind)
    if mab is not None:

        def mab_loop() -> None:
            rng = np.random.default_rng(1)
            x = problem.draw_contexts(BATCH, rng)
            a = rng.integers(0, N_ACTIONS, BATCH)
            mab.fit(a, problem.reward_fn(x, a, rng), x)
            for _ in range(N_MAB // BATCH - 1):
                x = problem.draw_contexts(BATCH, rng)
                a = np.asarray(mab.predict(x))
                mab.partial_fit(a, problem.reward_fn(x, a, rng), x)

        rates["mabwiser"] = _rate(N_MAB, mab_loop)
    return rates


def _selection(kind: str, d: int, problem: Problem) -> dict[str, float]:
    rng = np.random.default_rng(2)
    x_train = problem.draw_contexts(20_000, rng)
    a_train = rng.integers(0, N_ACTIONS, len(x_train))
    r_train = problem.reward_fn(x_train, a_train, rng)
    x = problem.draw_contexts(N_SELECT, rng)
    ours = _ours(kind, d)
    ours.update(x_train, a_train, r_train)
    rates = {"ours": _rate(N_SELECT, lambda: ours.choose(x, rng))}
    if kind == "lints":  # act also returns Monte-Carlo propensities (n_mc draws per row)
        rates[f"ours act+propensities(n_mc={ours.n_mc})"] = _rate(
            N_SELECT // 4, lambda: ours.act(x[: N_SELECT // 4], rng)
        )
    ref = PerExampleLinear(N_ACTIONS, d, kind, rng)
    for k in range(N_ACTIONS):  # the same trained state
        ref.A[k], ref.b[k] = ours.stats.A[k].copy(), ours.stats.b[k].copy()
        ref.update(np.zeros(d), k, 0.0)
    rates["reference"] = _rate(
        N_SELECT_REF, lambda: [ref.select(row) for row in x[:N_SELECT_REF]], repeat=1
    )
    mab = _mabwiser(kind)
    if mab is not None:
        mab.fit(a_train, r_train, x_train)
        rates["mabwiser"] = _rate(N_SELECT, lambda: mab.predict(x))
    return rates


def _mabwiser(kind: str):
    try:
        from mabwiser.mab import MAB, LearningPolicy
    except ImportError:
        return None
    policy = LearningPolicy.LinUCB if kind == "linucb" else LearningPolicy.LinTS
    return MAB(list(range(N_ACTIONS)), policy(alpha=ALPHA, l2_lambda=RIDGE), seed=0)


def _print(title: str, rates: dict[str, float]) -> None:
    ours = rates["ours"]
    parts = [f"ours {ours:>9,.0f}/s"]
    for name, rate in rates.items():
        if name.startswith("ours "):  # a variant of ours: no ratio
            parts.append(f"{name} {rate:>7,.0f}/s")
        elif name != "ours":
            parts.append(f"{name} {rate:>7,.0f}/s (ours {ours / rate:5.1f}x)")
    print(f"{title:<34} " + " | ".join(parts), flush=True)


def main() -> None:
    """Run single-threaded BLAS where threadpoolctl is available (like the reference loop)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        _run("BLAS threads: library default")
        return
    with threadpool_limits(limits=1, user_api="blas"):
        _run("BLAS threads: 1 (threadpoolctl)")


def _run(threads: str) -> None:
    print(
        f"{N_ACTIONS} actions, alpha={ALPHA}, ridge={RIDGE}; ours and mabwiser update every "
        f"{BATCH} rounds; {threads}; best of 3 (reference: 1 run)"
    )
    print(
        "reference = per-example loop (np.linalg.inv per update); ratio = ours / other, >= 10x is the goal"
    )
    for d in FEATURE_SIZES:
        problem = Problem(d)
        for kind in ("linucb", "lints"):
            _print(f"learning  {kind:<6} d={d:<3} rounds/s", _learning(kind, d, problem))
            _print(f"selection {kind:<6} d={d:<3} rows/s", _selection(kind, d, problem))


if __name__ == "__main__":
    main()
