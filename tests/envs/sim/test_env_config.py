"""Bad PushEnv configurations and shops are refused at construction, naming the key and what is allowed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pushrl.envs.data.synthetic import SyntheticConfig, make_truth
from pushrl.envs.model.response import TrueResponse, truth_contexts
from pushrl.envs.sim.batched_env import BatchedPushEnv
from pushrl.envs.sim.env_config import PushEnvConfig, default_shop
from pushrl.envs.sim.push_env import PushEnv

BAD_CONFIGS: list[tuple[dict[str, Any], str]] = [
    ({"diversity_weight": -0.1}, r"diversity_weight must be λ >= 0, got -0.1"),
    ({"diversity_weight": float("nan")}, r"diversity_weight must be λ >= 0"),
    ({"horizon": 0}, r"horizon must be an integer >= 1, got 0"),
    ({"horizon": 2.5}, r"horizon must be an integer >= 1"),
    ({"objective": 3}, r"objective must be a reward name, a \{reward: weight\} mapping, an Objective or None, got int"),
    ({"objective": ""}, r"objective must be a reward name"),
    ({"objective": {}}, r"objective as a mapping must be a non-empty \{reward name: finite weight\}, got \{\}"),
    ({"objective": {"click": float("nan")}}, r"objective as a mapping must be a non-empty"),
    ({"fatigue": "sometimes"}, r"fatigue must be one of \('auto', 'response', 'multiplicative'\)"),
    ({"fatigue_factor": 0.0}, r"fatigue_factor must be in \(0, 1\]"),
    ({"history_decay": 1.0}, r"history_decay must be in \[0, 1\)"),
    ({"push_cost": -1.0}, r"push_cost must be >= 0"),
    ({"unsubscribe_penalty": -1.0}, r"unsubscribe_penalty must be >= 0"),
    ({"churn_slope": -0.1}, r"churn_slope must be >= 0"),
    ({"frequency_cap": 0}, r"frequency_cap must be an integer >= 1 or None"),
    ({"cap_window": 0}, r"cap_window must be an integer >= 1"),
    ({"slate_size": 0}, r"slate_size must be an integer >= 1"),
    ({"allowed_promotions": (1, 1)}, r"allowed_promotions must be None or distinct promotion ids"),
]


@pytest.mark.parametrize(("overrides", "match"), BAD_CONFIGS)
def test_bad_config_is_refused(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PushEnvConfig(**overrides)
    with pytest.raises(ValueError, match=match):
        PushEnv(**overrides)


def test_unknown_config_key_is_refused_listing_the_allowed_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown PushEnvConfig key\(s\) \['diversity_wieght'\]; allowed keys: \['objective'"):
        PushEnv(diversity_wieght=0.5)
    with pytest.raises(ValueError, match="unknown PushEnvConfig key"):
        BatchedPushEnv(num_envs=2, config={"lambda": 0.5})


def test_config_dict_and_overrides() -> None:
    env = PushEnv(config={"diversity_weight": 0.3, "slate_size": 2}, slate_size=3)
    assert env.config.diversity_weight == 0.3 and env.config.slate_size == 3


def test_slate_larger_than_the_catalogue_is_refused() -> None:
    with pytest.raises(ValueError, match=r"slate_size=11 must be <= the number of promotions that may be pushed \(10\)"):
        PushEnv(slate_size=11)
    with pytest.raises(ValueError, match=r"slate_size=3 must be <= the number of promotions that may be pushed \(2\)"):
        PushEnv(slate_size=3, allowed_promotions=(0, 1))


def test_unknown_allowed_promotion_is_refused() -> None:
    with pytest.raises(ValueError, match=r"allowed_promotions has unknown promotion id\(s\) \[99\]; known ids: \[0, 1, 2"):
        PushEnv(allowed_promotions=(1, 99))
    shop = default_shop()
    ids = np.array([f"promo_{i}" for i in range(10)])
    env = PushEnv(shop.response, shop.contexts, shop.categories, ids, allowed_promotions=("promo_3",))
    assert env.dynamics.promotion_index.tolist() == [3]
    with pytest.raises(ValueError, match=r"unknown promotion id\(s\) \['promo_10'\]"):
        PushEnv(shop.response, shop.contexts, shop.categories, ids, allowed_promotions=("promo_10",))


def test_response_with_other_number_of_promotions_is_refused() -> None:
    shop = default_shop()
    bigger = TrueResponse(make_truth(SyntheticConfig(n_users=50, n_actions=12)))
    with pytest.raises(ValueError, match=r"response.n_actions=12 differs from the env's number of promotions \(action_ids/categories have 10\)"):
        PushEnv(bigger, shop.contexts, shop.categories)


def test_response_with_other_context_width_is_refused() -> None:
    shop = default_shop()
    wide = TrueResponse(make_truth(SyntheticConfig(n_users=50, n_user_features=6)))
    with pytest.raises(ValueError, match=r"response expects contexts of width 9 but the env's contexts have width 7"):
        PushEnv(wide, shop.contexts, shop.categories)


class Opaque:
    """A response that does not say its context width (like a model without the attribute)."""

    reward_names = ("click",)
    n_actions = 10

    def predict(self, contexts: np.ndarray, recent_pushes: np.ndarray, position: np.ndarray) -> dict:
        if contexts.shape[1] != 5:
            raise ValueError(f"expected 5 features, got {contexts.shape[1]}")
        return {"click": np.full((len(contexts), 10), 0.1)}


def test_width_mismatch_of_an_opaque_response_is_caught_by_probing() -> None:
    with pytest.raises(ValueError, match=r"failed on the env's contexts \(width 7\): expected 5 features"):
        PushEnv(Opaque(), default_shop().contexts)
    env = PushEnv(Opaque(), np.zeros((3, 5)))
    assert env.dynamics.fatigue_mode == "multiplicative" and env.dynamics.outcomes == ("click",)


class OnePosition(Opaque):
    def predict(self, contexts: np.ndarray, recent_pushes: np.ndarray, position: np.ndarray) -> dict:
        if position.max() > 0:
            raise ValueError("position must be ints in [0, 1)")
        return super().predict(contexts, recent_pushes, position)


def test_slate_beyond_the_response_positions_is_refused() -> None:
    with pytest.raises(ValueError, match=r"slate_size=2 needs display positions 0..1, which the response function refuses"):
        PushEnv(OnePosition(), np.zeros((3, 5)), slate_size=2)


def test_objective_the_response_cannot_give_is_refused() -> None:
    with pytest.raises(ValueError, match=r"objective needs reward\(s\) \['revenue'\] but the response function has reward_names \['click'\]"):
        PushEnv(Opaque(), np.zeros((3, 5)), objective="revenue")
    with pytest.raises(ValueError, match=r"objective needs reward\(s\) \['spend'\]"):
        PushEnv(Opaque(), np.zeros((3, 5)), objective={"click": 1.0, "spend": 0.1})


def test_bad_no_push_action_is_refused() -> None:
    with pytest.raises(ValueError, match=r"no_push_action=99 is not a promotion id; known ids: \[0, 1, 2"):
        PushEnv(no_push_action=99)
    with pytest.raises(ValueError, match=r"allowed_promotions includes the no-push action 3, which cannot be pushed"):
        PushEnv(no_push_action=3, allowed_promotions=(1, 3))
    one = default_shop(0, 50, 1)
    with pytest.raises(ValueError, match="every promotion is the no-push action 0: nothing to push"):
        PushEnv(one.response, one.contexts, one.categories, no_push_action=0)
    env = PushEnv(no_push_action=3)
    assert env.action_space.n == 10 and 3 not in env.dynamics.promotion_index


class Named(Opaque):
    """A response whose one binary reward has a given name and expected value."""

    def __init__(self, name: str, value: float = 0.1) -> None:
        self.reward_names, self.reward_kinds, self.value = (name,), {name: "binary"}, value

    def predict(self, contexts: np.ndarray, recent_pushes: np.ndarray, position: np.ndarray) -> dict:
        return {self.reward_names[0]: np.full((len(contexts), 10), self.value)}


@pytest.mark.parametrize("name", ["pushed", "objective", "reward", "_mask"])
def test_reward_names_that_clash_with_the_env_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=rf"reward name\(s\) \['{name}'\] clash with the push env's own"):
        PushEnv(Named(name), np.zeros((3, 5)))


def test_binary_reward_outside_zero_one_and_bad_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match=r"declares reward 'opened' binary but predicts expected values in \[1.5, 1.5\]"):
        PushEnv(Named("opened", 1.5), np.zeros((3, 5)))
    bad = Named("opened")
    bad.reward_kinds = {"opened": "count"}
    with pytest.raises(ValueError, match=r"reward_kinds must map the response's rewards \['opened'\] to one of"):
        PushEnv(bad, np.zeros((3, 5)))


def test_shop_parts_must_come_together() -> None:
    shop = default_shop()
    with pytest.raises(ValueError, match="pass both response and contexts or neither"):
        PushEnv(response=shop.response)
    with pytest.raises(ValueError, match=r"contexts must be a finite \(n_pool >= 1, d\) array, got shape \(0, 7\)"):
        PushEnv(shop.response, np.zeros((0, 7)))
    with pytest.raises(TypeError, match="response must satisfy ResponseFunction"):
        PushEnv(object(), shop.contexts)
    truth = make_truth(SyntheticConfig(n_users=20))
    env = PushEnv(TrueResponse(truth), truth_contexts(truth))
    assert env.dynamics.n_categories == 10  # no categories given: each promotion its own


def test_batched_env_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="num_envs must be an integer >= 1, got 0"):
        BatchedPushEnv(num_envs=0)
    with pytest.raises(ValueError, match="max_episode_steps must be None or an integer >= 1"):
        BatchedPushEnv(num_envs=2, max_episode_steps=0)
    with pytest.raises(ValueError, match="autoreset_mode must be one of"):
        BatchedPushEnv(num_envs=2, autoreset_mode="Sometimes")
