"""World: the simulated shop over a fitted response model, with its costs in *average pushes*.

`build_world(settings, model, pool_contexts, ...)` draws a pool of users, builds the `Shop` and a
`PushEnvConfig`, and converts the settings' costs and λ from average pushes into the objective's
own units. The simulator pays the objective (`Objective`: any declared reward, profit or a
weighted combination, with its cost per pushed action) in the response model's reward names; the
log's no-push action (`no_push_action`, e.g. Hillstrom's "No E-Mail") is its push-nothing action,
which earns the organic outcomes the model predicts for it.

Units. Rewards differ by orders of magnitude between logs (OBD click ≈ 0.004 per push, Hillstrom
spend ≈ 1), so costs and λ are given in average pushes: one unit is the mean expected gross
objective (before push costs) of a fresh push (no recent pushes, display slot 0) over the pool's
users and the pushable promotions. `unsubscribe_cost = 30` means an unsubscribe costs what 30
average pushes earn; λ = 1 makes a never-seen category worth one average push.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pushrl.envs.model.response import ResponseFunction
from pushrl.envs.objectives import Objective
from pushrl.envs.sim.batched_env import BatchedPushEnv
from pushrl.envs.sim.env_config import EnvObjective, PushEnvConfig, Shop
from pushrl.envs.sim.push_env import PushDynamics

CONSTANT_CV = 0.01
"""Coefficient of variation of the expected objective below which the model counts as constant."""
PROBE_USERS = 2_000
"""Pool users the unit and the organic baseline are averaged over."""


class WorldSettings(Protocol):
    """What `build_world` reads (`pushrl.agents.sequential_config.SequentialConfig` has these fields)."""

    n_users: int
    horizon: int
    fatigue_window: int
    fatigue_factor: float
    churn_logit: float
    churn_slope: float
    frequency_cap: int | None
    unsubscribe_cost: float
    push_cost: float
    diversity_weight: float


def objective_label(objective: EnvObjective) -> str:
    """The objective's name: an Objective's own, a reward's name, or "weighted" for a mapping."""
    if isinstance(objective, Objective):
        return objective.name
    return objective if isinstance(objective, str) else "weighted"


def objective_formula(dyn: PushDynamics, label: str) -> str:
    """What a simulated day pays, e.g. "profit = 0.3 × spend − the objective's cost of each push (0.1)"."""
    terms = " + ".join(f"{w:g} × {r}" for r, w in dyn.weights.items()).replace("+ -", "− ")
    text = label if terms in (label, f"1 × {label}") else f"{label} = {terms}"
    costs = dyn.action_costs[dyn.promotion_index]
    if costs.any():
        spread = f"{costs.min():.4g}" if np.ptp(costs) == 0 else f"{costs.min():.4g} to {costs.max():.4g}"
        text += f" − the objective's cost of each push ({spread})"
    return text


@dataclass(eq=False)
class World:
    """The simulated shop: shop, env config (λ of the main comparison, absolute units) and the unit."""

    shop: Shop
    config: PushEnvConfig
    horizon: int
    unit: float
    """Mean expected objective of a fresh push (the 'average push')."""
    notes: list[str]
    no_push_baseline: float | None
    """Mean expected objective of a day without a push (the no-push action's organic outcomes; None without one)."""
    label: str
    """The objective's name (report text)."""
    rewards: tuple[str, ...]
    """The response model's rewards, as the simulator reports them."""
    response_reward: str | None
    """The reward whose pushed rate is `response_rate` (the model's first binary reward; None without one)."""
    objective_costs: bool
    """Whether the objective itself charges for pushes (profit, weighted with costs)."""

    def factory(self, diversity_weight: float | None = None) -> Callable[[int], BatchedPushEnv]:
        """n_users -> BatchedPushEnv (SAME_STEP autoreset), λ (absolute) overriding the main one if given."""
        config = self.config if diversity_weight is None else dataclasses.replace(self.config, diversity_weight=diversity_weight)

        def make(n: int) -> BatchedPushEnv:
            return BatchedPushEnv(n, max_episode_steps=self.horizon, response=self.shop.response,
                                  contexts=self.shop.contexts, categories=self.shop.categories,
                                  action_ids=self.shop.action_ids, config=config)

        return make


def _pool(settings: WorldSettings, pool_contexts: np.ndarray, action_ids: np.ndarray, no_push_action: Any,
          rng: np.random.Generator) -> np.ndarray:
    """The checked pool, subsampled (sorted rows, one rng draw) to settings.n_users users."""
    ids = np.asarray(action_ids).tolist()
    if no_push_action is not None and no_push_action not in ids:
        raise ValueError(f"no_push_action {no_push_action!r} is not one of the log's action ids {ids[:20]}")
    pool = np.asarray(pool_contexts, dtype=np.float64)
    if pool.ndim != 2 or len(pool) == 0:
        raise ValueError(f"pool_contexts must be a non-empty (n_users, d) array, got shape {pool.shape}")
    if len(pool) > settings.n_users:
        pool = pool[np.sort(rng.choice(len(pool), size=settings.n_users, replace=False))]
    return pool


