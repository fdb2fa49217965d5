"""pushrl.envs."""

from pushrl.envs import registration as registration  # registers pushrl/Push-v0 with gymnasium
