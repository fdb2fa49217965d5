"""The exact optimal push schedule of each simulated user, by dynamic programming over the push window.

Where the simulator is tabular in the pushes of the last days (one promotion per push, λ = 0: no
diversity term), a user's future depends only on the day t and on which of the last L days had a
push. The state is that pattern as a bitmask s (bit j = a push j + 1 days ago), with

    L = fatigue_window, or max(fatigue_window, cap_window - 1) when the frequency cap can bind
        (frequency_cap <= cap_window - 1),
    r(s) = popcount(s & (2^fatigue_window - 1))          pushes in the fatigue window,
    capped(s) = [popcount(s & (2^(cap_window-1) - 1)) >= frequency_cap]   a push today is refused,
    s0 = (s << 1) & (2^L - 1),  s1 = s0 | 1               tomorrow's pattern without / with a push.

Inputs per user u (`TimingModel`): q[u, a, r] the expected objective of pushing promotion a after r
recent pushes (`PushDynamics.expected_objective(contexts, recent=r)`, fatigue and the objective's
action costs included), q0[u, r] the expected objective of a day without a push (the no-push action's
organic outcomes, 0 without one), p[u, a, r] or p[u, r] the probability that a push unsubscribes.
With T the episode length (the TimeLimit's max_episode_steps), b = push_bonus (0 when exact) and
the env's order within a day (the day's outcome is paid, then the churn draw; an unsubscribe pays
the penalty on that same day and ends the episode; a refused push is a day without a push):

    V_T(s) = 0
    V_t(s) = max( q0[u, r] + V_{t+1}(s0),
                  max_a q[u, a, r] + b - push_cost - penalty × p[u, a, r] + (1 - p[u, a, r]) × V_{t+1}(s1) )
             (the second term only when not capped(s)),   r = r(s).

V_0(0) is the expected reward per user of the optimal policy (a fresh user has no history). Ties
go to not pushing. `evaluate_rule` runs the same recursion with the max replaced by a fixed rule's
action probabilities (policy evaluation), so rules are compared with the optimum exactly.

Everything is vectorised over users: per day t, a few array operations on (states reachable at t,
users in a chunk); nothing loops over users. The decision table keeps, when the churn does not depend
on the promotion, one push bit per (t, s, u) (np.packbits over users) and the best promotion per
(u, r) (argmax_a q[u, a, r]: every promotion then shares the continuation); with per-promotion churn,
one env action per (t, s, u).

`optimum_for(dynamics, contexts, horizon)` builds the model from a `PushDynamics`. When the dynamics
are not tabular (diversity_weight λ > 0), it returns an upper bound, saying so in `method`: the
DP with each push paid λ × 1, the largest novelty a single push can earn (novelty = 1 / (1 + h),
h >= 0); the dynamics (fatigue, churn, cap) do not depend on categories, so every policy's
value is at most that relaxed optimum.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pushrl.envs.sim.push_env import PushDynamics

CHUNK_ELEMENTS = 1 << 18
"""Array elements per working buffer: users are solved in chunks of about CHUNK_ELEMENTS / states (cache-sized)."""
MAX_STATES = 1 << 16
"""Refuse window state spaces with more reachable patterns than this."""

TimingRule = Callable[[int, int, int, bool], np.ndarray]
"""(day t, window bitmask s, r(s), capped(s)) -> (n_users, n_promotions + 1) action probabilities
(last column: push nothing) or (n_users,) env actions (n_promotions = push nothing)."""


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"TimingModel.{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _finite_nonneg(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not math.isfinite(value) \
            or value < 0:
        raise ValueError(f"TimingModel.{name} must be a finite number >= 0, got {value!r}")
    return float(value)


@dataclass(frozen=True, eq=False)
class TimingModel:
    """The tabular push problem of n users (see the module docstring; R = fatigue_window + 1)."""

    q: np.ndarray
    """(n, A, R) expected objective of pushing promotion a after r recent pushes."""
    q0: np.ndarray
    """(n, R) or (n,) expected objective of a day without a push (stored as (n, R))."""
    p_unsub: np.ndarray
    """(n, R) or (n, A, R): P(unsubscribe | push after r recent pushes), per promotion or not."""
    horizon: int
    fatigue_window: int
    unsubscribe_penalty: float = 0.0
    push_cost: float = 0.0
    frequency_cap: int | None = None
    cap_window: int = 1
    push_bonus: float = 0.0
    """Added to every push's reward (the upper-bound path: λ × the largest novelty)."""

    def __post_init__(self) -> None:
        f = _positive_int("fatigue_window", self.fatigue_window)
        _positive_int("horizon", self.horizon)
        _positive_int("cap_window", self.cap_window)
        if self.frequency_cap is not None:
            _positive_int("frequency_cap", self.frequency_cap)
        for name in ("unsubscribe_penalty", "push_cost", "push_bonus"):
            object.__setattr__(self, name, _finite_nonneg(name, getattr(self, name)))
        q = np.asarray(self.q, dtype=np.float64)
        if q.ndim != 3 or q.shape[0] < 1 or q.shape[1] < 1 or q.shape[2] != f + 1:
            raise ValueError(f"TimingModel.q must have shape (n_users, n_promotions, fatigue_window + 1 = {f + 1}), "
                             f"got {q.shape}")
        n, a, r = q.shape
        q0 = np.asarray(self.q0, dtype=np.float64)
        if q0.shape == (n,):
            q0 = np.repeat(q0[:, None], r, axis=1)
        if q0.shape != (n, r):
            raise ValueError(f"TimingModel.q0 must have shape ({n},) or ({n}, {r}), got {q0.shape}")
        p = np.asarray(self.p_unsub, dtype=np.float64)
        if p.shape not in ((n, r), (n, a, r)):
            raise ValueError(f"TimingModel.p_unsub must have shape ({n}, {r}) or ({n}, {a}, {r}), got {p.shape}")
        for name, arr in (("q", q), ("q0", q0), ("p_unsub", p)):
            bad = ~np.isfinite(arr)
            if bad.any():
                raise ValueError(f"TimingModel.{name} is not finite at index {tuple(np.argwhere(bad)[0].tolist())}")
        if p.min() < 0 or p.max() > 1:
            where = tuple(np.argwhere((p < 0) | (p > 1))[0].tolist())
            raise ValueError(f"TimingModel.p_unsub must be probabilities in [0, 1], got {p[where]:.4g} at {where}")
        object.__setattr__(self, "q", q)
        object.__setattr__(self, "q0", q0)
        object.__setattr__(self, "p_unsub", p)

    @property
    def n_users(self) -> int:
        return int(self.q.shape[0])

    @property
    def n_promotions(self) -> int:
        return int(self.q.shape[1])

    @property
    def per_promotion_churn(self) -> bool:
        """Whether P(unsubscribe) depends on the promotion (then the table holds actions, not bits)."""
        return self.p_unsub.ndim == 3

    @property
    def cap_binds(self) -> bool:
        """The cap can refuse a push: at most cap_window - 1 earlier days count, so cap <= cap_window - 1."""
        return self.frequency_cap is not None and self.frequency_cap <= self.cap_window - 1

    @property
    def memory_days(self) -> int:
        """L: the days of push history the state keeps."""
        return max(self.fatigue_window, self.cap_window - 1) if self.cap_binds else self.fatigue_window

    def subset(self, users: np.ndarray | slice) -> TimingModel:
        """The same problem for some users only."""
        return TimingModel(self.q[users], self.q0[users], self.p_unsub[users], self.horizon, self.fatigue_window,
                           self.unsubscribe_penalty, self.push_cost, self.frequency_cap, self.cap_window,
                           self.push_bonus)


