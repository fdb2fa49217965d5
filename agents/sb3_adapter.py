"""A thin adapter from BatchedPushEnv to stable-baselines3's `VecEnv` API.

stable_baselines3 is imported only when `to_sb3_vec_env` is called, so `pushrl.envs` never needs it.
The batched env must use SAME_STEP autoreset (SB3's convention): an ended user's last observation
goes to infos[i]["terminal_observation"] and "TimeLimit.truncated" says whether the episode was cut
by the horizon rather than an unsubscribe. Wrap the result in SB3's VecMonitor for episode stats.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

from pushrl.envs.sim.batched_env import BatchedPushEnv


def check_sb3_env(env: BatchedPushEnv) -> None:
    """TypeError/ValueError unless `env` is a BatchedPushEnv with SAME_STEP autoreset (SB3's convention)."""
    if not isinstance(env, BatchedPushEnv):
        raise TypeError(f"env must be a BatchedPushEnv, got {type(env).__name__}")
    if env.autoreset_mode is not AutoresetMode.SAME_STEP:
        raise ValueError(f"SB3 needs autoreset_mode=SAME_STEP, the env has {env.autoreset_mode}; "
                         "build it with BatchedPushEnv(..., autoreset_mode='SameStep')")


def to_sb3_vec_env(env: BatchedPushEnv) -> Any:
    """An SB3 VecEnv stepping `env` (its num_envs users are SB3's num_envs environments)."""
    check_sb3_env(env)
    return batched_vec_env_class()(env)


@lru_cache(maxsize=1)
def batched_vec_env_class() -> type:
    """The VecEnv over a BatchedPushEnv (SB3 imported here, on first use). Subclasses change what the agent
    sees and does through the hooks `_observe`, `_terminal`, `_env_actions` and `_reward`."""
    from stable_baselines3.common.vec_env import VecEnv

    class SB3BatchedPushEnv(VecEnv):
        """BatchedPushEnv behind SB3's VecEnv interface (one instance = all users)."""

        def __init__(self, env: BatchedPushEnv, observation_space: Any = None, action_space: Any = None) -> None:
            self.env = env
            self._actions: np.ndarray | None = None
            super().__init__(env.num_envs, observation_space or env.single_observation_space,
                             action_space or env.single_action_space)

        def _observe(self, obs: np.ndarray) -> np.ndarray:
            return obs

        def _terminal(self, final_obs: np.ndarray) -> np.ndarray:
            return final_obs

        def _env_actions(self, actions: np.ndarray) -> np.ndarray:
            return np.asarray(actions)

        def _reward(self, reward: np.ndarray) -> np.ndarray:
            return reward

        def reset(self) -> np.ndarray:
            obs, info = self.env.reset(seed=self._seeds[0])
            self.reset_infos = [{"user": int(u)} for u in info["user"]]
            self._reset_seeds()
            self._reset_options()
            return self._observe(obs)

        def step_async(self, actions: np.ndarray) -> None:
            self._actions = self._env_actions(actions)

        def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
            if self._actions is None:
                raise ValueError("step_wait() called without step_async(actions)")
            obs, reward, terminated, truncated, info = self.env.step(self._actions)
            self._actions = None
            reward = self._reward(reward)
            done = terminated | truncated
            infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
            if done.any():
                final = self._terminal(info["final_obs"][done])
                for j, i in enumerate(np.flatnonzero(done)):
                    infos[i]["terminal_observation"] = final[j]
                    infos[i]["TimeLimit.truncated"] = bool(truncated[i] and not terminated[i])
            return self._observe(obs), reward.astype(np.float32), done, infos

        def close(self) -> None:
            self.env.close()

        def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
            return [getattr(self.env, attr_name) for _ in self._get_indices(indices)]

        def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
            setattr(self.env, attr_name, value)

        def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list[Any]:
            result = getattr(self.env, method_name)(*method_args, **method_kwargs)
            return [result for _ in self._get_indices(indices)]

        def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
            return [False for _ in self._get_indices(indices)]

    return SB3BatchedPushEnv
