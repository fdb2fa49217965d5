"""The context the stages of `pushrl run` share on one dataset (`DatasetRun`), and how it is set up from
config: the objective, the no-push action, the logging regime and the guardrails, every option checked
against the log before any model is fitted."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from pushrl.agents.training import TrainedAgent
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.propensity import PropensityEstimate
from pushrl.envs.data.regime import LoggingRegime, classify_regime
from pushrl.envs.data.split import Split
from pushrl.envs.model.response_model import ResponseModel
from pushrl.envs.objectives import Objective, find_no_push, make_objective, money_reward
from pushrl.experiments.outputs import RunFolder
from pushrl.policies.degenerate import mean_tv_distance
from pushrl.policies.evaluation import PolicyEvaluation
from pushrl.policies.ope.identification import Identification, identification
from pushrl.policies.policy import to_action_dist
from pushrl.policies.ship import LOGGING, ShipDecision, make_guardrails

DUPLICATE_TV = 0.01
"""Mean total-variation distance at or below which two policies count as the same one."""


@dataclass(frozen=True)
class LoadedLog:
    """A loaded, validated and split log, with its propensity estimate when `data.propensity=estimate`."""

    data: LoggedData
    truth: Any  # the synthetic ground truth (None for a real log)
    split: Split
    propensity_estimate: PropensityEstimate | None = None

    def logging_probabilities(self, rows: np.ndarray) -> np.ndarray | None:
        """(len(rows), A) estimated logging probabilities of every action on rows of `data` (None: logged)."""
        est = self.propensity_estimate
        return None if est is None else est.probabilities[est.kept][rows]


@dataclass
class DatasetResult:
    name: str
    objective: str
    chosen: str
    evaluations: dict[str, PolicyEvaluation]
    simulator: pd.DataFrame


@dataclass
class DatasetRun:
    """Everything the stages of one dataset share; each stage fills in its part."""

    cfg: DictConfig
    log: LoadedLog
    key: str
    run: RunFolder
    say: Any
    objective: Objective
    no_push: Any
    regime: LoggingRegime
    uniform_logging: np.ndarray | None  # (A,) when the log is uniform-random (the exact logging policy)
    guardrails: tuple = ()
    model: ResponseModel | None = None
    refits: Any = None  # BootstrapRefits behind the model-based intervals (None: eval.model_refits=0)
    report: Any = None
    reward_reports: dict[str, Any] = field(default_factory=dict)  # further rewards: ModelReport or amount metrics
    x_test: np.ndarray | None = None
    recent_test: np.ndarray | None = None
    pred_test: dict[str, np.ndarray] = field(default_factory=dict)
    fidelity: pd.DataFrame | None = None
    agents: dict[str, TrainedAgent] = field(default_factory=dict)
    f_train: np.ndarray | None = None
    f_test: np.ndarray | None = None
    catalogue_spec: Any = None
    x_train: np.ndarray | None = None
    has_curves: bool = False
    recommended: str = "dm"
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)  # policy -> (n_test, A) as served
    identified: dict[str, bool] = field(default_factory=dict)
    why_not_identified: dict[str, str] = field(default_factory=dict)
    evaluations: dict[str, PolicyEvaluation] = field(default_factory=dict)  # the objective
    reward_evaluations: dict[str, dict[str, PolicyEvaluation]] = field(default_factory=dict)  # reward -> policy -> eval
    simulator: pd.DataFrame | None = None
    decision: ShipDecision | None = None
    artifacts: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # lines the ship section states (what was skipped and why)

    @property
    def data(self) -> LoggedData:
        return self.log.data

    @property
    def split(self) -> Split:
        return self.log.split

    @property
    def truth(self) -> Any:
        return self.log.truth

    @property
    def test_rows(self) -> np.ndarray:
        """Row indices of the test split in the log."""
        return self.split.rows[2]

    @property
    def out_dir(self) -> Path:
        return self.run.path(self.key)

    @property
    def chosen(self) -> str:
        return self.decision.chosen if self.decision else LOGGING

    def identification(self, probabilities: np.ndarray) -> Identification:
        """Whether the IPS family identifies the value of a policy with test-row probabilities (n_test, A)."""
        return identification(self.regime, to_action_dist(probabilities, self.data.n_positions),
                              self.log.logging_probabilities(self.test_rows))

    @property
    def best_learned(self) -> str | None:
        """The learned agent with the best objective estimate; one that duplicates the shipped policy (mean total
        variation distance <= 0.01 on the test rows) is passed over for the next one."""
        ranked = sorted(self.evaluations.values(), key=lambda e: estimate(e, self.recommended).value, reverse=True)
        chosen = self.probabilities.get(self.chosen)
        for e in ranked:
            if e.policy not in self.agents or self.agents[e.policy].kind == "baseline":
                continue
            if e.policy != self.chosen and chosen is not None and \
                    mean_tv_distance(self.probabilities[e.policy], chosen) <= DUPLICATE_TV:
                continue
            return e.policy
        return None


def estimate(e: PolicyEvaluation, estimator: str):
    """The Interval of `estimator` (DM where the IPS family is not identified)."""
    return e.estimates[estimator] if estimator in e.estimates else e.estimates["dm"]


def declared_no_push(cfg: DictConfig, data: LoggedData):
    """`data.no_push_action` as the log's action id (None when not declared); refused by name if not an action."""
    wanted = cfg.data.get("no_push_action")
    return None if wanted is None else data.action_ids.tolist()[find_no_push(data.action_ids, wanted)]


def resolve_objective(cfg: DictConfig, data: LoggedData, default: str) -> Objective:
    """The objective for this log ('auto' = the dataset's default); refuses rewards the log does not declare."""
    co = cfg.objective
    name = co.reward if co.reward != "auto" else default
    declared = list(data.reward_names)
    no_push = declared_no_push(cfg, data)
    if name == "profit":
        money = money_reward(data, co.get("money"))
        if money is None:
            raise ValueError(f"objective.reward=profit needs one money reward: set objective.money to one of {declared}")
        return make_objective("profit", data.action_ids, margin=co.margin, push_cost=co.push_cost,
                              no_push_action=no_push, money=money)
    if name == "weighted":
        weights = dict(co.weights or {})
        unknown = [r for r in weights if r not in declared]
        if unknown:
            raise ValueError(f"objective.weights names {unknown}, which are not declared rewards; declared: {declared}")
        return make_objective("weighted", data.action_ids, push_cost=co.push_cost, no_push_action=no_push,
                              weights=weights)
    if name not in declared:
        raise ValueError(f"objective.reward={name!r} is not a declared reward of {data.name}; declared: {declared} "
                         "(or profit / weighted)")
    return make_objective(name, data.action_ids)


def uniform_logging(data: LoggedData) -> np.ndarray | None:
    """(A,) the logging distribution when the log is uniform-random over its actions, else None."""
    p = data.pscore
    if p is not None and np.allclose(p, 1.0 / data.n_actions):
        return np.full(data.n_actions, 1.0 / data.n_actions)
    return None


def dataset_run(cfg: DictConfig, log: LoadedLog, default_objective: str, run: RunFolder, key: str, say
                ) -> DatasetRun:
    """The context the stages share, with every option checked against the log (before any model is fitted)."""
    data = log.data
    return DatasetRun(cfg=cfg, log=log, key=key, run=run, say=say,
                      objective=resolve_objective(cfg, data, default_objective), no_push=declared_no_push(cfg, data),
                      regime=classify_regime(data), uniform_logging=uniform_logging(data),
                      guardrails=make_guardrails(cfg.objective.get("guardrails"), list(data.reward_names)))
