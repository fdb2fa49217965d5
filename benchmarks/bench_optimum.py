"""The push-timing optimum (`pushrl.envs.sim.optimum.solve`) on 1,000,000 users.

The model is the env's default window (fatigue_window 3, frequency cap 3 in 7 days: 42 push patterns),
a 30-day horizon and 10 promotions, with random q[u, a, r] (fatigued by r), q0[u] and a per-user churn
logit (p = sigmoid(logit_u + 0.4 r)). Each solve runs in a fresh process (peak memory is its own;
it includes the model arrays, built before the clock starts):
  - the vectorised DP, churn per user (push bits + best promotion per (u, r)), 1M users;
  - the same with churn per (user, promotion) (one action per (t, s, u)), on N_PER_PROMOTION users;
  - reference, for each: the same recursion as a pure-Python loop over 1,000 users of the same kind of
    model (max over promotions in Python), scaled to the users solved; its values are checked against
    the vectorised DP's for those users.
`PUSHRL_BENCH_OPTIMUM_USERS` overrides the 1M.
"""

from __future__ import annotations

import os
import time

import numpy as np

from benchmarks.common import timed_in_fresh_process
from pushrl.envs.common.probabilities import sigmoid
from pushrl.envs.sim.optimum import TimingModel, solve, window_states

N_USERS = int(os.environ.get("PUSHRL_BENCH_OPTIMUM_USERS", 1_000_000))
N_PER_PROMOTION = min(N_USERS, 200_000)
N_REFERENCE = 1_000
N_PROMOTIONS, WINDOW, HORIZON = 10, 3, 30


def make_model(n: int, per_promotion: bool = False, seed: int = 0) -> TimingModel:
    rng = np.random.default_rng(seed)
    r = np.arange(WINDOW + 1)
    q = rng.uniform(0.0, 0.3, (n, N_PROMOTIONS, 1)) * 0.85 ** r
    logit = rng.normal(-4.0, 0.5, (n, N_PROMOTIONS, 1) if per_promotion else (n, 1))
    return TimingModel(q, rng.uniform(0.0, 0.02, n), sigmoid(logit + 0.4 * r), HORIZON, WINDOW,
                       unsubscribe_penalty=2.0, push_cost=0.05, frequency_cap=3, cap_window=7)


def _solve(n: int, per_promotion: bool) -> dict[str, float]:
    model = make_model(n, per_promotion)
    start = time.perf_counter()
    result = solve(model)
    seconds = time.perf_counter() - start
    table = result.table
    parts = (table.push_bits, table.push_action, table.actions) if table is not None else ()
    return {"seconds": seconds, "mean": result.mean, "table_mb": sum(p.nbytes for p in parts if p is not None) / 2**20,
            "model_mb": (model.q.nbytes + model.q0.nbytes + model.p_unsub.nbytes) / 2**20}


def reference_values(model: TimingModel) -> np.ndarray:
    """The DP of `pushrl.envs.sim.optimum` as plain Python loops (one user, one day, one state at a time)."""
    space = window_states(model)
    q, q0, p = model.q.tolist(), model.q0.tolist(), model.p_unsub.tolist()
    states = range(len(space.states))
    recent, capped = space.recent.tolist(), space.capped.tolist()
    next0, next1 = space.next0.tolist(), space.next1.tolist()
    days = [[i for i in states if space.reachable[t, i]] for t in range(model.horizon)]
    cost, pen, per = model.push_cost - model.push_bonus, model.unsubscribe_penalty, model.per_promotion_churn
    out = []
    for u in range(model.n_users):
        nxt = [0.0] * len(states)
        for t in range(model.horizon - 1, -1, -1):
            cur = [0.0] * len(states)
            for i in days[t]:
                r = recent[i]
                best = q0[u][r] + nxt[next0[i]]
                if not capped[i]:
                    cont = nxt[next1[i]]
                    for a in range(model.n_promotions):
                        pu = p[u][a][r] if per else p[u][r]
                        v = q[u][a][r] - cost - pen * pu + (1.0 - pu) * cont
                        if v > best:
                            best = v
                cur[i] = best
            nxt = cur
        out.append(nxt[0])
    return np.array(out)


def _reference(n: int, per_promotion: bool) -> dict[str, float]:
    model = make_model(n, per_promotion)
    start = time.perf_counter()
    values = reference_values(model)
    seconds = time.perf_counter() - start
    diff = float(np.abs(values - solve(model).values).max())
    return {"seconds": seconds, "max_abs_diff": diff}


def main() -> None:
    print(f"model: {N_PROMOTIONS} promotions, fatigue_window {WINDOW}, cap 3 in 7 days (42 patterns), horizon {HORIZON}")
    for n, per_promotion in ((N_USERS, False), (N_PER_PROMOTION, True)):
        label = "churn per (user, promotion)" if per_promotion else "churn per user"
        _, _, ref = timed_in_fresh_process(_reference, N_REFERENCE, per_promotion)
        scaled = ref["seconds"] * n / N_REFERENCE
        print(f"{label}: reference pure-Python DP, {N_REFERENCE:,} users: {ref['seconds']:.2f} s (scaled to {n:,}: "
              f"{scaled:,.0f} s); max |difference| from the vectorised DP {ref['max_abs_diff']:.2e}")
        _, peak, out = timed_in_fresh_process(_solve, n, per_promotion)
        print(f"{label}: solve, {n:,} users: {out['seconds']:.2f} s ({scaled / out['seconds']:,.0f}x the scaled "
              f"reference), peak RSS {peak:,.0f} MiB (model {out['model_mb']:,.0f} MiB, decision table "
              f"{out['table_mb']:,.0f} MiB), value per user {out['mean']:.4f}")

if __name__ == "__main__":
    main()
