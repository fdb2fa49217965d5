"""The push env on declared rewards: any names, binary ones drawn as Bernoulli outcomes, continuous ones
paid as their expected value, a weighted objective with push costs, and a declared no-push action that
earns its organic outcomes (checked against closed forms)."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from pushrl.envs.common.probabilities import sigmoid
from pushrl.envs.objectives import Objective
from pushrl.envs.sim.batched_env import BatchedPushEnv
from pushrl.envs.sim.push_env import PushEnv

IDS = np.array(["none", "coupon", "news", "sale"], dtype=object)  # "none" is the log's no-push action
CATEGORIES = np.array([0, 1, 2, 1])
POOL = np.random.default_rng(7).normal(size=(60, 2))
NO_CHURN = {"churn_logit": -50.0, "churn_slope": 0.0, "frequency_cap": None}
FLAT = {**NO_CHURN, "fatigue": "response"}  # the responses here have no fatigue (they ignore recent pushes)


class BasketResponse:
    """`opened` (binary) and `basket_value` (money), each its own function of the user and the action:
    no click, no chain, and positive organic outcomes for the no-push action "none"."""

    reward_names = ("opened", "basket_value")
    reward_kinds = {"opened": "binary", "basket_value": "continuous"}
    n_context_features = 2
    n_actions = 4

    bias = np.array([-2.5, -0.5, -1.0, 0.2])
    slope = np.array([[0.3, -0.2], [0.8, 0.1], [-0.4, 0.6], [0.2, 0.2]])

    def predict(self, contexts: np.ndarray, recent: np.ndarray, position: np.ndarray) -> dict[str, np.ndarray]:
        z = self.bias[None, :] + contexts @ self.slope.T
        return {"opened": sigmoid(z), "basket_value": 4.0 * np.exp(0.3 * z)}

    def expected(self, contexts: np.ndarray) -> dict[str, np.ndarray]:
        """The same numbers, for the closed forms."""
        return self.predict(contexts, np.zeros(len(contexts)), np.zeros(len(contexts), dtype=np.int64))


def env(n: int | None = None, horizon: int = 10, **cfg: object):
    shop = {"response": BasketResponse(), "contexts": POOL, "categories": CATEGORIES, "action_ids": IDS}
    cfg = {**FLAT, **cfg}
    if n is None:
        return PushEnv(**shop, **cfg)
    return BatchedPushEnv(n, horizon, **shop, **cfg)


WEIGHTED = Objective(name="weighted", reward="opened", weights={"opened": 2.0, "basket_value": 0.05},
                     costs={"coupon": 0.3, "news": 0.1, "sale": 0.1})


def test_check_env_with_declared_rewards_and_a_no_push_action() -> None:
    check_env(env(objective=WEIGHTED, no_push_action="none", diversity_weight=0.2), skip_render_check=True)
    e = env(objective={"opened": 1.0})
    assert e.action_space.n == 5 and e.dynamics.response_reward == "opened"  # no no-push action: all four pushable
    assert env(no_push_action="none").action_space.n == 4


def test_weighted_objective_with_costs_is_the_reward() -> None:
    e = env(objective=WEIGHTED, no_push_action="none", push_cost=0.02, diversity_weight=0.1)
    response = BasketResponse()
    obs, info = e.reset(seed=0)
    for action in [0, 1, 3, 2, 0, 0]:  # env actions: 0 coupon, 1 news, 2 sale, 3 push nothing
        user = int(info["user"])
        _, reward, _, _, info = e.step(action)
        q = response.expected(POOL[[user]])
        item = [1, 2, 3, 0][action]  # catalogue index of the day's row (0 = the organic "none")
        assert "click" not in info and set(e.dynamics.outcomes) <= set(info)
        assert info["opened"] in (0.0, 1.0)
        assert info["basket_value"] == pytest.approx(q["basket_value"][0, item])  # money: its expected value
        cost = WEIGHTED.costs.get(IDS[item], 0.0)
        objective = 2.0 * info["opened"] + 0.05 * info["basket_value"] - cost
        assert info["objective"] == pytest.approx(objective)
        assert reward == pytest.approx(objective + 0.1 * info["diversity"] - 0.02 * info["pushed"])
        assert info["pushed"] == (action != 3)


def test_a_mapping_objective_has_no_push_costs() -> None:
    e = env(objective={"basket_value": 1.0})
    e.reset(seed=1)
    _, reward, _, _, info = e.step(2)
    assert reward == pytest.approx(info["basket_value"]) and info["basket_value"] > 0


@pytest.mark.parametrize("kind", ["binary", "continuous"])
def test_never_push_earns_the_organic_outcomes_in_closed_form(kind: str) -> None:
    """No churn, never push, T days: E[return] = T × mean over the pool of the no-push action's objective."""
    n, horizon = 3_000, 12
    objective = {"opened": 1.0} if kind == "binary" else {"basket_value": 1.0}
    e = env(n, horizon, objective=objective, no_push_action="none")
    _, info = e.reset(seed=3)
    users = info["user"]
    total = np.zeros(n)
    for _ in range(horizon):
        _, reward, terminated, truncated, _ = e.step(np.full(n, e.dynamics.n_allowed))
        total += reward
    assert truncated.all() and not terminated.any()
    q = BasketResponse().expected(POOL)
    if kind == "continuous":  # paid as expected value: exact for every user
        np.testing.assert_allclose(total, horizon * q["basket_value"][users, 0], rtol=1e-12)
    else:  # Bernoulli: T draws of p_u for each user
        p = q["opened"][users, 0]
        want, se = horizon * p.mean(), np.sqrt((horizon * p * (1 - p)).sum()) / n
        assert abs(total.mean() - want) < 4 * se, (total.mean(), want, se)
        assert total.mean() > 0.5 * want > 0
    # without a declared no-push action, pushing nothing earns nothing
    plain = env(n, horizon, objective=objective)
    plain.reset(seed=3)
    _, reward, *_ = plain.step(np.full(n, plain.dynamics.n_allowed))
    assert not reward.any()


