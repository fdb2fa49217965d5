"""What the run learns about timing from a repeat-user log matches the truth that drew it.

The synthetic sequential shop (`SyntheticConfig` with churn, no-push action, repeat users, business-rule
logging; click logit − fatigue × recent pushes, P(unsubscribe) = sigmoid(a + b × recent + c × u0)) is logged,
the response model is fitted on it (fatigue from `recent_pushes`, churn from the `unsubscribe` head), and:

* the learned simulator's fatigue multipliers and unsubscribe probabilities (`summarise_dynamics`) are within
  15% of the truth's closed forms (`SyntheticTruth.true_fatigue_multipliers` / `true_unsubscribe_probabilities`)
  for r = 0..2, and the true simulator's own summary equals those closed forms (a second implementation);
* the learned simulator ranks policy *rules* as the true simulator does (Spearman >= 0.9 of reward per user).
  Each rule is rebuilt on each world's own dynamics (a greedy of the learned world acts on the learned model,
  the true world's on the truth: the two worlds' observations are different encodings of the same users, so a
  policy of one cannot act in the other): greedy_myopic, greedy_spaced_0..2, optimum, uniform_push,
  never_push, and "always push promotion j" for three promotions; both simulators evaluate every rule with
  `rollout` on the same pool users (the same users in each world's own context space) and the same seeds.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch

from pushrl.agents.rollout import rollout
from pushrl.agents.sequential_config import SequentialConfig
from pushrl.agents.timing_study import baseline_policies
from pushrl.envs.data.split import split_log
from pushrl.envs.data.synthetic import SyntheticConfig, generate_log
from pushrl.envs.model.response import TrueResponse, truth_contexts
from pushrl.envs.model.response_model import ResponseModel, ResponseModelConfig
from pushrl.envs.sim.dynamics_summary import LEARNED, summarise_dynamics
from pushrl.envs.sim.world import build_world
from pushrl.policies.policy import ConstantPolicy

SHOP = SyntheticConfig(n_rows=40_000, n_users=1_500, n_actions=6, days=28.0, no_push=True, readable_promotions=True,
                       organic_conversion=0.1, logging="business_rule", fatigue=0.3, churn_logit=-4.5,
                       churn_slope=0.5, churn_context=0.3, seed=0)
WINDOW = 3
POOL = 600
SETTINGS = SequentialConfig(n_users=POOL, horizon=30, fatigue_window=WINDOW, frequency_cap=None, unsubscribe_cost=30.0)
OBJECTIVE = "click"


@pytest.fixture(scope="module")
def fitted():
    torch.set_num_threads(1)
    data, truth = generate_log(SHOP)
    split = split_log(data)
    model = ResponseModel.fit(split.train, split.validation, ResponseModelConfig(progress=False, seed=0))
    # one row per pool user (their first training row): the same users in both context spaces
    train = split.train
    first = pd.Series(np.arange(train.n_rounds)).groupby(train.frame["user_id"].to_numpy()).first().to_numpy()[:POOL]
    learned_ctx = model.encode(train)[0][first].astype(np.float64)
    users = truth.user_index(train.frame["user_id"].to_numpy()[first])
    categories = pd.factorize(train.catalogue.features["category"])[0]
    worlds = {}
    for name, response, pool in (("learned", model, learned_ctx), ("true", TrueResponse(truth),
                                                                    truth_contexts(truth, users))):
        worlds[name] = build_world(SETTINGS, response, pool, categories, data.action_ids, OBJECTIVE, "no_push",
                                   np.random.default_rng(0))
    return data, truth, model, users, worlds


def test_the_log_is_a_sequential_shop(fitted):
    data, truth, model, _, _ = fitted
    f = data.frame
    assert data.has_unsubscribe and model.has_unsubscribe
    rows_per_user = f.groupby("user_id").size()
    assert rows_per_user.median() >= 5  # repeat users
    assert 0.05 < np.mean(data.action == truth.no_push_action) < 0.5  # a no-push action, logged
    assert data.pscore.min() < 0.5 * data.pscore.max()  # non-uniform logging
    assert {0, 1, 2, 3} <= set(f["recent_pushes"].astype(int))
    assert f["unsubscribe"].sum() > 300


def test_learned_fatigue_and_churn_are_within_15_percent_of_the_truth(fitted):
    _, truth, _, users, worlds = fitted
    learned = summarise_dynamics(worlds["learned"].factory()(8).dynamics, worlds["learned"].shop.contexts, WINDOW)
    true = summarise_dynamics(worlds["true"].factory()(8).dynamics, worlds["true"].shop.contexts, WINDOW)
    assert learned.source == LEARNED and true.source == LEARNED
    x, seg = truth.user_features[users], truth.user_segment[users]
    closed_fatigue = truth.true_fatigue_multipliers(x, seg, WINDOW, {OBJECTIVE: 1.0})
    closed_unsub = truth.true_unsubscribe_probabilities(x, WINDOW)
    for r in range(WINDOW + 1):  # the true simulator's summary is the truth's closed form
        assert true.fatigue_multiplier[r] == pytest.approx(closed_fatigue[r], rel=1e-9)
        assert true.unsubscribe_probability[r] == pytest.approx(closed_unsub[r], rel=1e-9)
    for r in range(3):
        assert learned.fatigue_multiplier[r] == pytest.approx(closed_fatigue[r], rel=0.15), (r, learned, closed_fatigue)
        assert learned.unsubscribe_probability[r] == pytest.approx(closed_unsub[r], rel=0.15), (r, learned, closed_unsub)
    # not vacuous: the truth's fatigue and churn are far from "none"
    assert closed_fatigue[2] < 0.8 and closed_unsub[2] > 1.5 * closed_unsub[0]


def _rules(world) -> dict:
    env = world.factory()(8)
    dyn = env.dynamics
    rules = baseline_policies(dyn, 0.0, True, WINDOW, horizon=world.horizon)
    for j in (0, 2, 4):
        rules[f"always_{j}"] = ConstantPolicy(dyn.n_allowed + 1, j)
    return rules


def test_the_learned_simulator_ranks_policy_rules_like_the_true_one(fitted):
    *_, worlds = fitted
    value = {}
    for name, world in worlds.items():
        value[name] = {rule: rollout(p, world.factory(), POOL, 3, 7).metrics["reward_per_user"].mean
                       for rule, p in _rules(world).items()}
    table = pd.DataFrame(value)
    assert len(table) >= 8
    rho = scipy.stats.spearmanr(table["learned"], table["true"]).statistic
    assert rho >= 0.9, table.sort_values("true")
    # not vacuous: the rules differ by much more than their noise
    assert table["true"].max() - table["true"].min() > 0.2 * abs(table["true"]).max()


def test_a_simulator_with_the_wrong_churn_ranks_the_rules_differently(fitted):
    # control: the same truth with a far higher churn (logit -1.5 instead of -4.5) ranks the rules otherwise
    # than the learned simulator does, so the rank test can fail
    data, truth, _, users, worlds = fitted
    harsh = dataclasses.replace(truth, config=dataclasses.replace(truth.config, churn_logit=-1.5))
    world = build_world(SETTINGS, TrueResponse(harsh), truth_contexts(harsh, users),
                        worlds["true"].shop.categories, data.action_ids, OBJECTIVE, "no_push", np.random.default_rng(0))
    value = {}
    for name, w in (("harsh", world), ("learned", worlds["learned"])):
        value[name] = {rule: rollout(p, w.factory(), POOL, 3, 7).metrics["reward_per_user"].mean
                       for rule, p in _rules(w).items()}
    table = pd.DataFrame(value)
    assert scipy.stats.spearmanr(table["learned"], table["harsh"]).statistic < 0.9, table