@dataclass(frozen=True, eq=False)
class WindowStates:
    """The push patterns reachable from a fresh user, and their transitions (S states)."""

    states: np.ndarray
    """(S,) int64 bitmasks, sorted (index 0 is the empty pattern)."""
    recent: np.ndarray
    """(S,) int64 r(s)."""
    capped: np.ndarray
    """(S,) bool capped(s)."""
    next0: np.ndarray
    """(S,) int64 index of s0 (-1: not reachable within the horizon)."""
    next1: np.ndarray
    """(S,) int64 index of s1 (-1: capped, or not reachable within the horizon)."""
    reachable: np.ndarray
    """(T + 1, S) bool: state reachable on day t."""

    def index(self, bitmask: np.ndarray) -> np.ndarray:
        """Index of each bitmask in `states` (ValueError for a pattern that is not a state)."""
        b = np.asarray(bitmask, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.states, b), len(self.states) - 1)
        if not np.array_equal(self.states[pos], b):
            bad = np.ravel(b)[np.ravel(self.states[pos] != b)][0]
            raise ValueError(f"push pattern {int(bad):#b} is not a reachable window state")
        return pos


def window_states(model: TimingModel) -> WindowStates:
    """Enumerate the patterns reachable on days 0..T from the empty one (forward, the cap applied)."""
    big = model.memory_days
    full = (1 << big) - 1
    fmask = (1 << model.fatigue_window) - 1
    cmask = (1 << (model.cap_window - 1)) - 1

    def capped(s: int) -> bool:
        return model.cap_binds and bin(s & cmask).count("1") >= model.frequency_cap  # type: ignore[operator]

    days: list[set[int]] = [{0}]
    seen = {0}
    for _ in range(model.horizon):
        nxt = set()
        for s in days[-1]:
            nxt.add((s << 1) & full)
            if not capped(s):
                nxt.add(((s << 1) | 1) & full)
        days.append(nxt)
        seen |= nxt
        if len(seen) > MAX_STATES:
            raise ValueError(f"the push window (fatigue_window={model.fatigue_window}, cap_window={model.cap_window}, "
                             f"frequency_cap={model.frequency_cap}) has over {MAX_STATES} reachable patterns")
    states = np.array(sorted(seen), dtype=np.int64)
    lookup = {int(s): i for i, s in enumerate(states)}
    recent = np.array([bin(int(s) & fmask).count("1") for s in states], dtype=np.int64)
    cap = np.array([capped(int(s)) for s in states], dtype=bool)
    next0 = np.array([lookup.get((int(s) << 1) & full, -1) for s in states], dtype=np.int64)
    next1 = np.array([-1 if c else lookup.get(((int(s) << 1) | 1) & full, -1) for s, c in zip(states, cap, strict=True)],
                     dtype=np.int64)
    reachable = np.zeros((model.horizon + 1, len(states)), dtype=bool)
    for t, day in enumerate(days):
        reachable[t, [lookup[s] for s in day]] = True
    return WindowStates(states, recent, cap, next0, next1, reachable)