def build_world(settings: WorldSettings, model: ResponseFunction, pool_contexts: np.ndarray, categories: np.ndarray,
                action_ids: np.ndarray, objective: EnvObjective, no_push_action: Any, rng: np.random.Generator) -> World:
    """The shop (a pool of settings.n_users users), the env config in absolute units, and the notes."""
    shop = Shop.build(model, _pool(settings, pool_contexts, action_ids, no_push_action, rng), categories, action_ids)
    s = settings
    base = PushEnvConfig(objective=objective, no_push_action=no_push_action, horizon=s.horizon,
                         fatigue_window=s.fatigue_window, fatigue_factor=s.fatigue_factor,
                         churn_logit=s.churn_logit, churn_slope=s.churn_slope, frequency_cap=s.frequency_cap,
                         unsubscribe_penalty=0.0)
    probe = PushDynamics(base, shop)
    label = objective_label(objective)
    sample = shop.contexts[: min(len(shop.contexts), PROBE_USERS)]
    pushable = probe.expected_values(sample, np.zeros(len(sample)))[:, probe.promotion_index]
    unit = float(pushable.mean())
    if not np.isfinite(unit) or unit <= 0:
        raise ValueError(f"the response model's mean expected {label} per push (before push costs) is {unit}: the "
                         "section's costs and λ are in units of it and need it > 0")
    notes = [f"objective: {objective_formula(probe, label)}", _outcome_note(probe)]
    no_push_baseline = None
    if probe.no_push_item is not None:
        no_push_baseline = float(probe.expected_objective(sample, np.zeros(len(sample)))[:, -1].mean())
        notes.append(f"`{no_push_action}` is the simulator's push-nothing action: a user not pushed on a day earns what "
                     f"the response model predicts for it ({no_push_baseline:.4g} {label} per user-day on average: "
                     "organic outcomes), so `never_push` earns that and a push pays only through its gain over it; "
                     f"it is not a promotion (coverage is over the {probe.n_allowed} pushable ones)")
    if float(pushable.std()) < CONSTANT_CV * unit:
        notes.append(f"the response model predicts (nearly) the same {label} for every user and promotion "
                     f"({unit:.4g}, relative spread {float(pushable.std()) / unit:.1%}; it kept the base rate), so which "
                     "promotion is pushed does not change the outcome here: only whether and when to push does")
    config = dataclasses.replace(base, unsubscribe_penalty=s.unsubscribe_cost * unit, push_cost=s.push_cost * unit,
                                 diversity_weight=s.diversity_weight * unit)
    notes.append("fatigue: the response model reacts to recent pushes itself" if probe.fatigue_mode == "response" else
                 f"fatigue: the response model ignores recent pushes, so a push's expected outcomes are multiplied by "
                 f"{s.fatigue_factor:g}^(pushes in the last {s.fatigue_window} days): an assumption "
                 "(`sequential.fatigue_factor`), not learned from this log")
    notes.append("churn: the response model's unsubscribe head (learned from the log)"
                 if probe.dynamics_source["churn"] == "learned" else
                 f"churn: P(unsubscribe | push) = sigmoid({s.churn_logit:g} + {s.churn_slope:g} x pushes in the last "
                 f"{s.fatigue_window} days): an assumption (`sequential.churn_logit`, `churn_slope`), not learned "
                 "from this log")
    costs = bool(probe.action_costs[probe.promotion_index].any())
    return World(shop, config, s.horizon, unit, notes, no_push_baseline, label, probe.outcomes, probe.response_reward,
                 costs)


def _outcome_note(dyn: PushDynamics) -> str:
    """How the simulator draws each reward (binary: Bernoulli; continuous: its expected value)."""
    if getattr(dyn.response, "reward_kinds", None) is None:
        return ("outcomes: the response model does not say which rewards are binary (`reward_kinds`), so every "
                f"outcome ({', '.join(dyn.outcomes)}) is paid as its expected value")
    binary = [r for r in dyn.outcomes if r in dyn.binary]
    money = [r for r in dyn.outcomes if r not in dyn.binary]
    parts = ([f"{', '.join(binary)} drawn as 0/1 outcomes of the model's probabilities (one shared uniform per "
              "pushed item or organic day, so nested outcomes stay nested)"] if binary else []) + \
            ([f"{', '.join(money)} paid as the model's expected value"] if money else [])
    return "outcomes: " + "; ".join(parts)
