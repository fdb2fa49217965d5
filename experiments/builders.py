"""Library objects built from the Hydra config: one helper per object, used by every command.

`model:` and `propensity_model:` are the library's own dataclasses (experiments/config.py), so a node becomes its
object by `OmegaConf.to_object`, which runs the dataclass's validation; `eval:` extends `EstimatorSettings`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from pushrl.envs.data.propensity import PropensityConfig
from pushrl.envs.model.response_config import ResponseModelConfig
from pushrl.policies.evaluation import EstimatorSettings

T = TypeVar("T")


def _library_object(cfg: DictConfig, key: str, cls: type[T]) -> T:
    """The dataclass `cls` from the (resolved) node `cfg[key]`; the dataclass validates every field.

    A key the dataclass lacks (only `+key=...` can add one) is refused by name.
    """
    values: dict[str, Any] = OmegaConf.to_container(cfg[key], resolve=True)  # type: ignore[assignment]
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})  # type: ignore[arg-type]
    if unknown:
        raise ValueError(f"{key}.{unknown[0]}: not a setting of {cls.__name__} (one of "
                         f"{[f.name for f in dataclasses.fields(cls)]})")  # type: ignore[arg-type]
    return cls(**values)


def response_model_config(cfg: DictConfig, progress: bool | None = None, epochs: int | None = None) -> ResponseModelConfig:
    """`model.*` (whose `seed`, `reward_chain`, `progress` follow the run's `seed`, `data.reward_chain`, `progress`
    in configs/config.yaml); `progress` and `epochs` override."""
    config = _library_object(cfg, "model", ResponseModelConfig)
    changes: dict[str, Any] = {}
    if progress is not None:
        changes["progress"] = bool(progress)
    if epochs is not None:
        changes["epochs"] = int(epochs)
    return dataclasses.replace(config, **changes) if changes else config


def propensity_config(cfg: DictConfig) -> PropensityConfig:
    """`propensity_model.*` (its `seed` is the run's, set in configs/config.yaml)."""
    return _library_object(cfg, "propensity_model", PropensityConfig)


def estimator_settings(cfg: DictConfig) -> EstimatorSettings:
    """The `EstimatorSettings` fields of `eval.*` (`EvalConfig` extends it)."""
    return EstimatorSettings(**{f.name: cfg.eval[f.name] for f in dataclasses.fields(EstimatorSettings)})