@dataclass(frozen=True, eq=False)
class DecisionTable:
    """The optimal env action per (day t, window state, user) (n_allowed = push nothing)."""

    space: WindowStates
    n_users: int
    n_promotions: int
    push_bits: np.ndarray | None
    """(T, S, ceil(n / 8)) uint8: np.packbits over users of [push on day t in state s] (churn per user)."""
    push_action: np.ndarray | None
    """(n, R) int16: the promotion pushed after r recent pushes (churn per user)."""
    actions: np.ndarray | None
    """(T, S, n) int8 (int16 from 127 promotions) env actions (per-promotion churn)."""

    @property
    def horizon(self) -> int:
        return self.space.reachable.shape[0] - 1

    def action(self, t: int | np.ndarray, state: np.ndarray, users: np.ndarray) -> np.ndarray:
        """(m,) env actions for day(s) t, window-state indices `state` (m,) and user rows `users` (m,)."""
        t = np.broadcast_to(np.asarray(t, dtype=np.int64), np.shape(users))
        state, users = np.asarray(state, dtype=np.int64), np.asarray(users, dtype=np.int64)
        if t.size and (t.min() < 0 or t.max() >= self.horizon):
            raise ValueError(f"day t must be in [0, {self.horizon}), got values in [{t.min()}, {t.max()}]")
        if self.actions is not None:
            return self.actions[t, state, users].astype(np.int64)
        assert self.push_bits is not None and self.push_action is not None
        bit = (self.push_bits[t, state, users >> 3] >> (7 - (users & 7))) & 1
        best = self.push_action[users, self.space.recent[state]]
        return np.where(bit.astype(bool), best, self.n_promotions).astype(np.int64)

    def push(self, t: int) -> np.ndarray:
        """(S, n) bool: push on day t in each state."""
        if self.actions is not None:
            return self.actions[t] < self.n_promotions
        assert self.push_bits is not None
        return np.unpackbits(self.push_bits[t], axis=1, count=self.n_users).astype(bool)


@dataclass(frozen=True, eq=False)
class OptimumResult:
    """Per-user value of the optimal schedule, its decisions, and how the value was obtained."""

    values: np.ndarray
    """(n,) V_0(empty pattern): expected reward per user of the optimal policy (or its upper bound)."""
    table: DecisionTable | None
    exact: bool
    """True: the exact optimum of the simulator; False: an upper bound (see `method`)."""
    method: str
    model: TimingModel = field(repr=False)

    @property
    def mean(self) -> float:
        """Mean value over the users (the expected reward per user of a user drawn from them)."""
        return float(self.values.mean())


