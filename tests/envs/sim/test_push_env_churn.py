"""The simulator's churn is the response's unsubscribe head when it has one, the config rule otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.envs.common.probabilities import sigmoid
from pushrl.envs.sim.batched_env import BatchedPushEnv
from pushrl.envs.sim.env_config import PushEnvConfig, Shop, default_shop
from pushrl.envs.sim.push_env import PushDynamics, PushEnv

A0, A1, SLOPE = -2.2, 0.5, 0.45  # the known head: logit = A0 + A1 [a odd] + SLOPE * recent + 0.3 * context[0]
NO_CAP = {"frequency_cap": None, "fatigue_window": 3}


class WithHead:
    """The default shop's truth plus a known unsubscribe head (context, action and recent-push dependent)."""

    def __init__(self, inner, rows: bool = True, rule: tuple[float, float] | None = None) -> None:
        self.inner = inner
        self.reward_names = inner.reward_names
        self.reward_kinds = inner.reward_kinds
        self.rule = rule  # (logit, slope): a head equal to the config rule, for every action
        self.calls = 0
        if rows:
            self.unsubscribe_probability_rows = self._rows

    @property
    def n_actions(self) -> int:
        return self.inner.n_actions

    @property
    def n_context_features(self) -> int:
        c = self.inner.truth.config
        return c.n_user_features + c.n_segments

    def predict(self, contexts, recent, position):
        return self.inner.predict(contexts, recent, position)

    def logit(self, contexts, recent) -> np.ndarray:
        odd = (np.arange(self.n_actions) % 2)[None, :]
        if self.rule is not None:
            return np.repeat((self.rule[0] + self.rule[1] * np.asarray(recent, float))[:, None], self.n_actions, 1)
        return A0 + A1 * odd + SLOPE * np.asarray(recent, float)[:, None] + 0.3 * contexts[:, :1]

    def unsubscribe_probability(self, contexts, recent, position):
        self.calls += 1
        return sigmoid(self.logit(np.asarray(contexts, float), recent))

    def _rows(self, contexts, recent, position, action):
        self.calls += 1
        return self.unsubscribe_probability(contexts, recent, position)[np.arange(len(action)), action]


def _env_kwargs(response, **cfg):
    shop = default_shop()
    return dict(response=response, contexts=shop.contexts, categories=shop.categories, action_ids=shop.action_ids,
                **NO_CAP, **cfg)


def _head_rate(response, action: int, r: int) -> float:
    """The head's P(unsubscribe | push action after r pushes), averaged over the pool (users are drawn uniformly)."""
    ctx = default_shop().contexts
    return float(response.unsubscribe_probability(ctx, np.full(len(ctx), float(r)), np.zeros(len(ctx), int))[:, action]
                 .mean())


def _within_ci(hits: int, n: int, p: float) -> None:
    """|hits/n - p| within 4.5 binomial standard errors (two-sided ~1e-5 per check)."""
    se = np.sqrt(p * (1 - p) / n)
    assert abs(hits / n - p) < 4.5 * se, f"{hits}/{n} = {hits / n:.4f} vs head {p:.4f} (se {se:.4f})"


@pytest.mark.parametrize(("action", "fatigue"), [(1, "auto"), (2, "multiplicative")])
def test_batched_env_unsubscribes_at_the_heads_rate_by_recent_pushes(action: int, fatigue: str) -> None:
    """In either fatigue mode the head sees the real recent-push count."""
    response = WithHead(default_shop().response)
    env = BatchedPushEnv(num_envs=4000, max_episode_steps=3, **_env_kwargs(response, fatigue=fatigue))
    learned = "learned" if fatigue == "auto" else "assumed"  # the truth reacts to recent pushes
    assert env.dynamics.dynamics_source == {"fatigue": learned, "churn": "learned"}
    env.reset(seed=0)
    hits, counts = np.zeros(3), np.zeros(3)
    for _ in range(9):
        _, _, terminated, _, info = env.step(np.full(env.num_envs, action))
        r = info["recent_pushes"].astype(int)
        assert info["pushed"].all() and r.max() <= 2
        np.add.at(hits, r, info["unsubscribed"])
        np.add.at(counts, r, 1)
        np.testing.assert_array_equal(terminated, info["unsubscribed"])
    for r in range(3):
        _within_ci(int(hits[r]), int(counts[r]), _head_rate(response, action, r))
    # the rule would be far off: its rate at r = 0 is sigmoid(-5.5) ~ 0.004
    assert hits[0] / counts[0] > 10 * float(sigmoid(np.array(env.config.churn_logit)))


