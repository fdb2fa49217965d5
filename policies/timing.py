"""When-to-push baselines over push-env observations: always push at random, and the myopic greedy.

Both act in the push simulator's action space (`pushrl.envs.sim.push_env`): env actions
0..n_allowed-1 push a pushable promotion, n_allowed pushes nothing. They read the observation by
the env's own `ObservationLayout` (`dynamics.layout`), never by column number.
"""

from __future__ import annotations

import numpy as np

from pushrl.envs.sim.push_env import PushDynamics
from pushrl.policies.baselines import greedy_probabilities
from pushrl.policies.policy import BasePolicy


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
        p_unsub = dyn.unsubscribe_probability(recent)
        push = value[:, :-1] + self.lam * novelty - c.push_cost - c.unsubscribe_penalty * p_unsub[:, None]
        push[obs[:, lay.cap_hit] > 0.5] = -np.inf  # cap hit: a push would be refused
        if self.max_recent is not None:
            push[recent > self.max_recent + 0.5] = -np.inf
        return np.hstack([push, value[:, -1:]])

    def _probabilities(self, contexts: np.ndarray) -> np.ndarray:
        return greedy_probabilities(self.scores(contexts))
