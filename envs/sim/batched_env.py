"""BatchedPushEnv: N users stepped at once as arrays, with the rules of PushEnv (shared PushDynamics).

The response function is called once per step for the whole batch; nothing loops over users.
Spaces: `single_observation_space` / `single_action_space` are PushEnv's; the batched
observation is (N, D) float32 (columns: `layout`, PushEnv's ObservationLayout), actions (N,) for k = 1 or (N, k) for slates.

Autoreset (`metadata["autoreset_mode"]`, default SAME_STEP):
* SAME_STEP: a user whose episode ended (unsubscribed, or `max_episode_steps` reached) is
  replaced by a fresh pool user in the same step; the returned observation row is the new
  user's, the last observation of the old one is in info["final_obs"] (N, D) float32, valid where
  info["_final_obs"] (N,) bool. The other info arrays describe the step just taken.
* NEXT_STEP (gymnasium's default): the step after an episode ended resets that user; its action is
  ignored and it gets reward 0 (and outcomes 0, organic ones included), terminated = truncated = False.
* DISABLED: the caller resets ended users with `reset(options={"reset_mask": mask})`; stepping an
  ended user raises ValueError.
Info is a dict of arrays (N,) (info["promotions"] is (N, k)), keys as PushEnv's plus "user".
Truncation follows gymnasium's TimeLimit: truncated = (steps in episode >= max_episode_steps).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from pushrl.envs.model.response import ResponseFunction
from pushrl.envs.sim.env_config import PushEnvConfig, Shop
from pushrl.envs.sim.observation import ObservationLayout
from pushrl.envs.sim.push_env import PushDynamics


class BatchedPushEnv(VectorEnv):
    """`num_envs` simulated users stepped together (see the module docstring)."""

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = None,
                 autoreset_mode: AutoresetMode | str = AutoresetMode.SAME_STEP,
                 response: ResponseFunction | None = None, contexts: np.ndarray | None = None,
                 categories: np.ndarray | None = None, action_ids: np.ndarray | None = None,
                 config: PushEnvConfig | dict[str, Any] | None = None, render_mode: str | None = None,
                 **overrides: Any) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if max_episode_steps is not None and (not isinstance(max_episode_steps, int | np.integer) or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps must be None or an integer >= 1, got {max_episode_steps!r}")
        if render_mode is not None:
            raise ValueError(f"render_mode must be None (BatchedPushEnv has no rendering), got {render_mode!r}")
        try:
            mode = AutoresetMode(autoreset_mode)
        except ValueError as exc:
            raise ValueError(f"autoreset_mode must be one of {[m.value for m in AutoresetMode]}, got {autoreset_mode!r}") from exc
        self.config = PushEnvConfig.build(config, **overrides)
        self.shop = Shop.build(response, contexts, categories, action_ids)
        self.dynamics = PushDynamics(self.config, self.shop)
        self.num_envs = int(num_envs)
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.autoreset_mode = mode
        self.metadata = {"autoreset_mode": mode, "render_modes": []}
        self.render_mode = None
        self.single_observation_space = self.dynamics.single_observation_space
        self.single_action_space = self.dynamics.single_action_space
        self.layout: ObservationLayout = self.dynamics.layout
        """Which observation columns hold what (PushEnv's layout)."""
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._state = self.dynamics.allocate(self.num_envs)
        self._elapsed = np.zeros(self.num_envs, dtype=np.int64)
        self._ended = np.zeros(self.num_envs, dtype=bool)
        self._nothing = np.full((self.num_envs, self.config.slate_size), self.dynamics.n_allowed, dtype=np.int64)
        self._was_reset = False

    @property
    def observation_names(self) -> list[str]:
        return self.layout.names()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Fresh users for all (or, with options["reset_mask"], some) slots."""
        super().reset(seed=seed)
        mask = None if options is None else options.get("reset_mask")
        if mask is None:
            mask = np.ones(self.num_envs, dtype=bool)
            self._state.t = 0
        else:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), "
                                 f"got {mask.dtype} {mask.shape}")
        self.dynamics.reset_users(self._state, mask, self.np_random)
        self._elapsed[mask] = 0
        self._ended[mask] = False
        self._was_reset = True
        return self._state.obs.copy(), {"user": self._state.user.copy(), "_user": mask.copy()}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._was_reset:
            raise ValueError("call reset() before step()")
        k = self.config.slate_size
        a = np.asarray(actions, dtype=np.int64).reshape(self.num_envs, k)
        mode = self.autoreset_mode
        restart = None
        if self._ended.any():
            if mode is AutoresetMode.DISABLED:
                raise ValueError(f"users {np.flatnonzero(self._ended)[:10].tolist()} ended; with autoreset DISABLED "
                                 "reset them with reset(options={'reset_mask': mask}) before stepping")
            if mode is AutoresetMode.NEXT_STEP:
                restart = self._ended.copy()
                a = np.where(restart[:, None], self._nothing, a)
        reward, terminated, info = self.dynamics.step(self._state, a, self.np_random)
        self._elapsed += 1
        truncated = (self._elapsed >= self.max_episode_steps) if self.max_episode_steps is not None \
            else np.zeros(self.num_envs, dtype=bool)
        if restart is not None:  # a resetting user earns nothing, organic outcomes of a no-push action included
            reward[restart] = 0.0
            for key in (*self.dynamics.outcomes, "objective"):
                info[key][restart] = 0.0
            self.dynamics.reset_users(self._state, restart, self.np_random)
            self._elapsed[restart] = 0
            terminated &= ~restart
            truncated &= ~restart
        done = terminated | truncated
        self._ended = done
        if mode is AutoresetMode.SAME_STEP and done.any():
            info["final_obs"] = self._state.obs.copy()
            info["_final_obs"] = done.copy()
            self.dynamics.reset_users(self._state, done, self.np_random)
            self._elapsed[done] = 0
            self._ended = np.zeros(self.num_envs, dtype=bool)
        info["user"] = self._state.user.copy()
        return self._state.obs.copy(), reward, terminated, truncated, info
