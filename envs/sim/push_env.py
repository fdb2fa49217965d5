"""PushEnv: one user's push opportunities (one per day), and the array dynamics it shares with BatchedPushEnv.

`PushDynamics` steps n users at once as arrays; `PushEnv` is its n = 1 case and
`BatchedPushEnv` its n = num_envs case, so both follow one set of rules:

* Action (k = slate_size): promotion indices 0..n_allowed-1, `n_allowed` = push nothing.
  k = 1: Discrete(n_allowed + 1); k > 1: MultiDiscrete([n_allowed + 1] * k), one entry per
  display position. A promotion repeated in one slate is pushed once (at its first position);
  later copies are dropped and counted in info["n_duplicates"]. A slate is one push message.
  A declared no-push action (`PushEnvConfig.no_push_action`, a catalogue id) is never pushable.
* Frequency cap: at most `frequency_cap` pushes in any `cap_window` consecutive days; a push that
  would break it is refused (treated as no push, info["capped"] = True).
* Response: the response function is called once per step, on the rows (user, slot, promotion) that
  are pushed and, when a no-push action is declared, one row (user, slot 0, no-push action) per user
  not pushed that day, with `recent_pushes` = pushes in the `fatigue_window` days before today.
  The outcomes are the response's rewards, by their own names, none special: a binary reward
  (`pushrl.envs.model.response.reward_kinds`) is a Bernoulli draw of its expected value, a continuous one
  (money) is paid as its expected value. The binary rewards of a row share one uniform draw u
  (outcome r = [u < q_r]): each has its exact marginal, and a less likely outcome happens only
  together with the more likely ones (nested outcomes such as open ⊃ click ⊃ purchase stay nested);
  no reward is assumed conditional on another, so organic purchases are fine. In "multiplicative"
  fatigue mode the response sees recent_pushes = 0 and a push's expected outcomes are multiplied by
  fatigue_factor ** recent (organic outcomes of the no-push action are not).
* Churn: each push unsubscribes with probability p; that ends the episode (terminated) and costs
  `unsubscribe_penalty`. With an unsubscribe head in the response (`PushEnvConfig.churn`, "auto" uses one
  when present: `pushrl.envs.model.response.unsubscribe_functions`), p = the head's P(unsubscribe | push a)
  for the user's context, the pushed promotion a at its slot and recent_pushes (always the real count, in any
  fatigue mode); a slate's p is the mean over its promotions (each logged row of a message records the
  message's unsubscribe). Otherwise the rule p = sigmoid(churn_logit + churn_slope × recent_pushes).
  One uniform draw per pushed user either way. `dynamics_source` says which parts are learned.
* Reward: objective + λ × Σ novelty(pushed items) − push_cost × pushed − unsubscribe_penalty × unsub,
  objective = Σ_r weight_r × outcome_r − the objective's cost of each action of the day's rows
  (`pushrl.envs.sim.env_config.objective_terms`): pushing a earns q(a), not pushing earns q(no-push
  action) when one is declared, else 0.
  Novelty of category c = 1 / (1 + h_c), h_c = decayed count of earlier pushes of c
  (h ← history_decay × h + today's pushes) plus earlier items of c in the same slate;
  `pushrl.envs.sim.diversity.category_novelty` computes the same number from action logs.

Info (arrays (n,) in PushDynamics.step; scalars in PushEnv): one entry per reward of the response,
under its name (the day's outcome: the pushed items' and, on a day without a push, the organic one),
and "objective", "diversity", "pushed", "capped", "unsubscribed", "n_duplicates", "recent_pushes",
"promotions" ((n, k) catalogue indices, -1 = none). Reward names may not be one of RESERVED_NAMES.

Observation (float32, width d + 5 + C, C = number of categories): the fields of
`pushrl.envs.sim.observation.ObservationLayout` (`dynamics.layout`, `env.layout`): the user's encoded
context (bounds: the pool's min and max, ±1 for a constant column), recent_pushes (pushes in the last
`fatigue_window` days), days_since_push (/ horizon, capped at 1), response_rate (decayed pushed outcomes
of the *response reward*, the response's first binary reward, / decayed pushed items; 0 before any
push, or without a binary reward), category_pushes (decayed push count per promotion category) and
cap_hit (1 if a push today would be refused by the frequency cap) and day (days elapsed in the user's
episode / horizon, capped at 1: 0 on a new user's first day, in every autoreset mode).
A new user starts with no history. The episode length is the TimeLimit's `max_episode_steps`.
All randomness comes from the env's `np_random`: the same seed gives the same trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from pushrl.envs.common.probabilities import sigmoid
from pushrl.envs.model.response import ResponseFunction, reward_kinds, unsubscribe_functions
from pushrl.envs.sim.env_config import PushEnvConfig, Shop, objective_terms
from pushrl.envs.sim.observation import ObservationLayout

NEVER = 1e9  # days since last push of a user never pushed
RESERVED_NAMES = ("objective", "diversity", "pushed", "capped", "unsubscribed", "n_duplicates", "recent_pushes",
                  "promotions", "user", "final_obs", "reward", "pushes")
"""Names of the env's own info entries and of the rollout metrics built from them (`reward_per_user`,
`pushes_per_user`, `objective_per_user`): no reward may be called so (nor start with "_", gymnasium's
mask prefix)."""


def observation_names(context_width: int, n_categories: int) -> list[str]:
    """Names of the observation columns, in order (`ObservationLayout.names`)."""
    return ObservationLayout(context_width, n_categories).names()


@dataclass(eq=False)
class UserBatch:
    """The mutable state of n simulated users (see PushDynamics.allocate for shapes)."""

    user: np.ndarray  # (n,) int64 pool row
    context: np.ndarray  # (n, d) float64
    recent: np.ndarray  # (n,) float64 pushes in the fatigue window
    capped_count: np.ndarray  # (n,) float64 pushes in the last cap_window - 1 days
    history: np.ndarray  # (n, W) bool ring buffer of push days, column t % W
    days_since: np.ndarray  # (n,) float64
    decayed_items: np.ndarray  # (n,) float64
    decayed_responses: np.ndarray  # (n,) float64 decayed pushed outcomes of the response reward
    category_counts: np.ndarray  # (n, C) float64
    age: np.ndarray  # (n,) float64 days elapsed in the user's episode
    obs: np.ndarray  # (n, D) float32 observation buffer
    t: int = 0  # global day counter (ring-buffer position)


class PushDynamics:
    """Array dynamics of the push simulator for any number of users (no per-user Python loop)."""

    def __init__(self, config: PushEnvConfig, shop: Shop) -> None:
        self.config, self.shop = config, shop
        self.response: ResponseFunction = shop.response
        ids = shop.action_ids.tolist()
        lookup = {v: i for i, v in enumerate(ids)}
        self.no_push_item = self._no_push_item(config, lookup, ids)
        self.promotion_index = self._promotion_index(config, lookup, ids)
        self.n_allowed = len(self.promotion_index)
        self.k = config.slate_size
        if self.k > self.n_allowed:
            raise ValueError(f"PushEnvConfig.slate_size={self.k} must be <= the number of promotions "
                             f"that may be pushed ({self.n_allowed})")
        self.outcomes: tuple[str, ...] = self._reward_names()
        self.kinds = reward_kinds(self.response)
        self.binary = tuple(r for r in self.outcomes if self.kinds[r] == "binary")
        self.response_reward: str | None = self.binary[0] if self.binary else None
        """The reward whose pushed rate is the observation's response rate (the first binary one)."""
        self.weights, self.action_costs = objective_terms(config.objective, self.outcomes, shop.action_ids)
        self._costly = bool(np.any(self.action_costs != 0))
        # action index -> catalogue index, with "nothing" mapped to 0 (masked out anyway)
        self._promo_of_action = np.append(self.promotion_index, 0)
        self.categories = shop.categories
        self.n_categories = shop.n_categories
        self.d = shop.contexts.shape[1]
        self.window = max(config.fatigue_window, config.cap_window)
        self.fatigue_mode = self._resolve_fatigue()
        self._churn = self._resolve_churn()
        self.layout = ObservationLayout(self.d, self.n_categories)
        """Which observation columns hold what."""
        self.obs_dim = self.layout.width
        self.single_observation_space = self._observation_space()
        self.single_action_space: spaces.Space = (
            spaces.Discrete(self.n_allowed + 1) if self.k == 1
            else spaces.MultiDiscrete(np.full(self.k, self.n_allowed + 1, dtype=np.int64)))

    # construction helpers ---------------------------------------------------------------
    @staticmethod
    def _no_push_item(config: PushEnvConfig, lookup: dict[Any, int], ids: list) -> int | None:
        """Catalogue index of the declared no-push action (None without one)."""
        if config.no_push_action is None:
            return None
        if config.no_push_action not in lookup:
            raise ValueError(f"PushEnvConfig.no_push_action={config.no_push_action!r} is not a promotion id; "
                             f"known ids: {ids[:20]}{' ...' if len(ids) > 20 else ''}")
        return lookup[config.no_push_action]

    def _promotion_index(self, config: PushEnvConfig, lookup: dict[Any, int], ids: list) -> np.ndarray:
        """Catalogue index of each pushable promotion (env action i pushes promotion_index[i])."""
        if config.allowed_promotions is None:
            index = np.array([i for i in range(len(ids)) if i != self.no_push_item], dtype=np.int64)
            if len(index) == 0:
                raise ValueError(f"every promotion is the no-push action {config.no_push_action!r}: nothing to push")
            return index
        unknown = [p for p in config.allowed_promotions if p not in lookup]
        if unknown:
            raise ValueError(f"PushEnvConfig.allowed_promotions has unknown promotion id(s) {unknown}; "
                             f"known ids: {ids[:20]}{' ...' if len(ids) > 20 else ''}")
        if config.no_push_action is not None and config.no_push_action in config.allowed_promotions:
            raise ValueError(f"PushEnvConfig.allowed_promotions includes the no-push action "
                             f"{config.no_push_action!r}, which cannot be pushed")
        return np.array([lookup[p] for p in config.allowed_promotions], dtype=np.int64)

    def _reward_names(self) -> tuple[str, ...]:
        """The response's reward names, checked against the env's own names."""
        names = tuple(self.response.reward_names)
        if not names or not all(isinstance(r, str) for r in names):
            raise ValueError(f"the response function's reward_names must be one or more strings, got {list(names)}")
        clash = [r for r in names if r in RESERVED_NAMES or r.startswith("_")]
        if clash:
            raise ValueError(f"reward name(s) {clash} clash with the push env's own info and metric names "
                             f"{list(RESERVED_NAMES)} (or start with '_'); rename the reward column")
        return names

    def _predict(self, contexts: np.ndarray, recent: np.ndarray, position: np.ndarray) -> dict[str, np.ndarray]:
        return self.response.predict(contexts, recent, position)

    def _resolve_fatigue(self) -> str:
        """Probe the response once: shapes, and whether it reacts to recent_pushes ("auto" mode)."""
        ctx = self.shop.contexts[: min(4, len(self.shop.contexts))]
        n = len(ctx)
        try:
            fresh = self._predict(ctx, np.zeros(n), np.zeros(n, dtype=np.int64))
            tired = self._predict(ctx, np.full(n, 3.0), np.zeros(n, dtype=np.int64))
        except Exception as exc:  # a width mismatch surfaces here when the response does not say its width
            raise ValueError(f"the response function failed on the env's contexts (width {self.d}): {exc}") from exc
        if self.k > 1:
            try:
                self._predict(ctx, np.zeros(n), np.full(n, self.k - 1, dtype=np.int64))
            except Exception as exc:
                raise ValueError(f"PushEnvConfig.slate_size={self.k} needs display positions 0..{self.k - 1}, "
                                 f"which the response function refuses: {exc}") from exc
        for r in self.outcomes:
            shape = np.shape(fresh.get(r))
            if shape != (n, self.shop.n_actions):
                raise ValueError(f"response.predict()[{r!r}] has shape {shape}, expected (n, n_actions) = "
                                 f"({n}, {self.shop.n_actions})")
        for r in self.binary:
            q = np.concatenate([np.ravel(fresh[r]), np.ravel(tired[r])])
            if q.min() < 0 or q.max() > 1:
                raise ValueError(f"the response declares reward {r!r} binary but predicts expected values in "
                                 f"[{q.min():.4g}, {q.max():.4g}], outside [0, 1]")
        if self.config.fatigue != "auto":
            return self.config.fatigue
        reacts = any(not np.allclose(fresh[r], tired[r]) for r in self.outcomes)
        return "response" if reacts else "multiplicative"

    def _resolve_churn(self) -> tuple[Any, Any] | None:
        """The response's unsubscribe functions when the env uses them (PushEnvConfig.churn), probed once."""
        if self.config.churn == "rule":
            return None
        found = unsubscribe_functions(self.response)
        if found is None:
            if self.config.churn == "response":
                raise ValueError("PushEnvConfig.churn='response' needs a response with an unsubscribe head "
                                 "(has_unsubscribe and unsubscribe_probability); fit the model on a log with an "
                                 "unsubscribe column, or use churn='auto' / 'rule'")
            return None
        ctx = self.shop.contexts[: min(4, len(self.shop.contexts))]
        n = len(ctx)
        try:
            q = np.asarray(found[0](ctx, np.zeros(n), np.zeros(n, dtype=np.int64)), dtype=np.float64)
        except Exception as exc:
            raise ValueError(f"the response's unsubscribe_probability failed on the env's contexts: {exc}") from exc
        if q.shape != (n, self.shop.n_actions):
            raise ValueError(f"response.unsubscribe_probability() has shape {q.shape}, expected (n, n_actions) = "
                             f"({n}, {self.shop.n_actions})")
        if not np.isfinite(q).all() or q.min() < 0 or q.max() > 1:
            raise ValueError(f"response.unsubscribe_probability() gives values outside [0, 1]: "
                             f"[{np.nanmin(q):.4g}, {np.nanmax(q):.4g}]")
        return found

    @property
    def dynamics_source(self) -> dict[str, str]:
        """{"fatigue": "learned" | "assumed", "churn": "learned" | "assumed"}: fatigue is learned when the response
        reacts to recent pushes itself (fatigue_mode "response"), churn when its unsubscribe head is used."""
        return {"fatigue": "learned" if self.fatigue_mode == "response" else "assumed",
                "churn": "learned" if self._churn is not None else "assumed"}

    def _observation_space(self) -> spaces.Box:
        c = self.config
        low = np.zeros(self.obs_dim, dtype=np.float32)
        high = np.zeros(self.obs_dim, dtype=np.float32)
        lo, hi = self.shop.contexts.min(axis=0), self.shop.contexts.max(axis=0)  # contexts come from the pool
        const = lo == hi  # a constant column (e.g. an unused one-hot bucket): widen so low < high
        lay = self.layout
        low[lay.context] = np.where(const, lo - 1.0, lo)
        high[lay.context] = np.where(const, hi + 1.0, hi)
        high[lay.recent_pushes] = c.fatigue_window
        high[lay.days_since_push] = 1.0
        high[lay.response_rate] = 1.0
        high[lay.category_pushes] = self.k / (1.0 - c.history_decay)
        high[lay.cap_hit] = 1.0
        high[lay.day] = 1.0
        return spaces.Box(low, high, dtype=np.float32)

    # state --------------------------------------------------------------------------------
    def allocate(self, n: int) -> UserBatch:
        """Zeroed state for n users (call reset_users before stepping)."""
        state = UserBatch(
            user=np.zeros(n, dtype=np.int64),
            context=np.zeros((n, self.d)),
            recent=np.zeros(n), capped_count=np.zeros(n),
            history=np.zeros((n, self.window), dtype=bool),
            days_since=np.full(n, NEVER), decayed_items=np.zeros(n), decayed_responses=np.zeros(n),
            category_counts=np.zeros((n, self.n_categories)), age=np.zeros(n),
            obs=np.zeros((n, self.obs_dim), dtype=np.float32),
        )
        return state

    def reset_users(self, state: UserBatch, which: np.ndarray | slice, rng: np.random.Generator,
                    users: np.ndarray | None = None) -> None:
        """Give the users at `which` (indices, mask or slice) fresh pool users with no history."""
        idx = np.arange(len(state.user))[which]
        m = len(idx)
        if m == 0:
            return
        pool = users if users is not None else rng.integers(0, len(self.shop.contexts), size=m)
        state.user[idx] = pool
        state.context[idx] = self.shop.contexts[pool]
        state.recent[idx] = 0.0
        state.capped_count[idx] = 0.0
        state.history[idx] = False
        state.days_since[idx] = NEVER
        state.decayed_items[idx] = 0.0
        state.decayed_responses[idx] = 0.0
        state.category_counts[idx] = 0.0
        state.age[idx] = 0.0
        obs, lay = state.obs, self.layout
        obs[idx, lay.context] = state.context[idx]
        obs[idx, lay.history] = 0.0
        obs[idx, lay.days_since_push] = 1.0
        obs[idx, lay.day] = 0.0

    # one day ------------------------------------------------------------------------------
    def step(self, state: UserBatch, actions: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Advance every user one day. actions (n, k) int. Returns reward (n,), terminated (n,), info."""
        c, k = self.config, self.k
        n = len(state.user)
        a = np.asarray(actions)
        if a.shape != (n, k):
            raise ValueError(f"actions must have shape (n_users, slate_size) = ({n}, {k}), got {a.shape}")
        if a.size and (a.min() < 0 or a.max() > self.n_allowed):
            raise ValueError(f"actions must be in [0, {self.n_allowed}] ({self.n_allowed} = push nothing), "
                             f"got values in [{a.min()}, {a.max()}]")
        valid = a < self.n_allowed
        n_dup = np.zeros(n, dtype=np.int64)
        for j in range(1, k):
            dup = valid[:, j] & (a[:, :j] == a[:, j:j + 1]).any(axis=1)
            valid[:, j] &= ~dup
            n_dup += dup
        wants = valid.any(axis=1)
        if c.frequency_cap is not None:
            capped = wants & (state.capped_count >= c.frequency_cap)
            valid &= ~capped[:, None]
            pushed = wants & ~capped
        else:
            capped = np.zeros(n, dtype=bool)
            pushed = wants
        promo = self._promo_of_action[a]  # (n, k) catalogue index (0 where nothing)
        users, slots = np.nonzero(valid)  # the pushed rows, user-major (each user's slots in order)
        items = promo[users, slots]
        recent = state.recent
        rows = self._rows(users, slots, items, pushed)
        outcome = self._sample(self._expected(state, *rows, n_pushed=len(users)), rng)
        info = {r: np.bincount(rows[0], weights=v, minlength=n) for r, v in outcome.items()}
        objective = self._objective(info, rows[0], rows[2], n)
        cat = self.categories[items]  # (m,)
        flat = users * self.n_categories + cat
        diversity = self._novelty(state, users, slots, flat, cat, n)
        who = np.flatnonzero(pushed)
        p_unsub = self._push_unsubscribe(state, users, slots, items, who)
        unsub = np.zeros(n, dtype=bool)
        unsub[who] = rng.random(len(who)) < p_unsub
        reward = objective + c.diversity_weight * diversity - c.push_cost * pushed - c.unsubscribe_penalty * unsub
        responses = self._pushed_responses(info, pushed, n)
        info.update(objective=objective, diversity=diversity, pushed=pushed, capped=capped, unsubscribed=unsub,
                    n_duplicates=n_dup, recent_pushes=recent.copy(), promotions=np.where(valid, promo, -1))
        self._update(state, users, flat, pushed, responses)
        return reward, unsub, info

    def _rows(self, users: np.ndarray, slots: np.ndarray, items: np.ndarray,
              pushed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user, slot, catalogue item) of the day's response rows: the pushed items first, then (with a
        declared no-push action) one organic row (user, 0, no-push action) per user not pushed."""
        if self.no_push_item is None:
            return users, slots, items
        idle = np.flatnonzero(~pushed)
        return (np.concatenate([users, idle]), np.concatenate([slots, np.zeros(len(idle), dtype=slots.dtype)]),
                np.concatenate([items, np.full(len(idle), self.no_push_item, dtype=items.dtype)]))

    def _sample(self, q: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Outcomes of the rows: binary rewards [u < q_r] with one shared uniform u per row, continuous
        ones their expected value (see the module docstring)."""
        if not self.binary:
            return q
        u = rng.random(len(q[self.binary[0]]))
        return {r: (u < v) if self.kinds[r] == "binary" else v for r, v in q.items()}

    def _objective(self, info: dict[str, np.ndarray], users: np.ndarray, items: np.ndarray, n: int) -> np.ndarray:
        """(n,) the day's objective: Σ_r weight_r × outcome_r − the cost of each row's action."""
        value = np.zeros(n)
        for r, w in self.weights.items():
            value += w * info[r]
        if self._costly:
            value -= np.bincount(users, weights=self.action_costs[items], minlength=n)
        return value

    def _pushed_responses(self, info: dict[str, np.ndarray], pushed: np.ndarray, n: int) -> np.ndarray:
        """(n,) today's pushed outcomes of the response reward (organic ones excluded; 0 without one)."""
        if self.response_reward is None:
            return np.zeros(n)
        out = info[self.response_reward]
        return out * pushed if self.no_push_item is not None else out

    def _novelty(self, state: UserBatch, users: np.ndarray, slots: np.ndarray, flat: np.ndarray, cat: np.ndarray,
                 n: int) -> np.ndarray:
        """(n,) Σ category novelty of each user's pushed items (earlier items of the slate count too)."""
        k = self.k
        h = state.category_counts.reshape(-1)[flat]
        if k > 1:  # earlier promotions of the same category in the same slate
            dense = np.full((n, k), -1, dtype=np.int64)
            dense[users, slots] = cat
            same = np.zeros((n, k))
            for j in range(1, k):
                same[:, j] = ((dense[:, :j] == dense[:, j:j + 1]) & (dense[:, :j] >= 0)).sum(axis=1)
            h = h + same[users, slots]
        return np.bincount(users, weights=1.0 / (1.0 + h), minlength=n)

    def _expected(self, state: UserBatch, users: np.ndarray, slots: np.ndarray, items: np.ndarray,
                  n_pushed: int | None = None) -> dict[str, np.ndarray]:
        """Expected outcomes (m,) of the rows (user, slot, catalogue item), the first `n_pushed` of them
        pushes (None: all) and the rest organic: one response call."""
        m = len(users)
        if m == 0:
            return {r: np.zeros(0) for r in self.outcomes}
        recent = state.recent[users]
        seen = recent if self.fatigue_mode == "response" else np.zeros(m)
        per_pair = getattr(self.response, "predict_rows", None)  # only the (row, promotion) pairs needed
        if per_pair is not None:
            out = per_pair(state.context[users], seen, slots, items)
            q = {r: np.asarray(out[r], dtype=np.float64).reshape(-1) for r in self.outcomes}
        else:
            out = self._predict(state.context[users], seen, slots)
            flat = np.arange(m) * self.shop.n_actions + items
            q = {r: np.asarray(out[r], dtype=np.float64).reshape(-1)[flat] for r in self.outcomes}
        if self.fatigue_mode != "multiplicative":
            return q
        pushes = m if n_pushed is None else n_pushed
        scale = np.ones(m)
        scale[:pushes] = self.fatigue_scale(recent[:pushes])
        return {r: v * scale for r, v in q.items()}

    def expected_values(self, contexts: np.ndarray, recent: np.ndarray) -> np.ndarray:
        """(n, A) Σ_r weight_r × expected outcome r of every catalogue action at display slot 0, as the
        response gives it under the env's fatigue mode (before the multiplicative factor and costs)."""
        n = len(contexts)
        seen = recent if self.fatigue_mode == "response" else np.zeros(n)
        pred = self._predict(np.asarray(contexts, dtype=np.float64), seen, np.zeros(n, dtype=np.int64))
        value = np.zeros((n, self.shop.n_actions))
        for r, w in self.weights.items():
            value += w * np.asarray(pred[r], dtype=np.float64)
        return value

    def expected_objective(self, contexts: np.ndarray, recent: np.ndarray) -> np.ndarray:
        """(n, n_allowed + 1) expected objective of one day for each env action (slot 0, the env's
        fatigue and costs; no λ, push_cost or churn). Last column: push nothing, which earns the
        no-push action's organic outcomes when one is declared, else 0."""
        recent = np.asarray(recent, dtype=np.float64)
        value = self.expected_values(contexts, recent)
        out = np.zeros((len(value), self.n_allowed + 1))
        out[:, :-1] = value[:, self.promotion_index] * self.fatigue_scale(recent)[:, None]
        out[:, :-1] -= self.action_costs[self.promotion_index]
        if self.no_push_item is not None:
            out[:, -1] = value[:, self.no_push_item] - self.action_costs[self.no_push_item]
        return out

    def _push_unsubscribe(self, state: UserBatch, users: np.ndarray, slots: np.ndarray, items: np.ndarray,
                          who: np.ndarray) -> np.ndarray:
        """(len(who),) P(unsubscribe) of the pushed users `who`: the head's mean over each user's pushed rows
        (user, slot, item), or the rule."""
        if self._churn is None or len(who) == 0:
            return self.unsubscribe_probability(state.recent[who])
        every, per_pair = self._churn
        ctx, recent = state.context[users], state.recent[users]
        if per_pair is not None:
            p = np.asarray(per_pair(ctx, recent, slots, items), dtype=np.float64).reshape(-1)
        else:
            p = np.asarray(every(ctx, recent, slots), dtype=np.float64)[np.arange(len(users)), items]
        if self.k == 1:  # one row per pushed user, in the order of `who`
            return p
        n = len(state.user)
        return (np.bincount(users, weights=p, minlength=n) / np.maximum(np.bincount(users, minlength=n), 1))[who]

    def unsubscribe_probability(self, recent: np.ndarray, contexts: np.ndarray | None = None) -> np.ndarray:
        """(n,) P(unsubscribe | pushed) given the pushes in the fatigue window: with the unsubscribe head and
        `contexts`, its probability averaged uniformly over the pushable promotions at slot 0; otherwise the
        rule sigmoid(churn_logit + churn_slope × recent)."""
        recent = np.asarray(recent, dtype=np.float64)
        if self._churn is None or contexts is None:
            return sigmoid(self.config.churn_logit + self.config.churn_slope * recent)
        return self.unsubscribe_by_action(contexts, recent).mean(axis=1)

    def unsubscribe_by_action(self, contexts: np.ndarray, recent: np.ndarray) -> np.ndarray:
        """(n, n_allowed) P(unsubscribe | push env action i) at slot 0: the head's, or the rule's (one per row,
        repeated), as the env's step draws it for a one-promotion push."""
        recent = np.asarray(recent, dtype=np.float64)
        if self._churn is None:
            rule = sigmoid(self.config.churn_logit + self.config.churn_slope * recent)
            return np.repeat(rule[:, None], self.n_allowed, axis=1)
        contexts = np.asarray(contexts, dtype=np.float64)
        q = np.asarray(self._churn[0](contexts, recent, np.zeros(len(contexts), dtype=np.int64)), dtype=np.float64)
        return q[:, self.promotion_index]

    def fatigue_scale(self, recent: np.ndarray) -> np.ndarray:
        """Multiplier of every expected outcome given recent pushes (1 unless fatigue_mode is multiplicative)."""
        if self.fatigue_mode == "multiplicative":
            return self.config.fatigue_factor ** recent
        return np.ones_like(recent, dtype=np.float64)

    def _update(self, state: UserBatch, users: np.ndarray, flat: np.ndarray, pushed: np.ndarray,
                responses: np.ndarray) -> None:
        """Roll the history forward one day and refresh the observation buffer."""
        c, w, t, n = self.config, self.window, state.t, len(state.user)
        decay = c.history_decay
        state.decayed_items *= decay
        state.decayed_items += np.bincount(users, minlength=n)
        state.decayed_responses *= decay
        state.decayed_responses += responses
        counts = state.category_counts
        counts *= decay
        if self.k == 1:  # one item per user: the flat indices are distinct
            counts.reshape(-1)[flat] += 1.0
        else:
            counts += np.bincount(flat, minlength=counts.size).reshape(counts.shape)
        state.days_since += 1.0
        state.days_since[pushed] = 1.0
        hist = state.history
        state.recent += pushed
        state.recent -= hist[:, (t - c.fatigue_window) % w]
        state.capped_count += pushed
        state.capped_count -= hist[:, (t - c.cap_window + 1) % w]  # today + cap_window-1 earlier days
        hist[:, t % w] = pushed
        state.t = t + 1
        state.age += 1.0
        obs, lay = state.obs, self.layout
        obs[:, lay.recent_pushes] = state.recent
        obs[:, lay.days_since_push] = np.minimum(state.days_since, c.horizon) / c.horizon
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(state.decayed_items > 0, state.decayed_responses / state.decayed_items, 0.0)
        obs[:, lay.response_rate] = np.minimum(rate, 1.0)
        obs[:, lay.category_pushes] = counts
        obs[:, lay.cap_hit] = (state.capped_count >= c.frequency_cap) if c.frequency_cap is not None else 0.0
        obs[:, lay.day] = np.minimum(state.age, c.horizon) / c.horizon


class PushEnv(gym.Env):
    """One user's daily push opportunities (see the module docstring for spaces, reward and dynamics).

    Args:
        response, contexts, categories, action_ids: the shop (see `pushrl.envs.sim.env_config.Shop`);
            none given: the default small synthetic shop (TrueResponse).
        config: a PushEnvConfig or a dict of its fields; keyword overrides (same names) win.
    reset(options={"user": i}) starts pool user i instead of a random one.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, response: ResponseFunction | None = None, contexts: np.ndarray | None = None,
                 categories: np.ndarray | None = None, action_ids: np.ndarray | None = None,
                 config: PushEnvConfig | dict[str, Any] | None = None, render_mode: str | None = None,
                 **overrides: Any) -> None:
        if render_mode is not None:
            raise ValueError(f"render_mode must be None (PushEnv has no rendering), got {render_mode!r}")
        self.config = PushEnvConfig.build(config, **overrides)
        self.shop = Shop.build(response, contexts, categories, action_ids)
        self.dynamics = PushDynamics(self.config, self.shop)
        self.observation_space = self.dynamics.single_observation_space
        self.action_space = self.dynamics.single_action_space
        self.layout: ObservationLayout = self.dynamics.layout
        """Which observation columns hold what."""
        self.render_mode = None
        self._state = self.dynamics.allocate(1)
        self._action = np.zeros((1, self.config.slate_size), dtype=np.int64)

    @property
    def observation_names(self) -> list[str]:
        return self.layout.names()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        users = None
        if options is not None and "user" in options:
            user = int(options["user"])
            if not 0 <= user < len(self.shop.contexts):
                raise ValueError(f"options['user'] must be in [0, {len(self.shop.contexts)}), got {user}")
            users = np.array([user])
        self._state.t = 0
        self.dynamics.reset_users(self._state, slice(None), self.np_random, users)
        return self._state.obs[0].copy(), {"user": int(self._state.user[0])}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._action[0] = np.asarray(action, dtype=np.int64).reshape(-1)
        reward, terminated, info = self.dynamics.step(self._state, self._action, self.np_random)
        out: dict[str, Any] = {key: value[0].item() for key, value in info.items() if key != "promotions"}
        out["promotions"] = info["promotions"][0]
        out["user"] = int(self._state.user[0])
        return self._state.obs[0].copy(), float(reward[0]), bool(terminated[0]), False, out
