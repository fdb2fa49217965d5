"""What the simulator assumes about timing (`summarise_dynamics`): the fatigue multipliers and unsubscribe
probabilities by recent pushes equal the closed forms of the dynamics, and their source is reported."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.agents.sequential_config import SequentialConfig
from pushrl.envs.common.probabilities import sigmoid
from pushrl.envs.objectives import Objective
from pushrl.envs.sim.dynamics_summary import ASSUMED, LEARNED, summarise_dynamics
from pushrl.envs.sim.env_config import default_shop
from pushrl.envs.sim.world import build_world

CLICK = Objective(name="click", reward="click")


class NoFatigue:
    """The shop's truth with recent pushes ignored (like a model fitted on a log without history)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.reward_names = inner.reward_names
        self.n_context_features = getattr(inner, "n_context_features", None)

    @property
    def n_actions(self) -> int:
        return self.inner.n_actions

    def predict(self, contexts, recent, position):
        return self.inner.predict(contexts, np.zeros_like(recent), position)


class HalvingFatigue(NoFatigue):
    """Every expected outcome halves with each recent push: fatigue the response itself models."""

    def predict(self, contexts, recent, position):
        out = self.inner.predict(contexts, np.zeros_like(recent), position)
        return {r: v * (0.5 ** np.asarray(recent, dtype=np.float64))[:, None] for r, v in out.items()}


@pytest.fixture(scope="module")
def shop():
    return default_shop(0, 200, 5)


def _world(shop, response, **kw):
    cfg = SequentialConfig(n_users=100, **kw)
    return build_world(cfg, response, shop.contexts, shop.categories, shop.action_ids, CLICK, None,
                       np.random.default_rng(0))


def test_assumed_fatigue_and_churn_are_the_config_closed_forms(shop) -> None:
    world = _world(shop, NoFatigue(shop.response), fatigue_factor=0.8, churn_logit=-4.0, churn_slope=0.5)
    d = summarise_dynamics(world.factory()(8).dynamics, world.shop.contexts)
    assert d.fatigue_source == ASSUMED and d.churn_source == ASSUMED and d.source == ASSUMED
    assert d.assumed_parts == ("fatigue", "churn")
    for r in range(4):
        assert d.fatigue_multiplier[r] == pytest.approx(0.8 ** r, rel=1e-9)
        assert d.unsubscribe_probability[r] == pytest.approx(float(sigmoid(np.array(-4.0 + 0.5 * r))), rel=1e-9)
    m = d.metrics()
    assert m["source"] == ASSUMED and set(m["fatigue_multiplier"]) == {"0", "1", "2", "3"}


def test_fatigue_the_response_models_itself_is_learned_and_measured(shop) -> None:
    world = _world(shop, HalvingFatigue(shop.response), fatigue_factor=0.8)
    d = summarise_dynamics(world.factory()(8).dynamics, world.shop.contexts)
    assert d.fatigue_source == LEARNED and d.churn_source == ASSUMED and d.source == ASSUMED
    assert d.assumed_parts == ("churn",)
    assert [d.fatigue_multiplier[r] for r in range(4)] == pytest.approx([1.0, 0.5, 0.25, 0.125], rel=1e-9)
