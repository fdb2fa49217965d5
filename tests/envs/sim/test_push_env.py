"""PushEnv: the gymnasium contract, determinism and each dynamic (fatigue, churn, cap, reward terms)."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from pushrl.envs.sim.batched_env import BatchedPushEnv
from pushrl.envs.sim.env_config import default_shop
from pushrl.envs.sim.push_env import PushEnv, observation_names

NO_CHURN = {"churn_logit": -50.0, "churn_slope": 0.0}
NOTHING = 10  # default shop: 10 promotions, action 10 = push nothing


def rollout(env: PushEnv, actions: list, seed: int) -> list:
    obs, info = env.reset(seed=seed)
    out = [(obs, info["user"])]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        out.append((obs, reward, terminated, info["click"], tuple(info["promotions"])))
        if terminated:
            break
    return out


@pytest.mark.parametrize("slate_size", [1, 3])
def test_gymnasium_check_env(slate_size: int) -> None:
    check_env(PushEnv(slate_size=slate_size, diversity_weight=0.5), skip_render_check=True)


@pytest.mark.parametrize("slate_size", [1, 3])
def test_sb3_check_env(slate_size: int) -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    sb3_check_env(PushEnv(slate_size=slate_size), warn=True)


def test_spaces_and_observation_layout() -> None:
    env = PushEnv(slate_size=1)
    shop = default_shop()
    d, n_cat = shop.contexts.shape[1], shop.n_categories
    assert env.action_space.n == shop.n_actions + 1
    assert env.observation_space.shape == (d + 5 + n_cat,)
    assert env.observation_names == observation_names(d, n_cat)
    lay = env.layout
    obs, info = env.reset(seed=3, options={"user": 7})
    np.testing.assert_allclose(obs[lay.context], shop.contexts[7], rtol=1e-6)
    assert info["user"] == 7
    assert obs[lay.recent_pushes] == 0 and obs[lay.days_since_push] == 1.0 and obs[lay.response_rate] == 0
    assert not obs[lay.category_pushes].any() and obs[lay.cap_hit] == 0
    obs, *_ = env.step(0)  # promotion 0 is category 0
    assert obs[lay.recent_pushes] == 1 and obs[lay.days_since_push] == pytest.approx(1 / env.config.horizon)
    assert obs[lay.category_pushes][0] == 1.0 and obs[lay.category_pushes][1] == 0.0
    slate = PushEnv(slate_size=3)
    assert tuple(slate.action_space.nvec) == (shop.n_actions + 1,) * 3


def test_same_seed_same_trajectory() -> None:
    actions = [i % 11 for i in range(30)]
    a = rollout(PushEnv(), actions, seed=11)
    b = rollout(PushEnv(), actions, seed=11)
    c = rollout(PushEnv(), actions, seed=12)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for u, v in zip(x, y, strict=True):
            np.testing.assert_array_equal(u, v)
    assert a[0][1] != c[0][1] or any(x[1] != y[1] for x, y in zip(a[1:], c[1:], strict=False))


def click_rate(push_every: int, seed: int, **kwargs: object) -> float:
    """Clicks per push over 20 days for 2,000 users (the batched env shares PushEnv's dynamics)."""
    env = BatchedPushEnv(num_envs=2_000, frequency_cap=None, **NO_CHURN, **kwargs)
    env.reset(seed=seed)
    clicks = pushes = 0.0
    for t in range(20):
        action = 3 if t % push_every == 0 else NOTHING  # one promotion: only the fatigue differs
        _, _, _, _, info = env.step(np.full(env.num_envs, action))
        clicks += info["click"].sum()
        pushes += info["pushed"].sum()
    return clicks / pushes


def test_fatigue_lowers_click_rate_through_the_response() -> None:
    assert PushEnv().dynamics.fatigue_mode == "response"  # TrueResponse models fatigue itself
    daily = click_rate(1, seed=0)
    rested = click_rate(4, seed=1)
    assert daily < rested * 0.85, (daily, rested)


class HistoryBlind:
    """A response fit without history: ignores recent_pushes."""

    def __init__(self) -> None:
        self.inner = default_shop().response
        self.reward_names = self.inner.reward_names
        self.n_actions = self.inner.n_actions

    def predict(self, contexts: np.ndarray, recent_pushes: np.ndarray, position: np.ndarray) -> dict:
        return self.inner.predict(contexts, np.zeros_like(recent_pushes), position)


def test_multiplicative_fatigue_for_a_history_blind_response() -> None:
    shop = default_shop()
    env = PushEnv(HistoryBlind(), shop.contexts, shop.categories, fatigue_factor=0.5,
                  frequency_cap=None, **NO_CHURN)
    assert env.dynamics.fatigue_mode == "multiplicative"
    blind = {"response": HistoryBlind(), "contexts": shop.contexts, "categories": shop.categories, "fatigue_factor": 0.5}
    daily = click_rate(1, seed=0, **blind)
    rested = click_rate(4, seed=1, **blind)
    assert daily < rested * 0.7, (daily, rested)
    # the expected click of a push after h recent pushes is scaled by factor ** h
    state = env.dynamics.allocate(1)
    env.dynamics.reset_users(state, slice(None), np.random.default_rng(0), np.array([5]))
    state.recent[:] = 2.0
    q = env.dynamics._expected(state, np.array([0]), np.array([0]), np.array([4]))["click"][0]
    base = shop.response.predict(shop.contexts[[5]], np.zeros(1), np.zeros(1, np.int64))["click"][0, 4]
    assert q == pytest.approx(0.25 * base)


def test_churn_terminates_and_costs_the_penalty() -> None:
    env = PushEnv(churn_logit=50.0, unsubscribe_penalty=2.5)
    env.reset(seed=0)
    for _ in range(5):  # no push, no churn
        *_, terminated, _, info = env.step(NOTHING)
        assert not terminated and not info["unsubscribed"]
    _, reward, terminated, truncated, info = env.step(3)
    assert terminated and not truncated and info["unsubscribed"]
    assert reward == pytest.approx(info["objective"] - 2.5)


def test_churn_risk_rises_with_recent_pushes() -> None:
    env = PushEnv(churn_logit=-3.0, churn_slope=1.0, frequency_cap=None)
    lengths = []
    env.reset(seed=0)
    for _ in range(300):
        env.reset()
        for t in range(30):
            *_, terminated, _, _ = env.step(t % 10)
            if terminated:
                break
        lengths.append(t + 1)
    # p(first push) = sigmoid(-3) ≈ 0.047; by day 4 p = sigmoid(0) = 0.5: nearly all gone by day ~8
    assert np.mean(np.array(lengths) <= 10) > 0.9


def test_frequency_cap_refuses_pushes_over_the_cap() -> None:
    env = PushEnv(frequency_cap=2, cap_window=5, push_cost=0.1, **NO_CHURN)
    env.reset(seed=0)
    pushed, capped = [], []
    for t in range(30):
        obs, reward, _, _, info = env.step(t % 10)
        pushed.append(info["pushed"])
        capped.append(info["capped"])
        if info["capped"]:
            assert reward == 0.0 and info["click"] == 0 and tuple(info["promotions"]) == (-1,)
        assert obs[env.layout.cap_hit] == float(sum(pushed[-4:]) >= 2)  # a push tomorrow would make 3 in 5 days
    pushed = np.array(pushed)
    assert all(pushed[max(0, t - 4):t + 1].sum() <= 2 for t in range(30))
    assert pushed.sum() == 12 and sum(capped) == 18  # 2 pushes then 3 refusals, repeating


@pytest.mark.parametrize("lam", [0.0, 0.7])
def test_reward_is_objective_plus_lambda_diversity_minus_costs(lam: float) -> None:
    env = PushEnv(diversity_weight=lam, push_cost=0.05, objective="revenue", frequency_cap=None, **NO_CHURN)
    env.reset(seed=4)
    novelty = []
    for a in [0, 4, 8, 1, NOTHING, 0]:  # promotions 0, 4, 8 share category 0
        _, reward, _, _, info = env.step(a)
        expected = info["revenue"] + lam * info["diversity"] - 0.05 * info["pushed"]
        assert reward == pytest.approx(expected)
        novelty.append(info["diversity"])
    # decayed count h of category 0 before each push: 0, 1, 1.8, then 2.44 decays twice before day 5
    assert novelty == pytest.approx([1.0, 1 / 2, 1 / 2.8, 1.0, 0.0, 1 / (1 + 2.44 * 0.8**2)])


def test_slate_duplicates_are_pushed_once() -> None:
    env = PushEnv(slate_size=3, **NO_CHURN)
    env.reset(seed=0)
    _, _, _, _, info = env.step([3, 3, NOTHING])
    assert info["n_duplicates"] == 1 and tuple(info["promotions"]) == (3, -1, -1)
    _, _, _, _, info = env.step([NOTHING, NOTHING, NOTHING])
    assert not info["pushed"] and info["diversity"] == 0
    _, _, _, _, info = env.step([1, 5, 2])  # 1 and 5 share category 1; 3 (category 3) was pushed before
    assert info["n_duplicates"] == 0 and tuple(info["promotions"]) == (1, 5, 2)
    assert info["diversity"] == pytest.approx(1.0 + 1 / 2 + 1.0)


def test_allowed_promotions_map_actions_to_catalogue_ids() -> None:
    env = PushEnv(allowed_promotions=(7, 2), **NO_CHURN)
    assert env.action_space.n == 3
    env.reset(seed=0)
    assert tuple(env.step(1)[4]["promotions"]) == (2,)
    assert tuple(env.step(0)[4]["promotions"]) == (7,)
    assert not env.step(2)[4]["pushed"]


def test_bad_action_and_option_are_refused() -> None:
    env = PushEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="actions must be in"):
        env.step(11)
    with pytest.raises(ValueError, match="options\\['user'\\]"):
        env.reset(options={"user": 10_000})
