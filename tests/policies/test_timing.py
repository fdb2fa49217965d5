"""When-to-push baselines: the myopic greedy against a hand computation (read through the env's layout),
its spacing rule, and always-push-uniform."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.envs.sim.env_config import PushEnvConfig, Shop
from pushrl.envs.sim.push_env import PushDynamics
from pushrl.policies.policy import UniformPolicy
from pushrl.policies.timing import AlwaysPushUniform, MyopicGreedy


class FixedClicks:
    """Click probability per promotion, the same for every user (no fatigue reaction)."""

    reward_names = ("click",)
    n_context_features = 2

    def __init__(self, click: list[float]) -> None:
        self.click = np.asarray(click)

    @property
    def n_actions(self) -> int:
        return len(self.click)

    def predict(self, contexts, recent, position):
        return {"click": np.tile(self.click, (len(contexts), 1))}


def test_myopic_greedy_matches_hand_computation() -> None:
    shop = Shop.build(FixedClicks([0.10, 0.30, 0.20]), np.zeros((5, 2)), np.array([0, 0, 1]), np.arange(3))
    cfg = PushEnvConfig(churn_logit=-2.0, churn_slope=0.5, unsubscribe_penalty=0.4, push_cost=0.05,
                        fatigue="multiplicative", fatigue_factor=0.5, frequency_cap=2, cap_window=7)
    dyn = PushDynamics(cfg, shop)
    lay, c = dyn.layout, dyn.n_categories
    obs = np.zeros((3, lay.width), dtype=np.float32)
    obs[1, lay.recent_pushes] = 1.0  # one recent push
    obs[1, lay.category_pushes.start + 0] = 3.0  # category 0 pushed lately
    obs[2, lay.cap_hit] = 1.0  # cap hit
    lam = 0.25
    scores = MyopicGreedy(dyn, lam).scores(obs)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    clicks = np.array([0.10, 0.30, 0.20])
    cats = np.array([0, 0, 1])
    for i, recent in ((0, 0.0), (1, 1.0)):
        novelty = 1 / (1 + obs[i, lay.category_pushes][cats])
        want = clicks * 0.5**recent + lam * novelty - 0.05 - 0.4 * sig(-2.0 + 0.5 * recent)
        np.testing.assert_allclose(scores[i, :3], want, rtol=1e-6)
    assert scores[0, 3] == 0 and np.all(np.isneginf(scores[2, :3]))
    probs = MyopicGreedy(dyn, lam).action_probabilities(obs)
    assert probs[0].argmax() == 1 and probs[2].argmax() == 3  # the best push, then nothing when capped
    assert c == 2
    # a large enough unsubscribe penalty makes pushing a loss: push nothing
    dyn2 = PushDynamics(PushEnvConfig(churn_logit=-2.0, unsubscribe_penalty=10.0), shop)
    assert MyopicGreedy(dyn2, 0.0).action_probabilities(np.zeros((1, dyn2.layout.width)))[0].argmax() == 3


def test_the_spacing_rule_pushes_nothing_to_users_pushed_too_often() -> None:
    shop = Shop.build(FixedClicks([0.10, 0.30, 0.20]), np.zeros((5, 2)), np.array([0, 0, 1]), np.arange(3))
    dyn = PushDynamics(PushEnvConfig(churn_logit=-8.0, frequency_cap=None), shop)
    obs = np.zeros((3, dyn.layout.width))
    obs[:, dyn.layout.recent_pushes] = [0.0, 1.0, 2.0]
    daily = MyopicGreedy(dyn, 0.0).action_probabilities(obs)
    spaced = MyopicGreedy(dyn, 0.0, max_recent=1).action_probabilities(obs)
    assert (daily.argmax(axis=1) == 1).all()  # without the rule every user is pushed the best promotion
    np.testing.assert_array_equal(spaced.argmax(axis=1), [1, 1, 3])  # more than 1 recent push: nothing
    assert MyopicGreedy(dyn, 0.0).n_features == dyn.layout.width and MyopicGreedy(dyn, 0.0).n_actions == 4


def test_always_push_uniform_never_pushes_nothing() -> None:
    policy = AlwaysPushUniform(4)
    p = policy.action_probabilities(np.zeros((3, 2)))
    np.testing.assert_allclose(p, np.tile([0.25, 0.25, 0.25, 0.25, 0.0], (3, 1)))
    assert policy.n_actions == 5
    actions, propensities = policy.act(np.zeros((500, 2)), np.random.default_rng(0))
    assert set(actions.tolist()) == {0, 1, 2, 3} and np.allclose(propensities, 0.25)
    # not UniformPolicy: that one gives push nothing its share too
    assert UniformPolicy(5).action_probabilities(np.zeros((1, 2)))[0, -1] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="n_promotions"):
        AlwaysPushUniform(0)
