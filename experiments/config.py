"""Typed schema of every Hydra config (registered in Hydra's ConfigStore).

A mistyped key or a value of the wrong type fails at composition, before any
work starts, with Hydra's error naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from pushrl.agents.sequential_config import SequentialConfig
from pushrl.envs.data.propensity import PropensityConfig
from pushrl.envs.model.response_config import ResponseModelConfig
from pushrl.policies.evaluation import EstimatorSettings

COMMANDS = ("run", "fit", "train", "export", "describe", "evaluate")


@dataclass
class DataConfig:
    """Which log to use. kind: obd | hillstrom | synthetic | file."""

    kind: str = "obd"
    name: str = "obd_all"
    campaign: str = "all"  # obd: all | men | women
    path: str | None = None  # file (or hillstrom override)
    catalogue: str | None = None  # file: promotion catalogue (id column = `action`)
    action: str = "action"
    propensity: str | None = "propensity"  # the column, or "estimate" (cross-fitted, calibrated estimates)
    rewards: list[str] = field(default_factory=lambda: ["click"])
    optional_rewards: list[str] = field(default_factory=lambda: ["conversion", "revenue"])
    timestamp: str | None = "timestamp"
    user_id: str | None = "user_id"
    position: str | None = "position"
    unsubscribe: str | None = "unsubscribe"  # 0/1 outcome column (the response model's churn head; not a reward), None: off
    n_positions: int | None = None
    features: list[str] | None = None  # allow-list of context columns (None: every column without a role)
    exclude: list[str] = field(default_factory=list)  # columns to ignore entirely
    categorical: list[str] = field(default_factory=list)  # columns read as categories (e.g. integer store ids)
    reward_chain: list[str] = field(default_factory=list)  # e.g. [click, conversion]: each modelled given the one before
    no_push_action: str | None = None  # the action id that means "push nothing" (Hillstrom: "No E-Mail")
    default_objective: str = "click"  # what `objective=auto` optimises on this log
    # auto: with user_id, timestamp and repeat users (and no `recent_pushes` column of its own), derive each
    # user's push history before every row (pushrl.envs.data.history); `recent_pushes` feeds the response model's
    # fatigue input, the rest is summarised in the report (not a context feature). off: never.
    history: str = "auto"
    history_half_life_days: float = 7.0  # half-life of the decayed past response rate in the history summary
    # synthetic only
    n_rows: int = 20_000
    n_users: int = 2_000
    n_actions: int = 10
    logging: str = "uniform"  # uniform | softmax | epsilon_greedy | deterministic | business_rule | rule
    logging_temperature: float = 1.0
    no_push: bool = False  # the last promotion is a no-push action (no click; organic purchases still happen)
    organic_conversion: float = 0.0  # scale of purchases without a click, pushed or not
    readable_promotions: bool = False  # promotion ids like discount15_email / no_push, with discount, category, channel
    days: float = 28.0  # the log's time span (rows per user per day = n_rows / n_users / days)
    fatigue: float = 0.15  # the true click logit falls by this per push in the last 3 days
    churn_logit: float | None = None  # P(unsubscribe | push) = sigmoid(churn_logit + churn_slope r + churn_context u0); None: off
    churn_slope: float = 0.0
    churn_context: float = 0.0
    keep_sending: float = 0.0  # share of unsubscribing users whose later rows stay in the log
    seed: int = 0


@dataclass
class SplitConfig:
    """Train/validation/test fractions (time split if the log has timestamps)."""

    fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    seed: int = 0


@dataclass
class ObjectiveConfig:
    """What the agents maximise: a logged reward (or profit). (Diversity is weighed in the sequential
    simulator's reward: `sequential.diversity_weight`, set by the env group.)

    reward: auto (the dataset's default) | any declared reward of the log | profit | weighted.
    profit = margin × money − push_cost per push (`data.no_push_action` costs nothing); money is
    `objective.money`, or the log's one non-binary reward.
    weighted = Σ weights[r] × r − push_cost per push, over declared rewards r.
    guardrails: {reward: margin}: the ship rule also requires the reward's CI lower bound to stay
    at most `margin` (a share, 0.02 = 2%) below the logging policy's value.
    """

    reward: str = "auto"
    margin: float = 0.30
    push_cost: float = 0.10
    money: str | None = None
    weights: dict[str, float] = field(default_factory=dict)
    guardrails: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """How agents learn: offline on the training log, then online in the simulator."""

    online_rounds: int = 20_000
    batch_size: int = 500
    simulator: str = "model"  # model (the learned response) | truth (synthetic data only: regret vs the oracle)


@dataclass(frozen=True)
class EvalConfig(EstimatorSettings):
    """Offline evaluation settings.

    `clip`, `switch_threshold` and `dros_lambda` are the estimators' own (inherited from
    pushrl.policies.evaluation.EstimatorSettings, so they come first).
    """

    split: str = "test"  # test | all
    n_bootstrap: int = 2000  # Poisson bootstrap resamples (cheap; 200 under-covered small-ESS SNDR intervals)
    alpha: float = 0.05
    recommended: str = "auto"  # auto: chosen by a synthetic study shaped like the log (experiments/selection.py)
    selection_seeds: int = 30
    reward_model: str = "mean"  # DM/DR regression, cross-fitted: mean (per action x position) | response_model
    n_folds: int = 5
    model_refits: int = 8  # bootstrap refits of the response model behind the DM and simulator intervals (0: none)


@dataclass
class AbTestConfig:
    """How the report plans and simulates the online test of the chosen policy."""

    traffic_per_day: int = 10_000
    alpha: float = 0.05
    power: float = 0.8
    allocation: float = 0.5
    default_lift: float = 0.10  # planned when OPE shows no positive lift
    n_experiments: int = 1000


@dataclass
class PolicyConfig:
    """The policy `pushrl evaluate` evaluates.

    kind: artifact (an exported artifact folder) | external (a file of action probabilities: .npy in the Open Bandit
    Pipeline's action_dist layout, or a long-form .parquet/.csv with columns
    row, action, position, probability) | uniform | always (one action id).
    """

    kind: str = "uniform"
    path: str | None = None
    action: str | None = None  # kind=always: the action id
    name: str | None = None


@dataclass
class ExportConfig:
    """`pushrl export`: re-export a saved agent of an earlier run (its dataset folder)."""

    run_dir: str | None = None  # e.g. outputs/run/<date>/<time>/hillstrom
    agent: str | None = None  # e.g. linucb


@dataclass
class PushrlConfig:
    """The whole experiment. `command` is set by the `pushrl` subcommand."""

    command: str = "run"
    seed: int = 0
    progress: bool = True
    data: DataConfig = MISSING
    also: list[str] = field(default_factory=list)  # more embedded datasets `run` covers (data config names)
    demos: bool | None = None  # the synthetic-truth and cold-start demonstrations (None: on unless data.kind=file)
    skip: list[str] = field(default_factory=list)  # stages of `pushrl run` to skip by name (see SKIPPABLE_STAGES)
    split: SplitConfig = field(default_factory=SplitConfig)
    objective: ObjectiveConfig = MISSING
    # the library's own settings; configs/config.yaml points their seed (and the model's reward_chain, progress)
    # at the run's
    model: ResponseModelConfig = field(default_factory=ResponseModelConfig)
    propensity_model: PropensityConfig = field(default_factory=PropensityConfig)
    agents: dict[str, Any] = field(default_factory=dict)  # agent name -> hyperparameters
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    policy: PolicyConfig = MISSING
    abtest: AbTestConfig = field(default_factory=AbTestConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    sequential: SequentialConfig = field(default_factory=SequentialConfig)  # the `env` group sets it


def _schema_node() -> DictConfig:
    """PushrlConfig as a typed node; the frozen library dataclasses stay typed (closed) but writable, so the
    config files and overrides can set them (their own validation runs when the builders construct them)."""
    node = OmegaConf.structured(PushrlConfig)
    for key in ("model", "propensity_model", "eval"):
        OmegaConf.set_readonly(node[key], False)
    return node


def register_configs() -> None:
    """Store the schema so `configs/config.yaml` can extend it."""
    cs = ConfigStore.instance()
    cs.store(name="pushrl_schema", node=_schema_node())
    cs.store(group="data", name="data_schema", node=DataConfig)
    cs.store(group="objective", name="objective_schema", node=ObjectiveConfig)
    cs.store(group="policy", name="policy_schema", node=PolicyConfig)
