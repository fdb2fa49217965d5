"""pushrl.envs."""