def test_single_env_unsubscribes_at_the_heads_rate_and_agrees_with_the_batched_env() -> None:
    response = WithHead(default_shop().response, rows=False)  # the (n, A) method only
    env = PushEnv(**_env_kwargs(response))
    env.reset(seed=1)
    hits, counts = np.zeros(3), np.zeros(3)
    for _ in range(3000):
        env.reset()
        for _t in range(3):
            _, _, terminated, _, info = env.step(1)
            hits[int(info["recent_pushes"])] += info["unsubscribed"]
            counts[int(info["recent_pushes"])] += 1
            if terminated:
                break
    for r in range(3):
        _within_ci(int(hits[r]), int(counts[r]), _head_rate(response, 1, r))
    batched = BatchedPushEnv(num_envs=3000, max_episode_steps=3, **_env_kwargs(WithHead(default_shop().response)))
    batched.reset(seed=2)
    _, _, _, _, info = batched.step(np.ones(batched.num_envs, dtype=int))
    # the two envs' first-day rates: a two-proportion z-test
    p1, n1, p2, n2 = hits[0] / counts[0], counts[0], info["unsubscribed"].mean(), batched.num_envs
    pooled = (hits[0] + info["unsubscribed"].sum()) / (n1 + n2)
    assert abs(p1 - p2) < 4.5 * np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))


def test_a_head_equal_to_the_rule_gives_the_very_same_trajectories() -> None:
    """The head path draws the same uniforms in the same order as the rule: bit-identical rollouts."""
    cfg = {"churn_logit": -2.0, "churn_slope": 0.6, "frequency_cap": 3, "slate_size": 2}
    shop = default_shop()
    plain = BatchedPushEnv(num_envs=300, max_episode_steps=10, **{**_env_kwargs(shop.response), **cfg})
    head = BatchedPushEnv(num_envs=300, max_episode_steps=10, **{**_env_kwargs(WithHead(shop.response, rule=(-2.0, 0.6))),
                                                                **cfg})
    assert plain.dynamics.dynamics_source["churn"] == "assumed" and head.dynamics.dynamics_source["churn"] == "learned"
    rng = np.random.default_rng(5)
    for env in (plain, head):
        env.reset(seed=7)
    ended = 0
    for _ in range(20):
        a = rng.integers(0, plain.dynamics.n_allowed + 1, size=(300, 2))
        out_p, out_h = plain.step(a), head.step(a)
        for x, y in zip(out_p[:4], out_h[:4], strict=True):
            np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(out_p[4]["unsubscribed"], out_h[4]["unsubscribed"])
        ended += int(out_p[2].sum())
    assert ended > 50  # churn happened


def test_unsubscribe_probability_with_contexts_is_the_heads_mean_over_pushable_promotions() -> None:
    shop = default_shop()
    response = WithHead(shop.response)
    dyn = PushDynamics(PushEnvConfig(no_push_action=3, churn_logit=-4.0, churn_slope=0.5),
                       Shop.build(response, shop.contexts, shop.categories, shop.action_ids))
    ctx, recent = shop.contexts[:50], np.arange(50) % 4
    pushable = [a for a in range(shop.n_actions) if a != 3]
    logits = A0 + A1 * (np.array(pushable) % 2)[None, :] + SLOPE * recent[:, None] + 0.3 * ctx[:, :1]
    expected = (1 / (1 + np.exp(-logits))).mean(axis=1)  # an independent closed form
    np.testing.assert_allclose(dyn.unsubscribe_probability(recent, ctx), expected, rtol=1e-12)
    np.testing.assert_allclose(dyn.unsubscribe_by_action(ctx, recent).mean(axis=1), expected, rtol=1e-12)
    np.testing.assert_allclose(dyn.unsubscribe_probability(recent), 1 / (1 + np.exp(4.0 - 0.5 * recent)), rtol=1e-12)
    rule = PushDynamics(PushEnvConfig(churn="rule", churn_logit=-4.0, churn_slope=0.5), dyn.shop)
    assert rule.dynamics_source["churn"] == "assumed"
    np.testing.assert_allclose(rule.unsubscribe_probability(recent, ctx), 1 / (1 + np.exp(4.0 - 0.5 * recent)))
    np.testing.assert_allclose(rule.unsubscribe_by_action(ctx, recent), np.repeat(
        (1 / (1 + np.exp(4.0 - 0.5 * recent)))[:, None], shop.n_actions, axis=1))


class NoHead(WithHead):
    """A response that has the method but says it has no head (a ResponseModel fitted without the column)."""

    has_unsubscribe = False


def test_sources_and_refusals() -> None:
    shop = default_shop()
    assert PushEnv().dynamics.dynamics_source == {"fatigue": "learned", "churn": "assumed"}  # the truth's fatigue
    assert PushEnv(fatigue="multiplicative").dynamics.dynamics_source == {"fatigue": "assumed", "churn": "assumed"}
    assert PushEnv(**_env_kwargs(NoHead(shop.response))).dynamics.dynamics_source["churn"] == "assumed"
    with pytest.raises(ValueError, match="churn='response' needs a response with an unsubscribe head"):
        PushEnv(churn="response")
    with pytest.raises(ValueError, match="PushEnvConfig.churn must be one of"):
        PushEnv(churn="sometimes")

    class Wide(WithHead):
        def unsubscribe_probability(self, contexts, recent, position):
            return np.zeros((len(contexts), self.n_actions + 1))

    class Outside(WithHead):
        def unsubscribe_probability(self, contexts, recent, position):
            return np.full((len(contexts), self.n_actions), 1.5)

    with pytest.raises(ValueError, match=r"unsubscribe_probability\(\) has shape"):
        PushEnv(**_env_kwargs(Wide(shop.response)))
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        PushEnv(**_env_kwargs(Outside(shop.response)))
