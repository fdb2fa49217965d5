"""pushrl.envs: the world. `common` (helpers every layer uses), `data` (the log), `model` (the learned
user response), `objectives` (what a push earns), `sim` (the gymnasium shop; importing it registers
`pushrl/Push-v0`). Importing `pushrl.envs` itself imports nothing heavy."""
