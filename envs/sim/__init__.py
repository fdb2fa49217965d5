"""The simulated shop (gymnasium): single and batched env, their config and dynamics, diversity.
Importing this package registers `pushrl/Push-v0`."""

from pushrl.envs.sim import registration as registration  # registers pushrl/Push-v0 with gymnasium
