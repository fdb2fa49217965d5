"""Typed schema of every Hydra config (registered in Hydra's ConfigStore).

A mistyped key or a value of the wrong type fails at composition, before any
work starts, with Hydra's error naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

COMMANDS = ("run", "describe", "evaluate")


@dataclass
class DataConfig:
    """Which log to use. kind: obd | hillstrom | synthetic | file."""

    kind: str = "obd"
    name: str = "obd_all"
    campaign: str = "all"  # obd: all | men | women
    path: str | None = None  # file (or hillstrom override)
    catalogue: str | None = None  # file: promotion catalogue (id column = `action`)
    action: str = "action"
    propensity: str | None = "propensity"
    rewards: list[str] = field(default_factory=lambda: ["click"])
    optional_rewards: list[str] = field(default_factory=lambda: ["conversion", "revenue"])
    timestamp: str | None = "timestamp"
    user_id: str | None = "user_id"
    position: str | None = "position"
    n_positions: int | None = None
    # synthetic only
    n_rows: int = 20_000
    n_users: int = 2_000
    n_actions: int = 10
    logging: str = "uniform"
    logging_temperature: float = 1.0
    seed: int = 0


@dataclass
class SplitConfig:
    """Train/validation/test fractions (time split if the log has timestamps)."""

    fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    seed: int = 0


@dataclass
class ObjectiveConfig:
    """What the agents maximise: a logged reward, plus λ × diversity."""

    reward: str = "click"
    diversity_lambda: float = 0.0


@dataclass
class EvalConfig:
    """Offline evaluation settings."""

    split: str = "test"  # test | all
    n_bootstrap: int = 200
    alpha: float = 0.05


@dataclass
class PushrlConfig:
    """The whole experiment. `command` is set by the `pushrl` subcommand."""

    command: str = "run"
    seed: int = 0
    progress: bool = True
    data: DataConfig = MISSING
    split: SplitConfig = field(default_factory=SplitConfig)
    objective: ObjectiveConfig = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    extra: dict[str, Any] = field(default_factory=dict)


def register_configs() -> None:
    """Store the schema so `configs/config.yaml` can extend it."""
    cs = ConfigStore.instance()
    cs.store(name="pushrl_schema", node=PushrlConfig)
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="objective", name="objective_schema", node=ObjectiveConfig)