def test_multiplicative_fatigue_scales_pushes_not_organic_outcomes() -> None:
    e = env(objective={"basket_value": 1.0}, no_push_action="none", fatigue="multiplicative", fatigue_factor=0.5)
    _, info = e.reset(seed=2)
    q = BasketResponse().expected(POOL[[int(info["user"])]])["basket_value"][0]
    assert e.step(0)[4]["basket_value"] == pytest.approx(q[1])  # rested push: unscaled
    assert e.step(0)[4]["basket_value"] == pytest.approx(0.5 * q[1])  # one push in the window: halved
    assert e.step(3)[4]["basket_value"] == pytest.approx(q[0])  # organic day: not scaled


def test_expected_objective_is_q_of_a_push_and_q_of_no_push() -> None:
    e = env(objective=WEIGHTED, no_push_action="none")
    q = BasketResponse().expected(POOL)
    value = 2.0 * q["opened"] + 0.05 * q["basket_value"]
    got = e.dynamics.expected_objective(POOL, np.zeros(len(POOL)))
    np.testing.assert_allclose(got[:, :3], value[:, 1:] - np.array([0.3, 0.1, 0.1]), rtol=1e-12)
    np.testing.assert_allclose(got[:, 3], value[:, 0], rtol=1e-12)  # push nothing = the organic objective
    assert not env(objective=WEIGHTED).dynamics.expected_objective(POOL, np.zeros(len(POOL)))[:, -1].any()


def test_bernoulli_frequencies_match_the_expectation() -> None:
    """Pushing `sale` to every user: the share of opens per pool user matches q (chi-square over users)."""
    n, days = 6_000, 4
    e = env(n, days, objective={"opened": 1.0})
    _, info = e.reset(seed=11)
    users = info["user"]
    opens = np.zeros(n)
    for _ in range(days):
        _, _, _, _, step = e.step(np.full(n, 3))  # action 3 = catalogue "sale"
        opens += step["opened"]
    p = BasketResponse().expected(POOL)["opened"][users, 3]
    z = (opens.sum() - days * p.sum()) / np.sqrt(days * (p * (1 - p)).sum())
    assert abs(z) < 4, z
    by_user = np.bincount(users, weights=opens, minlength=len(POOL))
    trials = days * np.bincount(users, minlength=len(POOL))
    seen = trials > 0
    p_pool = BasketResponse().expected(POOL)["opened"][:, 3]
    chi2 = (((by_user - trials * p_pool) ** 2) / (trials * p_pool * (1 - p_pool)))[seen].sum()
    dof = int(seen.sum())
    assert chi2 < dof + 5 * np.sqrt(2 * dof), (chi2, dof)  # far below a 5-sigma excess


class TwoBinary:
    """Two binary rewards with fixed probabilities (0.6 and 0.25) for every user and promotion."""

    reward_names = ("opened", "bought")
    reward_kinds = {"opened": "binary", "bought": "binary"}
    n_context_features = 2
    n_actions = 4

    def predict(self, contexts: np.ndarray, recent: np.ndarray, position: np.ndarray) -> dict[str, np.ndarray]:
        n = len(contexts)
        return {"opened": np.full((n, 4), 0.6), "bought": np.full((n, 4), 0.25)}


def test_binary_rewards_keep_their_marginals_and_stay_nested() -> None:
    n = 20_000
    e = BatchedPushEnv(n, 2, response=TwoBinary(), contexts=POOL, categories=CATEGORIES, **FLAT)
    e.reset(seed=5)
    _, _, _, _, info = e.step(np.zeros(n, dtype=np.int64))
    for r, p in (("opened", 0.6), ("bought", 0.25)):
        assert abs(info[r].mean() - p) < 4 * np.sqrt(p * (1 - p) / n), r
    assert (info["bought"] <= info["opened"]).all()  # one shared uniform: the rarer outcome implies the likelier


def test_undeclared_kinds_are_paid_as_expected_values() -> None:
    class Undeclared(TwoBinary):
        reward_kinds = None

    e = BatchedPushEnv(50, 2, response=Undeclared(), contexts=POOL, categories=CATEGORIES, **FLAT)
    e.reset(seed=0)
    _, reward, _, _, info = e.step(np.zeros(50, dtype=np.int64))
    np.testing.assert_allclose(info["opened"], 0.6)
    np.testing.assert_allclose(reward, 0.6)  # objective None: the first reward
    assert e.dynamics.binary == () and e.dynamics.response_reward is None


def test_next_step_reset_earns_no_organic_outcome() -> None:
    e = env(3, 1, objective={"basket_value": 1.0}, no_push_action="none", autoreset_mode="NextStep")
    e.reset(seed=0)
    _, reward, _, truncated, _ = e.step(np.full(3, 3))
    assert truncated.all() and (reward > 0).all()  # the organic day counts
    _, reward, _, _, info = e.step(np.full(3, 3))  # the reset step
    assert not reward.any() and not info["basket_value"].any() and not info["objective"].any()


def test_organic_days_do_not_count_in_the_observed_response_rate() -> None:
    e = env(objective={"opened": 1.0}, no_push_action="none")
    obs, _ = e.reset(seed=0)
    for _ in range(20):
        obs, *_ = e.step(3)  # push nothing: organic opens happen, but no push was answered
    assert obs[e.layout.response_rate] == 0.0
