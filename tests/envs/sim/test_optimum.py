"""The push-timing optimum: the DP against exhaustive enumeration of push schedules, rule evaluation, the
window state space, the model read from PushDynamics, and the upper-bound path."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from pushrl.envs.common.probabilities import sigmoid
from pushrl.envs.sim.env_config import PushEnvConfig, default_shop
from pushrl.envs.sim.optimum import (
    TimingModel,
    churn_table,
    evaluate_rule,
    optimum_for,
    solve,
    table_rule,
    timing_model,
    window_states,
)
from pushrl.envs.sim.push_env import PushDynamics


def tiny_model(per_promotion: bool, cap: int | None, seed: int = 0, n: int = 6, horizon: int = 4) -> TimingModel:
    """2 promotions, window 2, q0 depending on r, churn strong enough that timing matters."""
    rng = np.random.default_rng(seed)
    q = rng.uniform(0.0, 1.0, (n, 2, 3)) * np.array([1.0, 0.6, 0.3])  # fatigue: less after recent pushes
    q0 = rng.uniform(0.0, 0.2, (n, 3))
    p = rng.uniform(0.0, 0.5, (n, 2, 3) if per_promotion else (n, 3))
    return TimingModel(q, q0, p, horizon, 2, unsubscribe_penalty=0.7, push_cost=0.05, frequency_cap=cap, cap_window=3)


def schedule_value(m: TimingModel, u: int, schedule: tuple[int, ...]) -> float:
    """Exact expected reward of an open-loop schedule (env actions; 2 = push nothing) by forward simulation."""
    a_n, value, alive, days = m.n_promotions, 0.0, 1.0, []
    for t, a in enumerate(schedule):
        r = sum(1 for d in days if t - m.fatigue_window <= d < t)
        capped = m.frequency_cap is not None and sum(1 for d in days if t - m.cap_window < d < t) >= m.frequency_cap
        if a == a_n or capped:
            value += alive * m.q0[u, r]
            continue
        p = m.p_unsub[u, a, r] if m.per_promotion_churn else m.p_unsub[u, r]
        value += alive * (m.q[u, a, r] + m.push_bonus - m.push_cost - m.unsubscribe_penalty * p)
        alive *= 1.0 - p
        days.append(t)
    return value


def brute_force(m: TimingModel) -> np.ndarray:
    """max over all (A + 1)^T schedules: churn only ends an episode, so the best closed-loop policy is a schedule."""
    schedules = list(itertools.product(range(m.n_promotions + 1), repeat=m.horizon))
    return np.array([max(schedule_value(m, u, s) for s in schedules) for u in range(m.n_users)])


@pytest.mark.parametrize("per_promotion", [False, True])
@pytest.mark.parametrize("cap", [None, 1])
def test_dp_equals_the_best_of_every_schedule(per_promotion: bool, cap: int | None) -> None:
    m = tiny_model(per_promotion, cap)
    result = solve(m)
    np.testing.assert_allclose(result.values, brute_force(m), rtol=1e-12, atol=1e-12)
    assert result.exact and result.table is not None
    # the table's own decisions, evaluated by the same recursion, earn the optimum
    np.testing.assert_allclose(evaluate_rule(m, table_rule(result)), result.values, rtol=1e-12)


def test_evaluate_rule_equals_forward_simulation_of_a_fixed_schedule() -> None:
    m = tiny_model(True, 1, seed=3)
    schedule = (1, 0, 2, 0)  # day 1's push is refused by the cap (1 per 3 days)

    def rule(t: int, state: int, r: int, capped: bool) -> np.ndarray:
        return np.full(m.n_users, schedule[t], dtype=np.int64)

    want = [schedule_value(m, u, schedule) for u in range(m.n_users)]
    np.testing.assert_allclose(evaluate_rule(m, rule), want, rtol=1e-12)
    # a stochastic rule is the mixture of its actions' values (one-day horizon: linear in the probabilities)
    m1 = dataclasses.replace(m, horizon=1)
    mix = evaluate_rule(m1, lambda t, s, r, c: np.tile([0.25, 0.25, 0.5], (m.n_users, 1)))
    parts = [np.array([schedule_value(m1, u, (a,)) for u in range(m.n_users)]) for a in range(3)]
    np.testing.assert_allclose(mix, 0.25 * parts[0] + 0.25 * parts[1] + 0.5 * parts[2], rtol=1e-12)


def test_the_dp_beats_every_fixed_schedule_and_chunks_do_not_change_it() -> None:
    m = tiny_model(False, None, seed=5, n=40, horizon=5)
    full = solve(m)
    for chunk in (8, 16):
        part = solve(m, chunk_users=chunk)
        np.testing.assert_array_equal(part.values, full.values)
        for t in range(m.horizon):
            np.testing.assert_array_equal(part.table.push(t), full.table.push(t))
    assert np.array_equal(solve(m, keep_table=False).values, full.values) and solve(m, keep_table=False).table is None
    rng = np.random.default_rng(1)
    for _ in range(20):
        s = tuple(rng.integers(0, 3, m.horizon))
        assert all(full.values[u] >= schedule_value(m, u, s) - 1e-12 for u in range(m.n_users))


def test_window_states_follow_the_cap() -> None:
    q = np.zeros((1, 1, 4))
    base = TimingModel(q, np.zeros(1), np.zeros((1, 4)), 30, 3, frequency_cap=3, cap_window=7)
    space = window_states(base)
    assert base.memory_days == 6 and len(space.states) == 1 + 6 + 15 + 20  # 6-day patterns with <= 3 pushes
    assert space.reachable[0].sum() == 1 and space.reachable[1].sum() == 2 and space.reachable[30].sum() == 42
    assert not space.capped[space.index(np.array(0b100001))] and space.capped[space.index(np.array(0b111000))]
    assert space.recent[space.index(np.array(0b001011))] == 2
    assert space.next1[space.index(np.array(0b100101))] == -1  # capped: no push tomorrow
    no_cap = dataclasses.replace(base, frequency_cap=None)
    assert no_cap.memory_days == 3 and len(window_states(no_cap).states) == 8
    loose = dataclasses.replace(base, frequency_cap=7)  # 7 per 7 days never refuses
    assert not loose.cap_binds and len(window_states(loose).states) == 8
    with pytest.raises(ValueError, match="not a reachable window state"):
        space.index(np.array(0b1111))


@pytest.mark.parametrize(("change", "message"), [
    ({"q": np.zeros((2, 1, 3))}, "TimingModel.q must have shape"),
    ({"q0": np.zeros((2, 5))}, "TimingModel.q0 must have shape"),
    ({"p_unsub": np.full((2, 4), 1.5)}, "p_unsub must be probabilities"),
    ({"p_unsub": np.zeros((2, 3, 4))}, "p_unsub must have shape"),
    ({"q": np.full((2, 1, 4), np.nan)}, "TimingModel.q is not finite"),
    ({"horizon": 0}, "TimingModel.horizon"),
    ({"push_cost": -1.0}, "TimingModel.push_cost"),
])
def test_bad_models_are_refused(change: dict, message: str) -> None:
    fields = {"q": np.zeros((2, 1, 4)), "q0": np.zeros(2), "p_unsub": np.zeros((2, 4)), "horizon": 3,
              "fatigue_window": 3}
    with pytest.raises(ValueError, match=message):
        TimingModel(**{**fields, **change})


def shop_dynamics(**overrides) -> PushDynamics:
    cfg = PushEnvConfig(**{"churn_logit": -3.0, "churn_slope": 0.8, "unsubscribe_penalty": 1.0, "push_cost": 0.02,
                           **overrides})
    return PushDynamics(cfg, default_shop())


@pytest.mark.parametrize("fatigue", ["response", "multiplicative"])
def test_the_model_is_the_dynamics_own_expected_objective_and_churn(fatigue: str) -> None:
    dyn = shop_dynamics(fatigue=fatigue, no_push_action=9)
    ctx = dyn.shop.contexts[:50]
    m = timing_model(dyn, ctx, 10)
    for r in range(4):
        want = dyn.expected_objective(ctx, np.full(50, float(r)))
        np.testing.assert_array_equal(m.q[:, :, r], want[:, :-1])
        np.testing.assert_array_equal(m.q0[:, r], want[:, -1])
        np.testing.assert_allclose(m.p_unsub[:, r], sigmoid(-3.0 + 0.8 * r))
    assert m.n_promotions == 9 and (m.q0 != 0).any()
    assert (m.horizon, m.fatigue_window, m.frequency_cap, m.cap_window) == (10, 3, 3, 7)


def test_a_learned_churn_head_per_user_and_promotion_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    dyn = shop_dynamics()
    ctx = dyn.shop.contexts[:7]
    calls = []

    def head(contexts: np.ndarray, recent: np.ndarray) -> np.ndarray:
        calls.append(contexts is not None)
        return np.clip(0.01 * (1 + recent)[:, None] * (1 + np.arange(dyn.n_allowed)) + 0.001 * contexts[:, :1], 0, 1)

    monkeypatch.setattr(type(dyn), "dynamics_source", property(lambda self: {"fatigue": "learned", "churn": "learned"}))
    dyn.unsubscribe_by_action = head  # type: ignore[method-assign]
    p = churn_table(dyn, ctx, 3)
    assert p.shape == (7, dyn.n_allowed, 4) and all(calls)
    np.testing.assert_allclose(p[:, 2, 1], 0.01 * 2 * 3 + 0.001 * ctx[:, 0])
    m = timing_model(dyn, ctx, 5)
    assert m.per_promotion_churn and solve(m).table.actions is not None
    dyn.unsubscribe_by_action = lambda contexts, recent: np.zeros((len(recent), 2))  # type: ignore[method-assign]
    with pytest.raises(ValueError, match="unsubscribe probabilities have shape"):
        churn_table(dyn, ctx, 3)


def test_diversity_gives_an_upper_bound_and_slates_are_refused() -> None:
    lam = 0.3
    dyn = shop_dynamics(diversity_weight=lam)
    ctx = dyn.shop.contexts[:30]
    bound = optimum_for(dyn, ctx, 8)
    assert not bound.exact and "upper bound" in bound.method
    exact = optimum_for(shop_dynamics(), ctx, 8)
    m = exact.model
    shifted = solve(dataclasses.replace(m, q=m.q + lam))  # the bound pays λ on every push
    np.testing.assert_allclose(bound.values, shifted.values, rtol=1e-12)
    assert exact.exact and np.all(bound.values >= exact.values)
    with pytest.raises(ValueError, match="slate_size=2"):
        optimum_for(shop_dynamics(slate_size=2), ctx, 8)
    with pytest.raises(ValueError, match="horizon must be"):
        optimum_for(dyn, ctx, 0)
