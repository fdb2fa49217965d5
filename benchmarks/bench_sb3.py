"""SB3 PPO training timesteps/s on BatchedPushEnv vs gymnasium's SyncVectorEnv of single PushEnvs, and
the rollout harness's evaluation throughput (user-steps/s).

Training: the same PPO (SB3AgentConfig's defaults: n_steps=32, n_epochs=4) on N = 64 and 256 users,
once on `BatchedPushEnv(N)` through `to_sb3_vec_env`, once on `SyncVectorEnv` over N `PushEnv`s
(each in gymnasium's TimeLimit) behind the same VecEnv adapter class, both in VecMonitor; the
reference is measured in the same run and the ratio printed. Rates include PPO's gradient updates,
which are the same work on both sides. Rollout: `pushrl.agents.rollout.rollout` with a uniform policy
and with the trained PPO as an SB3Policy. torch runs on one thread (shared machine).
"""

from __future__ import annotations

import time

import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import TimeLimit
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecMonitor

from pushrl.agents.rollout import rollout
from pushrl.agents.sb3_adapter import _adapter_class, to_sb3_vec_env
from pushrl.agents.sb3_agents import SB3AgentConfig
from pushrl.agents.sb3_policy import SB3Policy
from pushrl.envs.sim.batched_env import BatchedPushEnv
from pushrl.envs.sim.push_env import PushEnv
from pushrl.envs.sim.registration import DEFAULT_HORIZON
from pushrl.policies.policy import UniformPolicy

USERS = (64, 256)
ROLLOUTS = 3  # PPO rollouts timed per measurement (after one warm-up rollout)
ROLLOUT_USERS = (1_024, 4_096)


def batched_venv(n: int) -> object:
    return VecMonitor(to_sb3_vec_env(BatchedPushEnv(n, DEFAULT_HORIZON)))


def sync_venv(n: int) -> object:
    """N single PushEnvs in gymnasium's SyncVectorEnv (SAME_STEP), behind the batched env's adapter class."""
    env = SyncVectorEnv([lambda: TimeLimit(PushEnv(), DEFAULT_HORIZON) for _ in range(n)],
                        autoreset_mode=AutoresetMode.SAME_STEP)
    return VecMonitor(_adapter_class()(env))


class CollectionTimer(BaseCallback):
    """Seconds spent collecting rollouts (env steps + policy forward), without the updates."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0
        self._t0 = 0.0

    def _on_rollout_start(self) -> None:
        self._t0 = time.perf_counter()

    def _on_rollout_end(self) -> None:
        self.seconds += time.perf_counter() - self._t0

    def _on_step(self) -> bool:
        return True


def train_rate(venv: object, n: int) -> tuple[float, float, PPO]:
    """PPO timesteps/s (collection + updates) and collection-only timesteps/s over ROLLOUTS rollouts."""
    kwargs = SB3AgentConfig(algo="ppo", n_envs=n).algorithm_kwargs()
    model = PPO("MlpPolicy", venv, seed=0, device="cpu", verbose=0, **kwargs)
    per_rollout = kwargs["n_steps"] * n
    model.learn(per_rollout)  # warm-up
    timer = CollectionTimer()
    start, t0 = model.num_timesteps, time.perf_counter()
    model.learn(ROLLOUTS * per_rollout, callback=timer, reset_num_timesteps=False)
    steps = model.num_timesteps - start
    return steps / (time.perf_counter() - t0), steps / timer.seconds, model


def rollout_rate(policy: object, n: int) -> float:
    """User-steps/s of one rollout seed of n users (30-day episodes)."""
    rollout(policy, lambda m: BatchedPushEnv(m, DEFAULT_HORIZON), 64, 1)  # warm-up
    t0 = time.perf_counter()
    result = rollout(policy, lambda m: BatchedPushEnv(m, DEFAULT_HORIZON), n, 2)
    return float(result.active.sum()) / (time.perf_counter() - t0)


def main() -> None:
    torch.set_num_threads(1)
    print(f"PPO training on the default shop, {DEFAULT_HORIZON}-day episodes, torch threads = 1")
    print("timesteps/s: training = rollout collection + PPO updates; collection = env steps + policy forward")
    print(f"{'users':>6} {'phase':>10} {'BatchedPushEnv':>15} {'SyncVectorEnv':>14} {'ratio':>6}")
    model = None
    for n in USERS:
        batched, batched_collect, model = train_rate(batched_venv(n), n)
        sync, sync_collect, _ = train_rate(sync_venv(n), n)
        for phase, b, s in (("training", batched, sync), ("collection", batched_collect, sync_collect)):
            print(f"{n:>6} {phase:>10} {b:>15,.0f} {s:>14,.0f} {b / s:>5.1f}x", flush=True)
    print("\nrollout harness (2 seeds, one 30-day episode per user)")
    print(f"{'users':>6} {'policy':>14} {'user-steps/s':>13}")
    n_actions = BatchedPushEnv(1).single_action_space.n
    policies = {"uniform": UniformPolicy(n_actions), "PPO SB3Policy": SB3Policy(model)}
    for n in ROLLOUT_USERS:
        for name, policy in policies.items():
            print(f"{n:>6} {name:>14} {rollout_rate(policy, n):>13,.0f}", flush=True)


if __name__ == "__main__":
    main()
