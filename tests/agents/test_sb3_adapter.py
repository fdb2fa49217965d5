"""The SB3 VecEnv adapter: SB3's PPO trains on BatchedPushEnv directly."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.agents.sb3_adapter import to_sb3_vec_env
from pushrl.envs.sim.batched_env import BatchedPushEnv


def test_ppo_runs_a_few_hundred_steps() -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecMonitor

    venv = VecMonitor(to_sb3_vec_env(BatchedPushEnv(num_envs=8, max_episode_steps=30, diversity_weight=0.3)))
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=512)
    assert model.num_timesteps >= 512
    assert len(model.ep_info_buffer) > 0  # episodes ended and were recorded through terminal infos
    actions, _ = model.predict(venv.reset(), deterministic=True)
    assert actions.shape == (8,)


def test_terminal_observation_and_time_limit_flags() -> None:
    venv = to_sb3_vec_env(BatchedPushEnv(num_envs=4, max_episode_steps=3, churn_logit=-50.0, churn_slope=0.0))
    venv.seed(7)
    first = venv.reset()
    assert first.shape == (4, venv.observation_space.shape[0])
    for _ in range(3):
        obs, reward, done, infos = venv.step(np.zeros(4, dtype=np.int64))
    assert done.all() and reward.dtype == np.float32
    for info, o in zip(infos, obs, strict=True):
        assert info["TimeLimit.truncated"] and info["terminal_observation"].shape == o.shape
        assert not np.array_equal(info["terminal_observation"], o)
    assert venv.get_attr("num_envs") == [4] * 4 and venv.env_is_wrapped(object) == [False] * 4


def test_seeded_resets_repeat() -> None:
    venv = to_sb3_vec_env(BatchedPushEnv(num_envs=4))
    venv.seed(3)
    a = venv.reset()
    venv.seed(3)
    np.testing.assert_array_equal(a, venv.reset())


def test_needs_same_step_autoreset() -> None:
    with pytest.raises(ValueError, match="SB3 needs autoreset_mode=SAME_STEP"):
        to_sb3_vec_env(BatchedPushEnv(num_envs=2, autoreset_mode="NextStep"))
    with pytest.raises(TypeError, match="env must be a BatchedPushEnv"):
        to_sb3_vec_env(object())
