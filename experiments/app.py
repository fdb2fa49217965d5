"""The Hydra application behind every `pushrl` command."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from pushrl.experiments.config import register_configs

register_configs()


@hydra.main(config_path="pkg://pushrl.configs", config_name="config", version_base="1.3")
def hydra_app(cfg: DictConfig) -> None:
    from pushrl.experiments.stages import run_command

    run_command(cfg)
