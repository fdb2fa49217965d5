"""The factored timing agent: features (checked against the greedy's own scores), the 0/1 -> env action map, the
SB3 VecEnv's expected rewards, the policy over env observations, and (slow) RL reaching the DP optimum."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pushrl.agents.rollout import compare, rollout
from pushrl.agents.sequential_config import SequentialConfig
from pushrl.agents.timing_rl import (
    FEATURE_NAMES,
    N_FEATURES,
    TimingFeatures,
    expected_value,
    timing_agent_config,
    to_timing_vec_env,
    train_timing,
)
from pushrl.agents.timing_study import baseline_policies
from pushrl.envs.objectives import Objective
from pushrl.envs.sim.env_config import default_shop
from pushrl.envs.sim.world import build_world
from pushrl.policies.timing import MyopicGreedy

torch.set_num_threads(1)


def _world(n_users: int = 300, horizon: int = 10):
    shop = default_shop(0, n_users, 6)
    cfg = SequentialConfig(n_users=n_users, horizon=horizon)
    return cfg, build_world(cfg, shop.response, shop.contexts, shop.categories, shop.action_ids,
                            Objective(name="click", reward="click"), None, np.random.default_rng(0))


def test_features_are_the_greedys_scores_in_units() -> None:
    _, world = _world()
    env = world.factory()(16)
    obs, _ = env.reset(seed=1)
    for _ in range(3):  # some history
        obs, *_ = env.step(np.zeros(16, dtype=np.int64))
    f = TimingFeatures(env.dynamics, world.unit)
    feats, best, expected = f.evaluate(obs)
    scores = MyopicGreedy(env.dynamics, 0.0).scores(obs)
    assert feats.shape == (16, N_FEATURES) and feats.dtype == np.float32
    np.testing.assert_array_equal(best, scores[:, :-1].argmax(axis=1))
    gain = (scores[:, :-1].max(axis=1) - scores[:, -1]) / world.unit
    np.testing.assert_allclose(feats[:, 4], gain, rtol=1e-5)
    np.testing.assert_allclose(feats[:, 0], obs[:, env.layout.recent_pushes] / 3)
    day = FEATURE_NAMES.index("day")
    np.testing.assert_allclose(feats[:, day], env._elapsed / world.horizon, rtol=1e-6)  # the env's own step count
    assert (feats[:, day] == np.float32(0.3)).sum() >= 12  # three days into a 10-day episode (a few users churned)
    assert FEATURE_NAMES[-1] == "day" and len(FEATURE_NAMES) == N_FEATURES
    np.testing.assert_allclose(expected[:, 1], scores[:, :-1].max(axis=1) / world.unit)
    assert np.abs(feats).max() <= 10
    np.testing.assert_array_equal(f.env_actions(np.array([1, 0] * 8), best), np.where(np.arange(16) % 2 == 0, best,
                                                                                        env.dynamics.n_allowed))
    with pytest.raises(ValueError, match="0 \\(no push\\) or 1"):
        f.env_actions(np.full(16, 2), best)


def test_vec_env_pays_expected_rewards_in_units() -> None:
    _, world = _world()
    venv = to_timing_vec_env(world.factory()(8), world.unit)
    venv.seed(0)
    obs = venv.reset()
    expected = venv._expected.copy()
    _, reward, _, _ = venv.step(np.array([1, 0] * 4))
    np.testing.assert_allclose(reward, expected[np.arange(8), [1, 0] * 4], rtol=1e-5)
    assert obs.shape == (8, N_FEATURES)


def test_tiny_training_gives_a_policy_over_env_observations(tmp_path) -> None:
    _, world = _world(150, 5)
    trained = train_timing(timing_agent_config("ppo", 512, 8, 1e-3, 0, curve_points=1, curve_users=16), world.factory(),
                           world.unit, tmp_path)
    policy = trained.policy()
    env = world.factory()(12)
    obs, _ = env.reset(seed=0)
    p = policy.action_probabilities(obs)
    assert p.shape == (12, env.dynamics.n_allowed + 1)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert set(np.unique(p)) <= {0.0, 1.0}  # deterministic: push the greedy's best or nothing
    assert (tmp_path / "learning_curve.csv").exists()
    assert rollout(policy, env, None, 2, 0).metrics["reward_per_user"].mean >= 0


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "dqn", "a2c"])
def test_rl_reaches_the_optimum_on_a_small_world(tmp_path, algo: str) -> None:
    cfg, world = _world(1000, 30)
    trained = train_timing(timing_agent_config(algo, 60_000 if algo != "dqn" else 120_000, 64, 1e-3, 0, curve_points=3, curve_users=256),
                           world.factory(), world.unit, tmp_path)
    curve = trained.learning_curve["reward_per_user"]
    if algo == "ppo":  # DQN's / A2C's first point is their random net's decision, which may already be the plateau's
        assert curve.iloc[-1] > curve.iloc[0]
    assert curve.iloc[-1] >= 0.99 * curve.iloc[0]  # (A2C here: 8.01 at the start, 7.995 after; 256-user curve points)
    env = world.factory()(500)
    base = baseline_policies(env.dynamics, 0.0, True, cfg.fatigue_window, horizon=world.horizon)
    res = {n: rollout(p, env, None, 5, 3) for n, p in base.items()} | {algo: rollout(trained.policy(), env, None, 5, 3)}
    optimum = base["optimum"].result.mean
    assert res[algo].metrics["reward_per_user"].mean >= 0.95 * optimum
    rule = max((n for n in res if n.startswith("greedy_spaced_")), key=lambda n: res[n].metrics["reward_per_user"].mean)
    assert compare(res[algo], res[rule])["difference_ci_high"] > 0  # not significantly below the best rule


def test_expected_value_is_the_dp_value_with_less_noise_than_rollout() -> None:
    """The optimum's exact DP value lies in the expected-value CI; the drawn-reward rollout of the same episodes
    agrees, with a wider CI; a second, independent estimate: the mean of the drawn rewards of the same runs."""
    _, world = _world(300, 10)
    env = world.factory()(2_000)
    policy = baseline_policies(env.dynamics, 0.0, False, 3, horizon=world.horizon)["optimum"]
    v = expected_value(policy, env, 3, seed=5)
    assert v.shape == (6_000,)
    se = v.std() / np.sqrt(len(v))
    assert abs(v.mean() - policy.result.mean) < 3 * se
    drawn = rollout(policy, env, None, 3, 5).metrics["reward_per_user"]
    assert drawn.ci_low <= policy.result.mean <= drawn.ci_high
    assert 2 * 1.96 * se < drawn.ci_high - drawn.ci_low  # narrower than the drawn rewards' interval
    greedy = baseline_policies(env.dynamics, 0.0, False, 3, horizon=world.horizon)["greedy_myopic"]
    assert expected_value(greedy, env, 3, seed=5).mean() < v.mean()  # the optimum beats the myopic greedy
