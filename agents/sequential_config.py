"""SequentialConfig: the settings of the when-to-push study (PPO vs bandits with fatigue and churn, the λ sweep).

It is the Hydra node `sequential:` of `pushrl run` (PushrlConfig.sequential) and what
`pushrl.envs.sim.world.build_world`, `pushrl.agents.observation_bandit.train_bandit` and
`pushrl.agents.timing_study` read; `as_sequential_config` validates any other form of it. No torch
or SB3 at import, so the typed Hydra schema can use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class SequentialConfig:
    """The sequential section of `pushrl run` (PushrlConfig.sequential). Defaults keep it near a minute.

    Costs and λ are in average pushes (`pushrl.envs.sim.world`).
    """

    enabled: bool = True
    """Run the section at all."""
    n_users: int = 5_000
    """Pool size: simulated users are drawn from this many training users (all if fewer)."""
    horizon: int = 30
    """Days per user episode (one push opportunity a day)."""
    ppo_timesteps: int = 100_000
    """Training budget of each RL agent (PPO, DQN, A2C) in user-days (summed over the n_envs users)."""
    rl_agents: list[str] = field(default_factory=lambda: ["ppo", "dqn", "a2c"])
    """The RL agents trained (each decides when to push; the greedy picks which: `pushrl.agents.timing_rl`)."""
    rl_gamma: float = 0.97
    """Discount of the RL agents (docs/RL_TIMING.md: 0.99 collapsed PPO onto never push on OBD)."""
    n_envs: int = 64
    """Users PPO steps together."""
    ppo_learning_rate: float = 1e-3
    """PPO's Adam step size."""
    ppo_n_steps: int = 32
    """Days each of the n_envs users is stepped per PPO rollout (32: about one episode)."""
    ppo_ent_coef: float = 0.0
    """PPO's entropy bonus (0: with two actions and expected rewards PPO explores enough; docs/RL_TIMING.md)."""
    ppo_curve_points: int = 5
    """Learning-curve evaluations during PPO training (each 512 users x 3 seeds)."""
    bandits: dict[str, Any] = field(default_factory=lambda: {"linucb": {"alpha": 0.5}, "epsilon_greedy": {"epsilon": 0.1}})
    """Bandits compared with PPO: name (pushrl.agents.bandits.BANDITS) -> hyperparameters."""
    bandit_days: int = 90
    """Online learning steps (days) of each bandit, bandit_users users a day."""
    bandit_users: int = 256
    """Users a bandit decides for each online day."""
    bandit_context_dims: int = 16
    """Bandits see the top principal components of the user context (this many), the history part of
    the observation and an intercept; the full ~110-wide OBD context makes LinUCB 30x slower."""
    eval_users: int = 1_000
    """Users per evaluation seed (the same users and seeds for every agent)."""
    eval_seeds: int = 10
    """Evaluation seeds; CIs are 95% t-intervals over seeds (>= 2)."""
    spacing_rules: bool = True
    """Also evaluate `greedy_spaced_k`: the myopic greedy, but pushing only to users with at most k
    pushes in the last fatigue_window days (k = 0 .. fatigue_window - 1): does spacing pay here at all?"""
    fatigue_factor: float = 0.85
    """Multiplicative fatigue per push in the last fatigue_window days (used when the response model
    does not react to recent pushes itself, as models fitted on OBD and Hillstrom do not)."""
    fatigue_window: int = 3
    """Days over which recent pushes count for fatigue and churn."""
    churn_logit: float = -5.5
    """Logit of the unsubscribe probability of a push to a rested user."""
    churn_slope: float = 0.4
    """Increase of that logit per recent push."""
    frequency_cap: int | None = None
    """At most this many pushes per 7 days (None: no cap, so whether to space pushes is the agents' call)."""
    unsubscribe_cost: float = 30.0
    """Reward lost when a user unsubscribes, in average pushes."""
    push_cost: float = 0.0
    """Cost of each push message, in average pushes."""
    diversity_weight: float = 0.0
    """λ of the main comparison (PPO, bandits, baselines), in average pushes."""
    lambdas: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0, 4.0])
    """λ values of the accuracy–diversity sweep, in average pushes."""
    pareto_agents: list[str] = field(default_factory=lambda: ["greedy"])
    """Agents of the sweep: "greedy" (λ-weighted myopic re-ranker, no training) and/or bandit names
    (each learns online with λ x novelty in its reward; costs bandit_days per λ)."""
    sensitivity_fatigue: list[float] = field(default_factory=lambda: [0.7, 0.85, 1.0])
    """fatigue_factor values of the sensitivity table (run when the log cannot identify fatigue)."""
    sensitivity_churn_logit: list[float] = field(default_factory=lambda: [-6.5, -5.5, -4.5])
    """churn_logit values of the sensitivity table (run when the log cannot identify churn)."""
    sensitivity_seeds: int = 3
    """Seeds per cell of the sensitivity table (its agents need no training: the baselines and spacing rules)."""

    def __post_init__(self) -> None:
        for name in ("sensitivity_fatigue", "sensitivity_churn_logit"):
            values = list(getattr(self, name))
            if not values or any(isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v)
                                 for v in values):
                raise ValueError(f"SequentialConfig.{name} must be a non-empty list of finite numbers, got {values!r}")
            setattr(self, name, [float(v) for v in values])
        if any(not 0 < v <= 1 for v in self.sensitivity_fatigue):
            raise ValueError(f"SequentialConfig.sensitivity_fatigue values must be in (0, 1], got {self.sensitivity_fatigue}")
        for name, low in (("n_users", 1), ("horizon", 1), ("ppo_timesteps", 1), ("n_envs", 1), ("ppo_n_steps", 1), ("ppo_curve_points", 0),
                          ("bandit_days", 1), ("bandit_users", 1), ("bandit_context_dims", 1), ("eval_users", 1),
                          ("eval_seeds", 2), ("fatigue_window", 1), ("sensitivity_seeds", 2)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < low:
                raise ValueError(f"SequentialConfig.{name} must be an integer >= {low}, got {v!r}")
        if self.frequency_cap is not None and (isinstance(self.frequency_cap, bool) or self.frequency_cap < 1):
            raise ValueError(f"SequentialConfig.frequency_cap must be None or an integer >= 1, got {self.frequency_cap!r}")
        for name in ("ppo_learning_rate", "ppo_ent_coef", "fatigue_factor", "churn_logit", "churn_slope",
                     "unsubscribe_cost", "push_cost", "diversity_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v):
                raise ValueError(f"SequentialConfig.{name} must be a finite number, got {v!r}")
        if self.ppo_learning_rate <= 0 or not 0 < self.fatigue_factor <= 1:
            raise ValueError(f"SequentialConfig: ppo_learning_rate must be > 0 and fatigue_factor in (0, 1], got "
                             f"{self.ppo_learning_rate} and {self.fatigue_factor}")
        for name in ("ppo_ent_coef", "churn_slope", "unsubscribe_cost", "push_cost", "diversity_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"SequentialConfig.{name} must be >= 0, got {getattr(self, name)}")
        bad_rl = sorted(set(self.rl_agents) - {"ppo", "dqn", "a2c"})
        if bad_rl or "ppo" not in self.rl_agents:
            raise ValueError(f"SequentialConfig.rl_agents must name ppo and optionally dqn, a2c, got {list(self.rl_agents)}")
        self.rl_agents = list(self.rl_agents)
        if isinstance(self.rl_gamma, bool) or not isinstance(self.rl_gamma, int | float) or not 0 < self.rl_gamma <= 1:
            raise ValueError(f"SequentialConfig.rl_gamma must be in (0, 1], got {self.rl_gamma!r}")
        lams = list(self.lambdas)
        if not lams or any(isinstance(v, bool) or not isinstance(v, int | float) or not np.isfinite(v) or v < 0 for v in lams):
            raise ValueError(f"SequentialConfig.lambdas must be a non-empty list of numbers >= 0, got {lams}")
        self.lambdas = [float(v) for v in lams]
        from pushrl.agents.bandits import BANDITS

        # the env's observation carries no promotion features: shared-feature bandits have nothing to share
        usable = sorted(set(BANDITS) - {"linucb_shared", "lints_shared"})
        bandits = dict(self.bandits or {})
        unknown = sorted(set(bandits) - set(usable))
        if unknown:
            raise ValueError(f"SequentialConfig.bandits has unknown bandit(s) {unknown}; allowed: {usable}")
        self.bandits = {k: dict(v or {}) for k, v in bandits.items()}
        bad = sorted(set(self.pareto_agents) - {"greedy", *usable})
        if bad or not self.pareto_agents:
            raise ValueError(f"SequentialConfig.pareto_agents must name one or more of {['greedy', *usable]}, got "
                             f"{list(self.pareto_agents)}")
        self.pareto_agents = list(self.pareto_agents)


def as_sequential_config(cfg: Any) -> SequentialConfig:
    """A validated SequentialConfig from a SequentialConfig, a mapping of its fields (a resolved Hydra node) or
    None (defaults). Unknown keys are refused by name."""
    if isinstance(cfg, SequentialConfig):
        return SequentialConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})
    if cfg is None:
        return SequentialConfig()
    if not isinstance(cfg, Mapping):
        raise TypeError(f"cfg_seq must be a SequentialConfig, a DictConfig or a mapping, got {type(cfg).__name__}")
    known = {f.name for f in dataclasses.fields(SequentialConfig)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"unknown sequential config key(s) {unknown}; allowed: {sorted(known)}")
    return SequentialConfig(**dict(cfg))
