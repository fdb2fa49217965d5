"""`pushrl/Push-v0` is registered on `import pushrl.envs.sim`, idempotently, with both entry points."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import gymnasium
import numpy as np
from gymnasium.utils.env_checker import check_env
from gymnasium.wrappers import TimeLimit

import pushrl.envs.sim
from pushrl.envs.sim import registration
from pushrl.envs.sim.batched_env import BatchedPushEnv
from pushrl.envs.sim.push_env import PushEnv


def test_make_gives_a_push_env_with_the_registered_horizon() -> None:
    env = gymnasium.make(registration.PUSH_ENV_ID, churn_logit=-50.0)
    assert isinstance(env.unwrapped, PushEnv) and isinstance(env, TimeLimit)
    assert env.spec.max_episode_steps == registration.DEFAULT_HORIZON
    env.reset(seed=0)
    for t in range(registration.DEFAULT_HORIZON):
        *_, terminated, truncated, _ = env.step(env.action_space.sample())
        assert truncated == (t == registration.DEFAULT_HORIZON - 1) and not terminated


def test_every_registered_pushrl_id_passes_check_env() -> None:
    ids = [i for i in gymnasium.registry if i.startswith("pushrl/")]
    assert ids == [registration.PUSH_ENV_ID]
    for env_id in ids:
        check_env(gymnasium.make(env_id, slate_size=2).unwrapped)


def test_make_vec_gives_the_batched_env() -> None:
    env = gymnasium.make_vec(registration.PUSH_ENV_ID, num_envs=16, vectorization_mode="vector_entry_point",
                             diversity_weight=0.2)
    assert isinstance(env, BatchedPushEnv) and env.num_envs == 16
    assert env.max_episode_steps == registration.DEFAULT_HORIZON and env.config.diversity_weight == 0.2
    obs, _ = env.reset(seed=0)
    assert obs.shape == (16, env.single_observation_space.shape[0])
    env.step(np.zeros(16, dtype=np.int64))


def test_registration_is_idempotent() -> None:
    before = gymnasium.registry[registration.PUSH_ENV_ID]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium warns when an id is registered twice
        importlib.reload(registration)
        importlib.reload(pushrl.envs.sim)
        registration.register_envs()
    assert gymnasium.registry[registration.PUSH_ENV_ID] == before


def test_importing_pushrl_envs_sim_registers_without_heavy_imports() -> None:
    code = ("import sys, gymnasium; assert 'pushrl/Push-v0' not in gymnasium.registry; import pushrl.envs.sim; "
            "import pushrl.envs.sim; assert 'pushrl/Push-v0' in gymnasium.registry; "
            "assert 'torch' not in sys.modules and 'stable_baselines3' not in sys.modules and 'pandas' not in sys.modules")
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True)


def test_importing_pushrl_envs_registers_nothing_and_imports_no_gymnasium() -> None:
    code = ("import sys; import pushrl.envs, pushrl.envs.common.atomic, pushrl.envs.data.schema; "
            "assert 'gymnasium' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True)
