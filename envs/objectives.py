"""What a policy is paid for: a logged reward, profit, or a weighted combination of rewards.

    profit(row)   = margin × money(row) − cost(action of the row)
    weighted(row) = Σ_r weights[r] × r(row) − cost(action of the row)

with a cost per push configurable per action (default 0.10 per e-mail, 0 for
the no-push action), so sending nothing is the best action for some users.
The same definition applies to logged rows (OPE) and to a response model's
expected rewards (simulator, agents).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pushrl.envs.data.logged_data import LoggedData

DEFAULT_MARGIN = 0.30
DEFAULT_PUSH_COST = 0.10


@dataclass(frozen=True)
class Objective:
    """A reward to maximise: Σ_r weights[r] × r − cost of the pushed action.

    Attributes:
        name: the objective's name (a reward's name, "profit" or "weighted").
        reward: the main logged reward it is computed from (the money reward for profit).
        margin: weight of `reward` (the share of money that is profit; 1 for a plain reward).
        costs: cost per push for each action id (missing ids cost 0).
        weights: {reward: weight} of a weighted combination; empty: {reward: margin}.
    """

    name: str
    reward: str
    margin: float = 1.0
    costs: Mapping[object, float] = field(default_factory=dict)
    weights: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.weights and not 0 < self.margin <= 1:
            raise ValueError(f"objective.margin must be in (0, 1], got {self.margin}")
        bad = {k: v for k, v in self.costs.items() if not np.isfinite(v) or v < 0}
        if bad:
            raise ValueError(f"objective.costs must be finite and >= 0, got {bad}")
        bad_w = {k: v for k, v in self.weights.items() if not isinstance(v, int | float) or not np.isfinite(v)}
        if bad_w:
            raise ValueError(f"objective.weights must be finite numbers, got {bad_w}")

    @property
    def terms(self) -> dict[str, float]:
        """{reward: weight} of the objective."""
        return dict(self.weights) if self.weights else {self.reward: float(self.margin)}

    @property
    def rewards(self) -> tuple[str, ...]:
        """The logged rewards the objective reads."""
        return tuple(self.terms)

    @property
    def is_plain(self) -> bool:
        """One reward, weight 1, no push costs: the objective is that reward itself."""
        return self.terms == {self.reward: 1.0} and not any(self.costs.values())

    def describe(self) -> str:
        """The objective as a formula, e.g. "0.3 x spend - 0.1 per push (free: No E-Mail)"."""
        if self.is_plain:
            return self.reward
        value = " + ".join(f"{w:g} x {r}" for r, w in self.terms.items())
        costs = sorted({float(v) for v in self.costs.values()} - {0.0})
        free = [str(a) for a, v in self.costs.items() if v == 0]
        if not costs:
            return value
        cost = f"{costs[0]:g} per push" if len(costs) == 1 else "a cost per push by action"
        return f"{value} - {cost}" + (f" (free: {', '.join(free)})" if free else "")

    def cost_vector(self, action_ids: np.ndarray) -> np.ndarray:
        """(n_actions,) cost of pushing each action."""
        unknown = set(self.costs) - set(action_ids.tolist())
        if unknown:
            raise ValueError(f"objective.costs names unknown action ids {sorted(map(str, unknown))}; known: {list(action_ids)}")
        return np.array([float(self.costs.get(a, 0.0)) for a in action_ids.tolist()])

    def logged(self, data: LoggedData) -> np.ndarray:
        """(n,) the objective's value for each logged row (its own action)."""
        if self.is_plain:
            return data.reward(self.reward)
        value = sum(w * data.reward(r) for r, w in self.terms.items())
        return value - self.cost_vector(data.action_ids)[data.action]

    def expected(self, predictions: Mapping[str, np.ndarray], action_ids: np.ndarray) -> np.ndarray:
        """(n, n_actions) expected objective from expected rewards {name: (n, n_actions)}."""
        missing = [r for r in self.rewards if r not in predictions]
        if missing:
            raise ValueError(f"objective '{self.name}' needs predicted {missing}, have {sorted(predictions)}")
        if self.is_plain:
            return np.asarray(predictions[self.reward])
        value = sum(w * np.asarray(predictions[r], dtype=np.float64) for r, w in self.terms.items())
        return value - self.cost_vector(action_ids)[None, :]

    def expected_by_slot(self, slots: Sequence[Mapping[str, np.ndarray]], action_ids: np.ndarray) -> np.ndarray:
        """(n, n_actions, n_slots) expected objective from per-slot predictions [slot] {name: (n, n_actions)}."""
        return np.stack([self.expected(p, action_ids) for p in slots], axis=2)

    def expected_by_refit(self, refits: Sequence[Sequence[Mapping[str, np.ndarray]]], action_ids: np.ndarray
                          ) -> np.ndarray:
        """(K, n, n_actions, n_slots) expected objective of K refits from [slot][refit] {name: (n, n_actions)}."""
        return np.stack([np.stack([self.expected(p, action_ids) for p in slot]) for slot in refits], axis=3)


def make_objective(
    name: str,
    action_ids: np.ndarray | list,
    margin: float = DEFAULT_MARGIN,
    push_cost: float = DEFAULT_PUSH_COST,
    no_push_action: object | None = None,
    costs: Mapping[object, float] | None = None,
    money: str = "spend",
    weights: Mapping[str, float] | None = None,
) -> Objective:
    """A plain reward `name`; "profit" = margin × `money` − cost per push; "weighted" = Σ weights[r] × r − cost
    per push. Pushes cost `push_cost` each, `no_push_action` nothing, unless `costs` is given."""
    ids = list(np.asarray(action_ids).tolist())
    if no_push_action is not None and no_push_action not in ids:
        raise ValueError(f"no_push_action {no_push_action!r} is not an action id; known: {ids}")
    if name not in ("profit", "weighted"):
        return Objective(name=name, reward=name)
    if costs is None:
        costs = {a: (0.0 if a == no_push_action else push_cost) for a in ids}
    if name == "profit":
        return Objective(name="profit", reward=money, margin=margin, costs=dict(costs))
    if not weights:
        raise ValueError("objective.reward=weighted needs objective.weights, e.g. {conversion: 1.0, revenue: 0.01}")
    terms = {str(r): float(w) for r, w in weights.items()}
    return Objective(name="weighted", reward=next(iter(terms)), costs=dict(costs), weights=terms)


def money_reward(data: LoggedData, money: str | None = None) -> str | None:
    """The reward profit is a margin of: `money` (checked against the declared rewards), else the log's one
    non-binary reward; None when the log has none or several."""
    if money is not None:
        if money not in data.reward_names:
            raise ValueError(f"objective.money={money!r} is not a declared reward; declared: {list(data.reward_names)}")
        return str(money)
    amounts = [r for r in data.reward_names if not np.isin(data.reward(r), (0.0, 1.0)).all()]
    return amounts[0] if len(amounts) == 1 else None


def find_no_push(action_ids: np.ndarray, no_push_action: object) -> int:
    """Index of the declared no-push action among `action_ids` (matched as given, else by its string form, so a
    config string matches an integer id); refused naming `data.no_push_action`."""
    ids = np.asarray(action_ids).tolist()
    if no_push_action in ids:
        return ids.index(no_push_action)
    as_text = [str(a) for a in ids]
    if str(no_push_action) in as_text:
        return as_text.index(str(no_push_action))
    raise ValueError(f"data.no_push_action={no_push_action!r} is not an action id of the log; known: {ids[:20]}")
