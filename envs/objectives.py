"""What a policy is paid for: a logged reward, or profit with money and push costs in it.

    profit(row) = margin × spend(row) − cost(action of the row)

with a cost per push configurable per action (default 0.10 per e-mail, 0 for
the no-push action), so sending nothing is the best action for some users.
The same definition applies to logged rows (OPE) and to a response model's
expected rewards (simulator, agents).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from pushrl.envs.logged_data import LoggedData

DEFAULT_MARGIN = 0.30
DEFAULT_PUSH_COST = 0.10


@dataclass(frozen=True)
class Objective:
    """A reward to maximise.

    Attributes:
        name: the objective's name ("click", "conversion", "spend", "profit", ...).
        reward: the logged reward column it is computed from ("spend" for profit).
        margin: share of spend that is profit (profit only).
        costs: cost per push for each action id (profit only; missing ids cost 0).
    """

    name: str
    reward: str
    margin: float = 1.0
    costs: Mapping[object, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.margin <= 1:
            raise ValueError(f"objective.margin must be in (0, 1], got {self.margin}")
        bad = {k: v for k, v in self.costs.items() if not np.isfinite(v) or v < 0}
        if bad:
            raise ValueError(f"objective.costs must be finite and >= 0, got {bad}")

    def cost_vector(self, action_ids: np.ndarray) -> np.ndarray:
        """(n_actions,) cost of pushing each action."""
        unknown = set(self.costs) - set(action_ids.tolist())
        if unknown:
            raise ValueError(f"objective.costs names unknown action ids {sorted(map(str, unknown))}; known: {list(action_ids)}")
        return np.array([float(self.costs.get(a, 0.0)) for a in action_ids.tolist()])

    def logged(self, data: LoggedData) -> np.ndarray:
        """(n,) the objective's value for each logged row (its own action)."""
        base = data.reward(self.reward)
        if self.name != "profit":
            return base
        return self.margin * base - self.cost_vector(data.action_ids)[data.action]

    def expected(self, predictions: Mapping[str, np.ndarray], action_ids: np.ndarray) -> np.ndarray:
        """(n, n_actions) expected objective from expected rewards {name: (n, n_actions)}."""
        if self.reward not in predictions:
            raise ValueError(f"objective '{self.name}' needs predicted '{self.reward}', have {sorted(predictions)}")
        base = np.asarray(predictions[self.reward])
        if self.name != "profit":
            return base
        return self.margin * base - self.cost_vector(action_ids)[None, :]


def make_objective(
    name: str,
    action_ids: np.ndarray | list,
    margin: float = DEFAULT_MARGIN,
    push_cost: float = DEFAULT_PUSH_COST,
    no_push_action: object | None = None,
    costs: Mapping[object, float] | None = None,
) -> Objective:
    """`profit` gets `push_cost` for every action but `no_push_action` unless `costs` is given."""
    if name != "profit":
        return Objective(name=name, reward=name)
    ids = list(np.asarray(action_ids).tolist())
    if no_push_action is not None and no_push_action not in ids:
        raise ValueError(f"no_push_action {no_push_action!r} is not an action id; known: {ids}")
    if costs is None:
        costs = {a: (0.0 if a == no_push_action else push_cost) for a in ids}
    return Objective(name="profit", reward="spend", margin=margin, costs=dict(costs))
