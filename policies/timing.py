"""When-to-push policies over push-env observations: always push at random, the myopic greedy, the optimum.

All act in the push simulator's action space (`pushrl.envs.sim.push_env`): env actions
0..n_allowed-1 push a pushable promotion, n_allowed pushes nothing. They read the observation by
the env's own `ObservationLayout` (`dynamics.layout`), never by column number. `OptimalTiming` plays
the exact optimum of `pushrl.envs.sim.optimum` (a decision per day and push pattern, kept per env slot);
`myopic_rule` is MyopicGreedy's decision as a rule of that module's model (for `evaluate_rule`).
"""

from __future__ import annotations

import numpy as np

from pushrl.envs.sim.optimum import OptimumResult, TimingModel, TimingRule, optimum_for
from pushrl.envs.sim.push_env import PushDynamics
from pushrl.policies.baselines import greedy_probabilities
from pushrl.policies.policy import BasePolicy, check_contexts


class AlwaysPushUniform(BasePolicy):
    """Always push: a uniformly random pushable promotion every day, never the push-nothing action.

    Unlike `UniformPolicy` (every action, push nothing included, with 1 / n_actions), the mass is
    1 / n_promotions on each promotion and 0 on the last action (push nothing).
    """

    def __init__(self, n_promotions: int) -> None:
        if isinstance(n_promotions, bool) or not isinstance(n_promotions, int | np.integer) or n_promotions < 1:
            raise ValueError(f"n_promotions must be an integer >= 1, got {n_promotions!r}")
        self._n = int(n_promotions)

    @property
    def n_actions(self) -> int:
        return self._n + 1

    def _probabilities(self, contexts: np.ndarray) -> np.ndarray:
        p = np.full((len(contexts), self._n + 1), 1.0 / self._n)
        p[:, -1] = 0.0
        return p


class MyopicGreedy(BasePolicy):
    """Each day the action with the highest expected one-day reward under the simulator's own rules.

    Push score of promotion a for an observation: E[objective | a] (with the env's fatigue and the
    objective's cost of a) + λ × novelty of a's category − push_cost − unsubscribe_penalty ×
    P(unsubscribe | recent pushes); push nothing scores E[objective | no push] (the no-push action's
    organic outcomes, 0 without one) and is chosen when no push scores more or the frequency cap is
    hit. It knows the response model exactly but ignores what today's push does to tomorrow: the
    myopic optimum. `max_recent` = k: push nothing to users with more than k pushes in the fatigue
    window (a spacing rule).
    """

    def __init__(self, dynamics: PushDynamics, diversity_weight: float, max_recent: int | None = None) -> None:
        self.dyn, self.lam, self.max_recent = dynamics, float(diversity_weight), max_recent
        self.layout = dynamics.layout
        self.n_features = self.layout.width
        # the category-count column of each pushable promotion
        self._novelty_columns = np.arange(self.layout.width)[self.layout.category_pushes][
            dynamics.categories[dynamics.promotion_index]]

    @property
    def n_actions(self) -> int:
        return self.dyn.n_allowed + 1

    def scores(self, obs: np.ndarray) -> np.ndarray:
        """(n, n_allowed + 1) expected one-day reward of each action (last: push nothing)."""
        dyn, c, lay = self.dyn, self.dyn.config, self.layout
        recent = obs[:, lay.recent_pushes].astype(np.float64)
        value = dyn.expected_objective(obs[:, lay.context].astype(np.float64), recent)  # the env's own rules exactly
        novelty = 1.0 / (1.0 + obs[:, self._novelty_columns].astype(np.float64))
        p_unsub = dyn.unsubscribe_by_action(obs[:, lay.context].astype(np.float64), recent)  # (n, n_allowed)
        push = value[:, :-1] + self.lam * novelty - c.push_cost - c.unsubscribe_penalty * p_unsub
        push[obs[:, lay.cap_hit] > 0.5] = -np.inf  # cap hit: a push would be refused
        if self.max_recent is not None:
            push[recent > self.max_recent + 0.5] = -np.inf
        return np.hstack([push, value[:, -1:]])

    def _probabilities(self, contexts: np.ndarray) -> np.ndarray:
        return greedy_probabilities(self.scores(contexts))


def myopic_rule(model: TimingModel, max_recent: int | None = None) -> TimingRule:
    """`MyopicGreedy`'s decision (λ = 0) as a rule of the optimum's model, for `evaluate_rule`.

    Push score of a after r recent pushes: q[u, a, r] - push_cost - unsubscribe_penalty × p[u, a, r];
    push nothing: q0[u, r]; pushes score -inf when capped or (max_recent = k) when r > k; ties split
    evenly (`greedy_probabilities`), as MyopicGreedy's action probabilities do.
    """
    per_action = model.per_promotion_churn

    def rule(t: int, state: int, r: int, capped: bool) -> np.ndarray:
        p = model.p_unsub[:, :, r] if per_action else model.p_unsub[:, r, None]
        push = model.q[:, :, r] + model.push_bonus - model.push_cost - model.unsubscribe_penalty * p
        if capped or (max_recent is not None and r > max_recent):
            push = np.full_like(push, -np.inf)
        return greedy_probabilities(np.hstack([push, model.q0[:, r, None]]))

    return rule


