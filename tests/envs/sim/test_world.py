"""The simulated shop over a response model (`build_world`): the declared objective as the simulator pays it,
the organic no-push, the cost unit ("average pushes") and the pool, and what is refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pushrl.agents.sequential_config import SequentialConfig
from pushrl.envs.objectives import Objective, make_objective
from pushrl.envs.sim.env_config import default_shop
from pushrl.envs.sim.world import World, build_world, objective_label

CLICK = Objective(name="click", reward="click")


@pytest.fixture(scope="module")
def shop():
    return default_shop(0, 300, 6)


class HillstromLike:
    """Hillstrom's reward names on the synthetic truth, and a "No E-Mail" action (index 0) whose
    expected visits and spend are a third of a push's (organic ones)."""

    reward_names = ("visit", "conversion", "spend")
    reward_kinds = {"visit": "binary", "conversion": "binary", "spend": "continuous"}

    def __init__(self, truth_response) -> None:
        self.inner = truth_response
        self.n_context_features = truth_response.truth.config.n_user_features + truth_response.truth.config.n_segments

    @property
    def n_actions(self) -> int:
        return self.inner.n_actions

    def predict(self, contexts, recent, position):
        out = self.inner.predict(contexts, recent, position)
        for v in out.values():
            v[:, 0] /= 3.0
        return {"visit": out["click"], "conversion": out["conversion"], "spend": out["revenue"]}


def test_the_simulator_pays_the_declared_objective_and_the_organic_no_push(shop) -> None:
    ids = np.array(["No E-Mail"] + [f"promo{i}" for i in range(1, shop.n_actions)], dtype=object)
    profit = make_objective("profit", ids, margin=0.3, push_cost=0.1, no_push_action="No E-Mail", money="spend")
    response = HillstromLike(shop.response)
    world = build_world(SequentialConfig(n_users=50), response, shop.contexts, shop.categories, ids, profit,
                        "No E-Mail", np.random.default_rng(0))
    assert world.config.objective is profit and world.config.no_push_action == "No E-Mail"
    assert world.label == "profit" and world.rewards == ("visit", "conversion", "spend")
    assert len(world.shop.contexts) == 50
    env = world.factory()(4)
    assert env.dynamics.n_allowed == shop.n_actions - 1 and env.dynamics.weights == {"spend": 0.3}
    # the unit (gross profit of a rested push) and the organic baseline, recomputed from the response
    pool = world.shop.contexts
    q = response.predict(pool, np.zeros(len(pool)), np.zeros(len(pool), dtype=np.int64))
    assert world.unit == pytest.approx(0.3 * q["spend"][:, 1:].mean())
    assert world.no_push_baseline == pytest.approx(0.3 * q["spend"][:, 0].mean()) and world.no_push_baseline > 0
    notes = " ".join(world.notes)
    assert "profit = 0.3 × spend − the objective's cost of each push (0.1)" in notes
    assert "`No E-Mail` is the simulator's push-nothing action" in notes and "plays" not in notes
    assert "visit, conversion drawn as 0/1 outcomes" in notes and "spend paid as the model's expected value" in notes
    assert world.config.unsubscribe_penalty == pytest.approx(30.0 * world.unit)


def test_bad_no_push_action_and_objective_are_refused(shop) -> None:
    cfg = SequentialConfig(n_users=50)
    with pytest.raises(ValueError, match=r"no_push_action 'nope' is not one of the log's action ids"):
        build_world(cfg, shop.response, shop.contexts, shop.categories, shop.action_ids, CLICK, "nope",
                    np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"objective needs reward\(s\) \['visit'\]"):
        build_world(cfg, shop.response, shop.contexts, shop.categories, shop.action_ids,
                    Objective(name="visit", reward="visit"), None, np.random.default_rng(0))


@dataclasses.dataclass
class Settings:
    """Any object with the WorldSettings fields will do (not only SequentialConfig)."""

    n_users: int = 40
    horizon: int = 6
    fatigue_window: int = 2
    fatigue_factor: float = 0.9
    churn_logit: float = -4.0
    churn_slope: float = 0.3
    frequency_cap: int | None = 2
    unsubscribe_cost: float = 10.0
    push_cost: float = 0.5
    diversity_weight: float = 2.0


def test_costs_are_in_average_pushes_and_the_pool_is_subsampled(shop) -> None:
    s = Settings()
    world = build_world(s, shop.response, shop.contexts, shop.categories, shop.action_ids, CLICK, None,
                        np.random.default_rng(1))
    assert isinstance(world, World) and world.horizon == 6 and world.no_push_baseline is None
    q = shop.response.predict(world.shop.contexts, np.zeros(40), np.zeros(40, dtype=np.int64))["click"]
    assert world.unit == pytest.approx(q.mean())  # every promotion is pushable: the unit is the mean click rate
    c = world.config
    assert (c.unsubscribe_penalty, c.push_cost, c.diversity_weight) == pytest.approx(
        (10.0 * world.unit, 0.5 * world.unit, 2.0 * world.unit))
    assert (c.horizon, c.fatigue_window, c.fatigue_factor, c.churn_logit, c.churn_slope, c.frequency_cap) == (
        6, 2, 0.9, -4.0, 0.3, 2)
    # the pool: 40 of the 300 users, in their original order, the same for the same rng
    rows = np.sort(np.random.default_rng(1).choice(300, size=40, replace=False))
    np.testing.assert_array_equal(world.shop.contexts, shop.contexts[rows])
    # the factory: the world's λ, or an absolute λ instead
    assert world.factory()(3).config.diversity_weight == c.diversity_weight
    env = world.factory(0.125)(5)
    assert env.num_envs == 5 and env.config.diversity_weight == 0.125 and env.max_episode_steps == 6
    assert objective_label("click") == "click" and objective_label({"click": 1.0}) == "weighted"
