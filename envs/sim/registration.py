"""Registers `pushrl/Push-v0` with gymnasium (on `import pushrl.envs.sim`; idempotent).

    gymnasium.make("pushrl/Push-v0", **kwargs)           -> PushEnv (TimeLimit of DEFAULT_HORIZON days)
    gymnasium.make_vec("pushrl/Push-v0", num_envs=N,
                       vectorization_mode="vector_entry_point", **kwargs) -> BatchedPushEnv
Without a response and contexts the env runs on the default small synthetic shop (TrueResponse).
Bump the version when the dynamics change.
"""

from __future__ import annotations

import gymnasium

PUSH_ENV_ID = "pushrl/Push-v0"
DEFAULT_HORIZON = 30  # days: the registered max_episode_steps


def register_envs() -> None:
    """Register pushrl's environments unless already registered."""
    if PUSH_ENV_ID in gymnasium.registry:
        return
    gymnasium.register(
        id=PUSH_ENV_ID,
        entry_point="pushrl.envs.sim.push_env:PushEnv",
        vector_entry_point="pushrl.envs.sim.batched_env:BatchedPushEnv",
        max_episode_steps=DEFAULT_HORIZON,
    )


register_envs()