class OptimalTiming(BasePolicy):
    """Plays the optimum's decision table (`pushrl.envs.sim.optimum`) in the push env.

    The push pattern of the last L days is not in the observation, so the policy keeps it (and the day t)
    per env slot, from what it chose: a slot's pattern gains a push when it chose a promotion and
    the observation's cap_hit was 0 (the env refuses a capped push). A slot holds a new user (day 0,
    no pushes) on the first call, when the observation's day is 0 (a new user's first day), when its
    context is another pool row, when its day reached the
    horizon (the TimeLimit), or when the observation's recent_pushes or cap_hit disagree with the
    kept pattern (an episode ends early only on a push day, so the old user would show recent >= 1
    where a fresh one shows 0). The user is found by its context: the observation's context columns
    must be a row of `contexts` (the pool the optimum was solved for, float32 as the env writes it).
    Works with SAME_STEP and DISABLED autoreset, one `act` per env step; call `reset()` after resetting
    the env early. `action_probabilities` gives the same decision without advancing the kept state.
    """

    def __init__(self, dynamics: PushDynamics, result: OptimumResult, contexts: np.ndarray) -> None:
        if result.table is None:
            raise ValueError("OptimalTiming needs the optimum's decision table (solve with keep_table=True)")
        ctx = np.asarray(contexts, dtype=np.float64)
        if ctx.shape != (result.table.n_users, dynamics.d):
            raise ValueError(f"contexts must be the ({result.table.n_users}, {dynamics.d}) pool the optimum was solved "
                             f"for, got shape {ctx.shape}")
        if result.table.n_promotions != dynamics.n_allowed:
            raise ValueError(f"the optimum has {result.table.n_promotions} promotions, the env {dynamics.n_allowed}")
        self.dyn, self.result, self.table = dynamics, result, result.table
        self.layout = dynamics.layout
        self.n_features = self.layout.width
        model = result.model
        self._days, self._full = self.table.horizon, (1 << model.memory_days) - 1
        self._keys = ctx.astype(np.float32)
        self._hash_sorted, self._order = self._index(self._keys)
        self.reset()

    @classmethod
    def solve(cls, dynamics: PushDynamics, horizon: int, contexts: np.ndarray | None = None) -> OptimalTiming:
        """Solve the optimum for `contexts` (default: the env's pool) over `horizon` days and play it."""
        pool = dynamics.shop.contexts if contexts is None else contexts
        return cls(dynamics, optimum_for(dynamics, pool, horizon), pool)

    @property
    def n_actions(self) -> int:
        return self.dyn.n_allowed + 1

    def reset(self) -> None:
        """Forget every slot: the next call starts all users at day 0."""
        self._rows: np.ndarray | None = None
        self._day = self._pattern = self._last = self._capped = np.zeros(0, dtype=np.int64)

    @staticmethod
    def _hash(keys: np.ndarray) -> np.ndarray:
        words = np.ascontiguousarray(keys, dtype=np.float32).view(np.uint32).astype(np.uint64)
        h = np.full(len(words), 0xCBF29CE484222325, dtype=np.uint64)
        for j in range(words.shape[1]):
            h = (h ^ words[:, j]) * np.uint64(0x100000001B3)
        return h

    def _index(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = self._hash(keys)
        order = np.argsort(h, kind="stable")
        return h[order], order

    def _lookup(self, obs: np.ndarray) -> np.ndarray:
        """Pool row of each observation's context."""
        keys = np.ascontiguousarray(obs[:, self.layout.context], dtype=np.float32)
        h = self._hash(keys)
        pos = np.minimum(np.searchsorted(self._hash_sorted, h), len(self._order) - 1)
        rows = self._order[pos]
        bad = (self._hash_sorted[pos] != h) | ~(self._keys[rows] == keys).all(axis=1)
        if bad.any():
            raise ValueError(f"observation row {int(np.flatnonzero(bad)[0])}: its context is not a row of the pool the "
                             "optimum was solved for")
        return rows

    def _track(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pool row, day, pattern bitmask) of each slot for today's observation (nothing committed)."""
        rows, n = self._lookup(obs), len(obs)
        if self._rows is None or len(self._rows) != n:
            return rows, np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        pushed = (self._last < self.dyn.n_allowed) & (self._capped == 0)
        pattern = ((self._pattern << 1) | pushed) & self._full
        day = self._day + 1
        lay, space = self.layout, self.table.space
        recent = np.rint(obs[:, lay.recent_pushes]).astype(np.int64)
        ok = np.isin(pattern, space.states)
        kept, cap = np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=bool)
        where = space.index(pattern[ok])
        kept[ok], cap[ok] = space.recent[where], space.capped[where]
        cap_seen = obs[:, lay.cap_hit] > 0.5
        fresh = obs[:, lay.day] <= 0  # the observation's day is 0 exactly on a new user's first day
        new = fresh | (rows != self._rows) | (day >= self._days) | (recent != kept) | ~ok | (cap_seen != cap)
        return rows, np.where(new, 0, day), np.where(new, 0, pattern)

    def _decide(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        obs = np.asarray(obs)
        rows, day, pattern = self._track(obs)
        return rows, day, pattern, self.table.action(day, self.table.space.index(pattern), rows)

    def act(self, contexts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        obs = check_contexts(contexts, self.n_features)
        rows, day, pattern, actions = self._decide(obs)
        self._rows, self._day, self._pattern, self._last = rows, day, pattern, actions
        self._capped = (obs[:, self.layout.cap_hit] > 0.5).astype(np.int64)
        return actions, np.ones(len(actions))

    def _probabilities(self, contexts: np.ndarray) -> np.ndarray:
        actions = self._decide(contexts)[3]
        out = np.zeros((len(actions), self.n_actions))
        out[np.arange(len(actions)), actions] = 1.0
        return out
