"""Library objects built from the Hydra config: one helper per object, used by every command."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from pushrl.envs.response_model import ResponseModelConfig
from pushrl.policies.evaluation import EstimatorSettings


def response_model_config(cfg: DictConfig, progress: bool | None = None, epochs: int | None = None) -> ResponseModelConfig:
    """`model.*` plus the log's declared `data.reward_chain` and the run's seed."""
    values = OmegaConf.to_container(cfg.model, resolve=True)
    if epochs is not None:
        values["epochs"] = int(epochs)
    return ResponseModelConfig(**values, reward_chain=tuple(cfg.data.reward_chain), seed=int(cfg.seed),
                               progress=bool(cfg.progress if progress is None else progress))


def estimator_settings(cfg: DictConfig) -> EstimatorSettings:
    """`eval.*` settings of the OPE estimators."""
    return EstimatorSettings(clip=cfg.eval.clip, switch_threshold=cfg.eval.switch_threshold,
                             dros_lambda=cfg.eval.dros_lambda)
