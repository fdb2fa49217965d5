"""PushEnv: one user's push opportunities (one per day), and the array dynamics it shares with BatchedPushEnv.

`PushDynamics` steps n users at once as arrays; `PushEnv` is its n = 1 case and
`BatchedPushEnv` its n = num_envs case, so both follow one set of rules:

* Action (k = slate_size): promotion indices 0..n_allowed-1, `n_allowed` = push nothing.
  k = 1: Discrete(n_allowed + 1); k > 1: MultiDiscrete([n_allowed + 1] * k), one entry per
  display position. A promotion repeated in one slate is pushed once (at its first position);
  later copies are dropped and counted in info["n_duplicates"]. A slate is one push message.
* Frequency cap: at most `frequency_cap` pushes in any `cap_window` consecutive days; a push that
  would break it is refused (treated as no push, info["capped"] = True).
* Response: the response function is called once per step, on the rows (user, slot) that are pushed,
  with `recent_pushes` = pushes in the `fatigue_window` days before today. Click ~ Bernoulli(q_click),
  conversion | click ~ Bernoulli(q_conversion / q_click), revenue | conversion = q_revenue /
  q_conversion (the expected order value). In "multiplicative" fatigue mode the response sees
  recent_pushes = 0 and q_click, q_conversion, q_revenue are multiplied by fatigue_factor ** recent.
* Churn: each push unsubscribes with p = sigmoid(churn_logit + churn_slope × recent_pushes);
  that ends the episode (terminated) and costs `unsubscribe_penalty`.
* Reward: objective + λ × Σ novelty(pushed items) − push_cost × pushed − unsubscribe_penalty × unsub,
  novelty of category c = 1 / (1 + h_c), h_c = decayed count of earlier pushes of c
  (h ← history_decay × h + today's pushes) plus earlier items of c in the same slate;
  `pushrl.envs.diversity.category_novelty` computes the same number from action logs.

Observation (float32, width d + 4 + C, C = number of categories):
    [0:d]     the user's encoded context (bounds: the pool's min and max, ±1 for a constant column)
    [d]       recent_pushes: pushes in the last `fatigue_window` days
    [d+1]     days since the last push / horizon, capped at 1 (1 = never or long ago)
    [d+2]     recent response rate: decayed clicks / decayed pushed items (0 before any push)
    [d+3:d+3+C] decayed push count per promotion category
    [d+3+C]   1 if the frequency cap is hit (a push today would be refused), else 0
A new user starts with no history. The episode length is the TimeLimit's `max_episode_steps`.
All randomness comes from the env's `np_random`: the same seed gives the same trajectory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from pushrl.envs.env_config import REWARD_CHAIN, PushEnvConfig, Shop
from pushrl.envs.probabilities import sigmoid
from pushrl.envs.response import ResponseFunction

NEVER = 1e9  # days since last push of a user never pushed


def observation_names(context_width: int, n_categories: int) -> list[str]:
    """Names of the observation columns, in order."""
    return ([f"context_{i}" for i in range(context_width)]
            + ["recent_pushes", "days_since_push", "response_rate"]
            + [f"category_{c}_pushes" for c in range(n_categories)] + ["cap_hit"])


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
    decayed_clicks: np.ndarray  # (n,) float64
    category_counts: np.ndarray  # (n, C) float64
    obs: np.ndarray  # (n, D) float32 observation buffer
    t: int = 0  # global day counter (ring-buffer position)


class PushDynamics:
    """Array dynamics of the push simulator for any number of users (no per-user Python loop)."""

    def __init__(self, config: PushEnvConfig, shop: Shop) -> None:
        self.config, self.shop = config, shop
        self.response: ResponseFunction = shop.response
        ids = shop.action_ids.tolist()
        if config.allowed_promotions is None:
            self.promotion_index = np.arange(shop.n_actions, dtype=np.int64)
        else:
            lookup = {v: i for i, v in enumerate(ids)}
            unknown = [p for p in config.allowed_promotions if p not in lookup]
            if unknown:
                raise ValueError(f"PushEnvConfig.allowed_promotions has unknown promotion id(s) {unknown}; "
                                 f"known ids: {ids[:20]}{' ...' if len(ids) > 20 else ''}")
            self.promotion_index = np.array([lookup[p] for p in config.allowed_promotions], dtype=np.int64)
        self.n_allowed = len(self.promotion_index)
        self.k = config.slate_size
        if self.k > self.n_allowed:
            raise ValueError(f"PushEnvConfig.slate_size={self.k} must be <= the number of promotions "
                             f"that may be pushed ({self.n_allowed})")
        names = tuple(self.response.reward_names)
        missing = [r for r in REWARD_CHAIN[config.objective] if r not in names]
        if missing:
            raise ValueError(f"PushEnvConfig.objective={config.objective!r} needs reward(s) {missing} "
                             f"but the response function has reward_names {list(names)}")
        self.outcomes = tuple(r for r in REWARD_CHAIN["revenue"] if r in names and
                              all(p in names for p in REWARD_CHAIN[r]))
        # action index -> catalogue index, with "nothing" mapped to 0 (masked out anyway)
        self._promo_of_action = np.append(self.promotion_index, 0)
        self.categories = shop.categories
        self.n_categories = shop.n_categories
        self.d = shop.contexts.shape[1]
        self.window = max(config.fatigue_window, config.cap_window)
        self.fatigue_mode = self._resolve_fatigue()
        self.obs_dim = self.d + 4 + self.n_categories
        self.single_observation_space = self._observation_space()
        self.single_action_space: spaces.Space = (
            spaces.Discrete(self.n_allowed + 1) if self.k == 1
            else spaces.MultiDiscrete(np.full(self.k, self.n_allowed + 1, dtype=np.int64)))

    # construction helpers ---------------------------------------------------------------
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
            shape = np.shape(fresh[r])
            if shape != (n, self.shop.n_actions):
                raise ValueError(f"response.predict()[{r!r}] has shape {shape}, expected (n, n_actions) = "
                                 f"({n}, {self.shop.n_actions})")
        if self.config.fatigue != "auto":
            return self.config.fatigue
        reacts = not np.allclose(fresh["click"], tired["click"])
        return "response" if reacts else "multiplicative"

    def _observation_space(self) -> spaces.Box:
        c = self.config
        low = np.zeros(self.obs_dim, dtype=np.float32)
        high = np.zeros(self.obs_dim, dtype=np.float32)
        lo, hi = self.shop.contexts.min(axis=0), self.shop.contexts.max(axis=0)  # contexts come from the pool
        const = lo == hi  # a constant column (e.g. an unused one-hot bucket): widen so low < high
        low[: self.d] = np.where(const, lo - 1.0, lo)
        high[: self.d] = np.where(const, hi + 1.0, hi)
        d, cats = self.d, slice(self.d + 3, self.d + 3 + self.n_categories)
        high[d] = c.fatigue_window
        high[d + 1] = 1.0
        high[d + 2] = 1.0
        high[cats] = self.k / (1.0 - c.history_decay)
        high[-1] = 1.0
        return spaces.Box(low, high, dtype=np.float32)

    # state --------------------------------------------------------------------------------
    def allocate(self, n: int) -> UserBatch:
        """Zeroed state for n users (call reset_users before stepping)."""
        state = UserBatch(
            user=np.zeros(n, dtype=np.int64),
            context=np.zeros((n, self.d)),
            recent=np.zeros(n), capped_count=np.zeros(n),
            history=np.zeros((n, self.window), dtype=bool),
            days_since=np.full(n, NEVER), decayed_items=np.zeros(n), decayed_clicks=np.zeros(n),
            category_counts=np.zeros((n, self.n_categories)),
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
        state.decayed_clicks[idx] = 0.0
        state.category_counts[idx] = 0.0
        obs = state.obs
        obs[idx, : self.d] = state.context[idx]
        obs[idx, self.d:] = 0.0
        obs[idx, self.d + 1] = 1.0

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
        q = self._expected(state, users, slots, items)
        m = len(users)
        u = rng.random((2, m))
        click = u[0] < q["click"]
        outcome = {"click": click}
        if "conversion" in q:
            conv = click & (u[1] * q["click"] < q["conversion"])
            outcome["conversion"] = conv
            if "revenue" in q:
                with np.errstate(divide="ignore", invalid="ignore"):
                    outcome["revenue"] = np.where(conv, q["revenue"] / q["conversion"], 0.0)
        info = {o: np.bincount(users, weights=v, minlength=n) for o, v in outcome.items()}
        cat = self.categories[items]  # (m,)
        flat = users * self.n_categories + cat
        h = state.category_counts.reshape(-1)[flat]
        if k > 1:  # earlier promotions of the same category in the same slate
            dense = np.full((n, k), -1, dtype=np.int64)
            dense[users, slots] = cat
            same = np.zeros((n, k))
            for j in range(1, k):
                same[:, j] = ((dense[:, :j] == dense[:, j:j + 1]) & (dense[:, :j] >= 0)).sum(axis=1)
            h = h + same[users, slots]
        diversity = np.bincount(users, weights=1.0 / (1.0 + h), minlength=n)
        who = np.flatnonzero(pushed)
        p_unsub = self.unsubscribe_probability(recent[who])
        unsub = np.zeros(n, dtype=bool)
        unsub[who] = rng.random(len(who)) < p_unsub
        objective = info[c.objective]
        reward = objective + c.diversity_weight * diversity - c.push_cost * pushed - c.unsubscribe_penalty * unsub
        info.update(objective=objective, diversity=diversity, pushed=pushed, capped=capped, unsubscribed=unsub,
                    n_duplicates=n_dup, recent_pushes=recent.copy(), promotions=np.where(valid, promo, -1))
        self._update(state, users, flat, pushed, info["click"])
        return reward, unsub, info

    def _expected(self, state: UserBatch, users: np.ndarray, slots: np.ndarray, items: np.ndarray) -> dict[str, np.ndarray]:
        """Expected outcomes (m,) of the pushed rows (user, slot, promotion): one response call."""
        m = len(users)
        if m == 0:
            return {r: np.zeros(0) for r in self.outcomes}
        recent = state.recent[users]
        seen = recent if self.fatigue_mode == "response" else np.zeros(m)
        per_pair = getattr(self.response, "predict_rows", None)  # only the pushed (row, promotion) pairs
        if per_pair is not None:
            out = per_pair(state.context[users], seen, slots, items)
            q = {r: np.asarray(out[r], dtype=np.float64).reshape(-1) for r in self.outcomes}
        else:
            out = self._predict(state.context[users], seen, slots)
            flat = np.arange(m) * self.shop.n_actions + items
            q = {r: np.asarray(out[r], dtype=np.float64).reshape(-1)[flat] for r in self.outcomes}
        scale = self.fatigue_scale(recent)
        return {r: v * scale for r, v in q.items()}

    def unsubscribe_probability(self, recent: np.ndarray) -> np.ndarray:
        """P(unsubscribe | pushed) given the pushes in the fatigue window (churn rule)."""
        return sigmoid(self.config.churn_logit + self.config.churn_slope * recent)

    def fatigue_scale(self, recent: np.ndarray) -> np.ndarray:
        """Multiplier of every expected outcome given recent pushes (1 unless fatigue_mode is multiplicative)."""
        if self.fatigue_mode == "multiplicative":
            return self.config.fatigue_factor ** recent
        return np.ones_like(recent, dtype=np.float64)

    def _update(self, state: UserBatch, users: np.ndarray, flat: np.ndarray, pushed: np.ndarray,
                clicks: np.ndarray) -> None:
        """Roll the history forward one day and refresh the observation buffer."""
        c, d, w, t, n = self.config, self.d, self.window, state.t, len(state.user)
        decay = c.history_decay
        state.decayed_items *= decay
        state.decayed_items += np.bincount(users, minlength=n)
        state.decayed_clicks *= decay
        state.decayed_clicks += clicks
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
        obs = state.obs
        obs[:, d] = state.recent
        obs[:, d + 1] = np.minimum(state.days_since, c.horizon) / c.horizon
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(state.decayed_items > 0, state.decayed_clicks / state.decayed_items, 0.0)
        obs[:, d + 2] = np.minimum(rate, 1.0)
        obs[:, d + 3:d + 3 + self.n_categories] = counts
        obs[:, -1] = (state.capped_count >= c.frequency_cap) if c.frequency_cap is not None else 0.0


class PushEnv(gym.Env):
    """One user's daily push opportunities (see the module docstring for spaces, reward and dynamics).

    Args:
        response, contexts, categories, action_ids: the shop (see `pushrl.envs.env_config.Shop`);
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
        self.render_mode = None
        self._state = self.dynamics.allocate(1)
        self._action = np.zeros((1, self.config.slate_size), dtype=np.int64)

    @property
    def observation_names(self) -> list[str]:
        return observation_names(self.dynamics.d, self.dynamics.n_categories)

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
