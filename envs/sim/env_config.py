"""PushEnvConfig (the simulator's knobs) and Shop (the data it runs on), both validated.

A `Shop` bundles what the simulated shop is made of:
    response: a `ResponseFunction` (A promotions, contexts of width d),
    contexts (n_pool, d) float64: the pool of encoded user contexts users are drawn from,
    categories (A,) int64: category code of each promotion (for novelty/diversity),
    action_ids (A,): the catalogue ids of the promotions (for `allowed_promotions`).
`default_shop()` builds a small synthetic one from `TrueResponse` (with the truth's churn:
`has_unsubscribe`, `unsubscribe_probability`, `unsubscribe_probability_rows`, the optional protocol of
`pushrl.envs.model.response`, so a shop whose truth has churn unsubscribes by the truth's own rule).

`PushEnvConfig.objective` says what a step pays, in the response's own reward names (none is
special): one reward, a mapping {reward: weight}, or a `pushrl.envs.objectives.Objective`
(its terms, and its cost per pushed action); `objective_terms` turns any of them into
({reward: weight}, cost per catalogue action).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np

from pushrl.envs.data.synthetic import SyntheticConfig, make_truth
from pushrl.envs.model.response import ResponseFunction, TrueResponse, truth_contexts
from pushrl.envs.objectives import Objective
from pushrl.envs.sim.registration import DEFAULT_HORIZON

FATIGUE_MODES = ("auto", "response", "multiplicative")
CHURN_MODES = ("auto", "response", "rule")
EnvObjective = str | Mapping[str, float] | Objective | None
"""What PushEnvConfig.objective accepts (see `objective_terms`)."""


@dataclass(frozen=True)
class PushEnvConfig:
    """The push simulator's dynamics and reward. One step is one day (one push opportunity).

    Reward of a step = objective (Σ_r weight_r × sampled outcome r of the day − the objective's cost
        of each pushed action; a day without a push pays the no-push action's outcomes, if declared)
        + diversity_weight × Σ category novelty of the pushed items
        - push_cost × [a push was sent] - unsubscribe_penalty × [the user unsubscribed].
    """

    objective: EnvObjective = None
    """What a day pays, in the response's reward names: a reward name (weight 1), a mapping
    {reward: weight}, or an `Objective` (its `terms` and per-action `costs`); None: the response's
    first reward."""
    no_push_action: Any = None
    """The catalogue id of the log's "push nothing" action (e.g. Hillstrom's "No E-Mail"), or None.
    It is never pushable; a user not pushed on a day (push nothing, or a push refused by the cap)
    gets the outcomes the response predicts for it (organic ones). None: not pushing earns 0."""
    diversity_weight: float = 0.0
    """λ >= 0: weight of the category-novelty term (novelty = 1 / (1 + decayed count of the category))."""
    push_cost: float = 0.0
    """Cost (>= 0) subtracted for every push message sent (a slate is one message)."""
    unsubscribe_penalty: float = 1.0
    """Penalty (>= 0) subtracted when the user unsubscribes (the episode then terminates)."""
    slate_size: int = 1
    """k >= 1 promotions per push message; k = 1 gives Discrete actions, k > 1 MultiDiscrete."""
    horizon: int = DEFAULT_HORIZON
    """Days (>= 1) used to scale `days since last push` in the observation. Episode length itself is
    the TimeLimit's `max_episode_steps` (registered as DEFAULT_HORIZON)."""
    fatigue_window: int = 3
    """Days (>= 1) over which recent pushes are counted for fatigue, churn and the response function
    (the synthetic truth's `fatigue_window_days` is 3)."""
    history_decay: float = 0.8
    """Per-day decay in [0, 1) of the decayed push/response/category counts in the observation."""
    fatigue: str = "auto"
    """"response": the response function sees `recent_pushes` and models fatigue itself;
    "multiplicative": it sees 0 and expected rewards are multiplied by fatigue_factor ** recent_pushes;
    "auto": "response" if the response function's output changes with recent_pushes, else multiplicative."""
    fatigue_factor: float = 0.85
    """Multiplicative fatigue per recent push, in (0, 1] (used only in multiplicative mode)."""
    churn: str = "auto"
    """Where P(unsubscribe | push) comes from. "response": the response function's unsubscribe head
    (`pushrl.envs.model.response.unsubscribe_functions`, e.g. a ResponseModel fitted on a log with an
    unsubscribe column), which sees the user's context, the pushed promotion and the recent pushes;
    "rule": sigmoid(churn_logit + churn_slope × recent); "auto": the head when the response has one, else the rule."""
    churn_logit: float = -5.5
    """Logit of the unsubscribe probability of a push to a user with no recent pushes (the churn rule)."""
    churn_slope: float = 0.4
    """Increase (>= 0) of that logit per push in the fatigue window: p = sigmoid(logit + slope × recent) (the rule)."""
    frequency_cap: int | None = 3
    """At most this many pushes (>= 1) in any `cap_window` consecutive days; a push over the cap is
    refused (no push). None: no cap."""
    cap_window: int = 7
    """Days (>= 1) of the frequency-cap window."""
    allowed_promotions: tuple[Any, ...] | None = None
    """Catalogue ids the agent may push (env action i pushes allowed_promotions[i]); None: all but
    the no-push action."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "objective", _check_objective(self.objective))
        if self.fatigue not in FATIGUE_MODES:
            raise ValueError(f"PushEnvConfig.fatigue must be one of {FATIGUE_MODES}, got {self.fatigue!r}")
        if self.churn not in CHURN_MODES:
            raise ValueError(f"PushEnvConfig.churn must be one of {CHURN_MODES}, got {self.churn!r}")
        _check_number("diversity_weight", self.diversity_weight, 0.0, None, "λ >= 0")
        _check_number("push_cost", self.push_cost, 0.0, None, ">= 0")
        _check_number("unsubscribe_penalty", self.unsubscribe_penalty, 0.0, None, ">= 0")
        _check_number("churn_logit", self.churn_logit, None, None, "a finite number")
        _check_number("churn_slope", self.churn_slope, 0.0, None, ">= 0")
        _check_number("history_decay", self.history_decay, 0.0, None, "in [0, 1)")
        if self.history_decay >= 1.0:
            raise ValueError(f"PushEnvConfig.history_decay must be in [0, 1), got {self.history_decay}")
        _check_number("fatigue_factor", self.fatigue_factor, None, None, "in (0, 1]")
        if not 0.0 < self.fatigue_factor <= 1.0:
            raise ValueError(f"PushEnvConfig.fatigue_factor must be in (0, 1], got {self.fatigue_factor}")
        for name in ("slate_size", "horizon", "fatigue_window", "cap_window"):
            _check_int(name, getattr(self, name))
        if self.frequency_cap is not None:
            _check_int("frequency_cap", self.frequency_cap, "an integer >= 1 or None (no cap)")
        if self.allowed_promotions is not None:
            allowed = tuple(self.allowed_promotions)
            if len(allowed) == 0 or len(set(allowed)) != len(allowed):
                raise ValueError(f"PushEnvConfig.allowed_promotions must be None or distinct promotion ids, got {allowed}")
            object.__setattr__(self, "allowed_promotions", allowed)

    @classmethod
    def build(cls, config: PushEnvConfig | dict[str, Any] | None = None, **overrides: Any) -> PushEnvConfig:
        """A config from a PushEnvConfig / mapping / None plus keyword overrides (unknown keys refused)."""
        if not isinstance(config, PushEnvConfig | dict | type(None)):
            raise TypeError(f"config must be a PushEnvConfig, a dict or None, got {type(config).__name__}")
        base = dict(config) if isinstance(config, dict) else _as_dict(config)
        base.update(overrides)
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(base) - set(known))
        if unknown:
            raise ValueError(f"unknown PushEnvConfig key(s) {unknown}; allowed keys: {known}")
        return cls(**base)


def _check_objective(objective: Any) -> EnvObjective:
    """The objective as given (a mapping copied to {str: float}), or ValueError naming what is wrong."""
    if objective is None or isinstance(objective, Objective):
        return objective
    if isinstance(objective, str):
        if not objective:
            raise ValueError("PushEnvConfig.objective must be a reward name, a {reward: weight} mapping, an "
                             "Objective or None, got ''")
        return objective
    if isinstance(objective, Mapping):
        weights = dict(objective)
        bad = {k: v for k, v in weights.items() if not isinstance(k, str) or isinstance(v, bool)
               or not isinstance(v, int | float | np.number) or not math.isfinite(v)}
        if not weights or bad:
            raise ValueError(f"PushEnvConfig.objective as a mapping must be a non-empty {{reward name: finite weight}}, "
                             f"got {weights!r}")
        return {k: float(v) for k, v in weights.items()}
    raise ValueError(f"PushEnvConfig.objective must be a reward name, a {{reward: weight}} mapping, an Objective or "
                     f"None, got {type(objective).__name__}")


def objective_terms(objective: EnvObjective, reward_names: tuple[str, ...],
                    action_ids: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    """({reward: weight}, (A,) cost of pushing each catalogue action) of a PushEnvConfig.objective.

    A day's objective for a user = Σ_r weight_r × outcome_r − cost of each action that produced
    them (the pushed promotions, or the no-push action). Only an `Objective` has costs.
    """
    costs = np.zeros(len(action_ids))
    if objective is None:
        weights = {reward_names[0]: 1.0}
    elif isinstance(objective, str):
        weights = {objective: 1.0}
    elif isinstance(objective, Objective):
        weights = {r: float(w) for r, w in objective.terms.items()}
        costs = np.asarray(objective.cost_vector(np.asarray(action_ids)), dtype=np.float64)
    else:
        weights = dict(objective)
    missing = [r for r in weights if r not in reward_names]
    if missing:
        raise ValueError(f"PushEnvConfig.objective needs reward(s) {missing} but the response function has "
                         f"reward_names {list(reward_names)}")
    return weights, costs


def _as_dict(config: Any) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in fields(config)} if isinstance(config, PushEnvConfig) else {}


def _check_number(name: str, value: Any, low: float | None, high: float | None, allowed: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not math.isfinite(value):
        raise ValueError(f"PushEnvConfig.{name} must be {allowed}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"PushEnvConfig.{name} must be {allowed}, got {value!r}")


def _check_int(name: str, value: Any, allowed: str = "an integer >= 1") -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"PushEnvConfig.{name} must be {allowed}, got {value!r}")


@dataclass(frozen=True, eq=False)
class Shop:
    """The data a push env runs on (see the module docstring for shapes)."""

    response: ResponseFunction
    contexts: np.ndarray
    categories: np.ndarray
    action_ids: np.ndarray

    @classmethod
    def build(
        cls,
        response: ResponseFunction | None = None,
        contexts: np.ndarray | None = None,
        categories: np.ndarray | None = None,
        action_ids: np.ndarray | None = None,
    ) -> Shop:
        """Validate the parts; with no response and no contexts, the default synthetic shop."""
        if response is None and contexts is None:
            if categories is not None or action_ids is not None:
                raise ValueError("categories/action_ids were given without response and contexts; pass all or none")
            return default_shop()
        if response is None or contexts is None:
            raise ValueError(f"pass both response and contexts or neither; got response={'set' if response is not None else None}, "
                             f"contexts={'set' if contexts is not None else None}")
        if not isinstance(response, ResponseFunction):
            raise TypeError(f"response must satisfy ResponseFunction (reward_names, n_actions, predict), got {type(response).__name__}")
        ctx = np.asarray(contexts, dtype=np.float64)
        if ctx.ndim != 2 or ctx.shape[0] == 0 or not np.isfinite(ctx).all():
            raise ValueError(f"contexts must be a finite (n_pool >= 1, d) array, got shape {ctx.shape}")
        a = int(response.n_actions)
        cats = None if categories is None else np.asarray(categories)
        ids = np.asarray(action_ids) if action_ids is not None else np.arange(a if cats is None else len(cats))
        cats = np.arange(len(ids)) if cats is None else cats
        if cats.ndim != 1 or ids.ndim != 1 or len(cats) != len(ids):
            raise ValueError(f"categories {cats.shape} and action_ids {ids.shape} must be 1-D of one length (one per promotion)")
        if len(ids) != a:
            raise ValueError(f"response.n_actions={a} differs from the env's number of promotions "
                             f"(action_ids/categories have {len(ids)})")
        width = response_context_width(response)
        if width is not None and width != ctx.shape[1]:
            raise ValueError(f"response expects contexts of width {width} but the env's contexts have width {ctx.shape[1]}")
        _, codes = np.unique(cats, return_inverse=True)
        return cls(response, ctx, codes.astype(np.int64), ids)

    @property
    def n_actions(self) -> int:
        return len(self.action_ids)

    @property
    def n_categories(self) -> int:
        return int(self.categories.max()) + 1


def response_context_width(response: ResponseFunction) -> int | None:
    """The context width a response function expects, if it says (None: unknown, probed later)."""
    if isinstance(response, TrueResponse):
        c = response.truth.config
        return c.n_user_features + c.n_segments
    for attr in ("n_context_features", "context_dim", "n_features", "input_dim"):
        value = getattr(response, attr, None)
        if isinstance(value, int | np.integer) and not isinstance(value, bool):
            return int(value)
    encoder = getattr(response, "encoder", None)
    if encoder is not None and isinstance(getattr(encoder, "n_features", None), int | np.integer):
        return int(encoder.n_features)
    return None


@lru_cache(maxsize=4)
def default_shop(seed: int = 0, n_users: int = 1_000, n_actions: int = 10) -> Shop:
    """A small synthetic shop: TrueResponse over `make_truth`, all its users as the context pool."""
    truth = make_truth(SyntheticConfig(n_users=n_users, n_actions=n_actions, seed=seed))
    ids = np.arange(n_actions)
    return Shop(TrueResponse(truth), truth_contexts(truth), truth.action_category.astype(np.int64), ids)
