"""ObservationBandit: its features (principal components of the context, the history columns by the env's
layout, an intercept), reward scaling, and online training that repeats with its seed."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.agents.observation_bandit import ObservationBandit, train_bandit
from pushrl.agents.sequential_config import SequentialConfig
from pushrl.envs.objectives import Objective
from pushrl.envs.sim.env_config import default_shop
from pushrl.envs.sim.world import build_world

CFG = SequentialConfig(n_users=150, horizon=5, bandit_days=4, bandit_users=16, bandit_context_dims=3)


@pytest.fixture(scope="module")
def world():
    shop = default_shop(0, 300, 6)
    return build_world(CFG, shop.response, shop.contexts, shop.categories, shop.action_ids,
                       Objective(name="click", reward="click"), None, np.random.default_rng(0))


def test_features_are_components_history_and_an_intercept(world) -> None:
    env = world.factory()(8)
    pool = world.shop.contexts
    agent = ObservationBandit("linucb", {"alpha": 0.5}, env.dynamics, pool, 3, world.unit, seed=0)
    lay = env.layout
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        obs, *_ = env.step(np.zeros(8, dtype=np.int64))
    x = agent.features(obs)
    history = lay.width - lay.context_width - 1  # the history columns; the day (the clock) is left out
    assert lay.history.stop == lay.day == lay.width - 1
    assert x.shape == (8, 3 + history + 1) and agent.n_actions == env.dynamics.n_allowed + 1
    np.testing.assert_allclose(x[:, 3:3 + history], obs[:, lay.history])
    assert x[:, 3 + history - 1].tolist() == obs[:, lay.cap_hit].tolist()  # the history keeps its order
    np.testing.assert_array_equal(x[:, -1], 1.0)
    centred = pool - pool.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    z = (obs[:, lay.context].astype(np.float64) - pool.mean(axis=0)) @ vt[:3].T
    np.testing.assert_allclose(np.abs(x[:, :3]), np.abs(z), atol=1e-9)  # the top components (up to sign)
    assert agent.explained == pytest.approx((s[:3] ** 2).sum() / (s**2).sum())
    wide = ObservationBandit("linucb", {}, env.dynamics, pool, 10_000, world.unit, seed=0)
    assert wide.projection.shape[1] == pool.shape[1] and wide.explained == pytest.approx(1.0)


def test_update_scales_rewards_by_the_unit(world) -> None:
    env = world.factory()(8)
    obs, _ = env.reset(seed=1)
    a = ObservationBandit("epsilon_greedy", {"epsilon": 0.0}, env.dynamics, world.shop.contexts, 2, 2.0, seed=0)
    b = ObservationBandit("epsilon_greedy", {"epsilon": 0.0}, env.dynamics, world.shop.contexts, 2, 1.0, seed=0)
    actions = np.arange(8) % a.n_actions
    rewards = np.linspace(0.0, 1.0, 8)
    a.update(obs, actions, rewards)
    b.update(obs, actions, rewards / 2.0)
    np.testing.assert_allclose(a.action_probabilities(obs), b.action_probabilities(obs))


def test_train_bandit_repeats_with_its_seed(world) -> None:
    first, curve = train_bandit("epsilon_greedy", {"epsilon": 0.2}, world, CFG, None, seed=3)
    again, curve2 = train_bandit("epsilon_greedy", {"epsilon": 0.2}, world, CFG, None, seed=3)
    assert curve.shape == (CFG.bandit_days,)
    np.testing.assert_array_equal(curve, curve2)
    obs, _ = world.factory()(5).reset(seed=0)
    np.testing.assert_array_equal(first.action_probabilities(obs), again.action_probabilities(obs))
    _, lam_curve = train_bandit("epsilon_greedy", {"epsilon": 0.2}, world, CFG, 5.0, seed=3)
    assert not np.array_equal(lam_curve, curve)  # λ enters the reward it learns from