def _chunk_users(n_states: int, width: int, chunk_users: int | None) -> int:
    if chunk_users is not None:
        if isinstance(chunk_users, bool) or not isinstance(chunk_users, int | np.integer) or chunk_users < 8:
            raise ValueError(f"chunk_users must be an integer >= 8, got {chunk_users!r}")
        return int(chunk_users) // 8 * 8
    return max(8, CHUNK_ELEMENTS // max(1, n_states * width) // 8 * 8)


def solve(model: TimingModel, keep_table: bool = True, chunk_users: int | None = None) -> OptimumResult:
    """The DP of the module docstring for every user: values V_0(0) and (keep_table) the decision table."""
    space = window_states(model)
    n, a, r_n = model.q.shape
    horizon, n_states = model.horizon, len(space.states)
    per_action = model.per_promotion_churn
    chunk = _chunk_users(n_states, a if per_action else 1, chunk_users)
    values = np.empty(n)
    bits = actions = best = None
    if keep_table:
        if per_action:
            actions = np.full((horizon, n_states, n), a, dtype=np.int8 if a < 127 else np.int16)
        else:
            bits = np.zeros((horizon, n_states, (n + 7) // 8), dtype=np.uint8)
    if not per_action:
        best = model.q.argmax(axis=1).astype(np.int16) if keep_table else None  # (n, R): shared p and future
    plan = []  # per day: reachable states, their r, tomorrow's index without a push; the pushable ones
    for t in range(horizon):
        idx = np.flatnonzero(space.reachable[t])
        can = ~space.capped[idx]
        plan.append((idx, space.recent[idx], space.next0[idx], can, idx[can], space.recent[idx[can]],
                     space.next1[idx[can]]))
    fixed = model.push_bonus - model.push_cost
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        q0 = np.ascontiguousarray(model.q0[lo:hi].T)  # (R, m)
        if per_action:
            p = np.ascontiguousarray(model.p_unsub[lo:hi].transpose(2, 0, 1))  # (R, m, A)
            gain = np.ascontiguousarray(model.q[lo:hi].transpose(2, 0, 1)) + fixed - model.unsubscribe_penalty * p
        else:
            p = np.ascontiguousarray(model.p_unsub[lo:hi].T)  # (R, m)
            gain = model.q[lo:hi].max(axis=1).T + fixed - model.unsubscribe_penalty * p
        keep = 1.0 - p
        nxt, cur = np.zeros((n_states, hi - lo)), np.zeros((n_states, hi - lo))
        for t in range(horizon - 1, -1, -1):
            idx, r, n0, can, ui, ur, n1 = plan[t]
            stay = q0[r]
            stay += nxt[n0]
            if per_action:
                push = keep[ur]
                push *= nxt[n1][:, :, None]
                push += gain[ur]  # (s, m, A)
                choice = push.argmax(axis=2)
                push_best = np.take_along_axis(push, choice[:, :, None], axis=2)[:, :, 0]
            else:
                push_best = keep[ur]
                push_best *= nxt[n1]
                push_best += gain[ur]
            go = push_best > stay[can]
            stay[can] = np.where(go, push_best, stay[can])
            cur[idx] = stay
            if keep_table and per_action:
                actions[t, ui, lo:hi] = np.where(go, choice, a)  # type: ignore[index]
            elif keep_table:
                bits[t, ui, lo // 8:(hi + 7) // 8] = np.packbits(go, axis=1)  # type: ignore[index]
            nxt, cur = cur, nxt
        values[lo:hi] = nxt[0]
    table = DecisionTable(space, n, a, bits, best if keep_table else None, actions) if keep_table else None
    return OptimumResult(values, table, True, "exact: dynamic programming over (day, push pattern of the last "
                         f"{model.memory_days} days)", model)


def evaluate_rule(model: TimingModel, rule: TimingRule) -> np.ndarray:
    """(n,) expected reward per user of a fixed rule, by the DP's recursion with the max replaced by the rule.

    A push in a capped state is refused (a day without a push, no push cost), as in the env.
    """
    space = window_states(model)
    n, a, _ = model.q.shape
    nxt = np.zeros((len(space.states), n))
    per_action = model.per_promotion_churn
    for t in range(model.horizon - 1, -1, -1):
        cur = np.zeros_like(nxt)
        for i in np.flatnonzero(space.reachable[t]):
            r, capped = int(space.recent[i]), bool(space.capped[i])
            probs = _rule_probabilities(rule(t, int(space.states[i]), r, capped), n, a)
            stay = model.q0[:, r] + nxt[space.next0[i]]
            if capped:
                cur[i] = stay
                continue
            p = model.p_unsub[:, :, r] if per_action else model.p_unsub[:, r, None]
            push = (model.q[:, :, r] + model.push_bonus - model.push_cost - model.unsubscribe_penalty * p
                    + (1.0 - p) * nxt[space.next1[i]][:, None])
            cur[i] = (probs[:, :a] * push).sum(axis=1) + probs[:, a] * stay
        nxt = cur
    return nxt[0]


def _rule_probabilities(out: np.ndarray, n: int, a: int) -> np.ndarray:
    arr = np.asarray(out)
    if arr.shape == (n,) and np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0 or arr.max() > a:
            raise ValueError(f"a rule's actions must be in [0, {a}] ({a} = push nothing), got [{arr.min()}, {arr.max()}]")
        probs = np.zeros((n, a + 1))
        probs[np.arange(n), arr] = 1.0
        return probs
    if arr.shape != (n, a + 1):
        raise ValueError(f"a rule must return ({n},) integer actions or ({n}, {a + 1}) probabilities, got "
                         f"{arr.dtype} {arr.shape}")
    if not np.allclose(arr.sum(axis=1), 1.0, atol=1e-6) or arr.min() < 0:
        raise ValueError("a rule's probabilities must be >= 0 and sum to 1 per user")
    return arr.astype(np.float64)


def table_rule(result: OptimumResult) -> TimingRule:
    """The DP's own decisions as a rule (evaluate_rule(model, table_rule(result)) == result.values)."""
    if result.table is None:
        raise ValueError("the result has no decision table (solve with keep_table=True)")
    table, users = result.table, np.arange(result.table.n_users)

    def rule(t: int, state: int, r: int, capped: bool) -> np.ndarray:
        return table.action(t, np.full(len(users), table.space.index(np.array(state))), users)

    return rule


def churn_table(dynamics: PushDynamics, contexts: np.ndarray, window: int) -> np.ndarray:
    """(n, R) or (n, n_allowed, R): the dynamics' P(unsubscribe | push) for r = 0..window: per promotion
    (`unsubscribe_by_action`) when a learned unsubscribe head drives churn, else the rule's (n,) per r."""
    n = len(contexts)
    learned = dynamics.dynamics_source["churn"] == "learned"
    cols = []
    for r in range(window + 1):
        recent = np.full(n, float(r))
        p = dynamics.unsubscribe_by_action(contexts, recent) if learned else dynamics.unsubscribe_probability(recent)
        p = np.asarray(p, dtype=np.float64)
        if p.shape not in ((n,), (n, dynamics.n_allowed)):
            raise ValueError(f"unsubscribe probabilities have shape {p.shape}; the optimum needs ({n},) or "
                             f"({n}, n_allowed = {dynamics.n_allowed})")
        cols.append(p)
    return np.stack(cols, axis=-1)


def timing_model(dynamics: PushDynamics, contexts: np.ndarray, horizon: int, push_bonus: float = 0.0) -> TimingModel:
    """The tabular model of `dynamics` for the users `contexts` (q, q0 from expected_objective, p from churn)."""
    ctx = np.asarray(contexts, dtype=np.float64)
    if ctx.ndim != 2 or ctx.shape[1] != dynamics.d or len(ctx) == 0:
        raise ValueError(f"contexts must be a non-empty (n, {dynamics.d}) array, got shape {ctx.shape}")
    c = dynamics.config
    window = c.fatigue_window
    per_r = [dynamics.expected_objective(ctx, np.full(len(ctx), float(r))) for r in range(window + 1)]
    value = np.stack(per_r, axis=-1)  # (n, n_allowed + 1, R)
    return TimingModel(value[:, :-1], value[:, -1], churn_table(dynamics, ctx, window), horizon, window,
                       c.unsubscribe_penalty, c.push_cost, c.frequency_cap, c.cap_window, push_bonus)


def optimum_for(dynamics: PushDynamics, contexts: np.ndarray, horizon: int, keep_table: bool = True,
                chunk_users: int | None = None) -> OptimumResult:
    """The optimum of `dynamics` for each user in `contexts` over `horizon` days (the env's max_episode_steps).

    Exact when the dynamics are tabular (slate_size 1, diversity_weight 0); with diversity_weight λ > 0 an
    upper bound (each push paid λ, novelty's maximum), `exact` False and `method` saying so."""
    c = dynamics.config
    if c.slate_size != 1:
        raise ValueError(f"PushEnvConfig.slate_size={c.slate_size}: the optimum models one promotion per push "
                         "(slate_size=1)")
    if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer) or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1 (the env's max_episode_steps), got {horizon!r}")
    lam = float(c.diversity_weight)
    model = timing_model(dynamics, contexts, int(horizon), push_bonus=lam)
    result = solve(model, keep_table, chunk_users)
    if lam == 0:
        return result
    method = (f"upper bound: diversity_weight λ = {lam:g} > 0 makes the category history part of the state; each "
              "push is paid λ × 1 (the largest novelty of a push), so no policy can earn more; "
              f"the decisions are that relaxed problem's ({result.method})")
    return OptimumResult(result.values, result.table, False, method, model)
