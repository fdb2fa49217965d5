"""ObservationLayout: its fields tile the observation exactly, each reads the right value from a real env
step, and the single and batched env share one layout and agree on what it reads."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.envs.sim.batched_env import BatchedPushEnv
from pushrl.envs.sim.env_config import Shop, default_shop
from pushrl.envs.sim.observation import FIELDS, ObservationLayout
from pushrl.envs.sim.push_env import PushEnv, observation_names

NO_CHURN = {"churn_logit": -50.0, "churn_slope": 0.0, "fatigue_factor": 1.0}  # and no fatigue: sure clicks stay sure


class SureClick:
    """Every push of every promotion is clicked (click = 1 with fatigue_factor 1), nothing organic."""

    reward_names = ("click",)
    reward_kinds = {"click": "binary"}
    n_context_features = 2
    n_actions = 3

    def predict(self, contexts, recent, position):
        return {"click": np.ones((len(contexts), self.n_actions))}


def sure_click_shop() -> Shop:
    contexts = np.array([[0.5, -1.0], [2.0, 3.0], [-0.25, 0.75]])
    return Shop.build(SureClick(), contexts, np.array([0, 1, 1]), np.arange(3))


@pytest.mark.parametrize(("d", "c"), [(0, 1), (1, 1), (5, 3), (12, 7)])
def test_the_fields_tile_the_observation(d: int, c: int) -> None:
    layout = ObservationLayout(d, c)
    slices = layout.slices()
    assert tuple(slices) == FIELDS
    covered = np.zeros(layout.width, dtype=np.int64)
    stop = 0
    for name, s in slices.items():
        assert s.start == stop, f"{name} starts at {s.start}, the previous field ended at {stop}"  # no gap, no overlap
        assert s.stop > s.start or (name == "context" and d == 0)
        covered[s] += 1
        stop = s.stop
    assert stop == layout.width == d + 5 + c and (covered == 1).all()
    assert layout.history == slice(d, layout.day) and layout.day == layout.width - 1
    assert len(layout.names()) == layout.width and layout.names()[layout.cap_hit] == "cap_hit"
    assert layout.names()[layout.recent_pushes] == "recent_pushes" and layout.names()[layout.day] == "day"
    assert observation_names(d, c) == layout.names()


def test_the_columns_are_where_the_docstring_says() -> None:
    """The order is part of the contract: exported SB3 policies take the observation by these names."""
    assert ObservationLayout(5, 3).slices() == {
        "context": slice(0, 5), "recent_pushes": slice(5, 6), "days_since_push": slice(6, 7),
        "response_rate": slice(7, 8), "category_pushes": slice(8, 11), "cap_hit": slice(11, 12), "day": slice(12, 13)}


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="n_categories"):
        ObservationLayout(3, 0)
    with pytest.raises(ValueError, match="context_width"):
        ObservationLayout(-1, 2)


def test_envs_expose_the_layout_of_their_observation_space() -> None:
    shop = default_shop(0, 200, 6)
    single = PushEnv(response=shop.response, contexts=shop.contexts, categories=shop.categories)
    batched = BatchedPushEnv(3, response=shop.response, contexts=shop.contexts, categories=shop.categories)
    assert single.layout == batched.layout == single.dynamics.layout
    assert single.layout == ObservationLayout(shop.contexts.shape[1], shop.n_categories)
    assert single.observation_space.shape == (single.layout.width,)
    assert batched.single_observation_space.shape == (batched.layout.width,)
    assert single.observation_names == batched.observation_names == single.layout.names()
    space = single.observation_space
    assert space.high[single.layout.cap_hit] == 1.0 and space.high[single.layout.days_since_push] == 1.0
    assert space.high[single.layout.recent_pushes] == single.config.fatigue_window
    assert space.low[single.layout.day] == 0.0 and space.high[single.layout.day] == 1.0


def test_each_field_reads_its_value_after_real_steps() -> None:
    """Push promotion 1 (category 1) on day 1, then nothing, with a cap of 1 push per 3 days."""
    env = PushEnv(response=SureClick(), contexts=sure_click_shop().contexts, categories=np.array([0, 1, 1]),
                  config={"frequency_cap": 1, "cap_window": 3, "horizon": 10, "history_decay": 0.5, **NO_CHURN})
    lay = env.layout
    obs, info = env.reset(seed=0, options={"user": 1})
    np.testing.assert_array_equal(obs[lay.context], [2.0, 3.0])
    assert obs[lay.recent_pushes] == 0 and obs[lay.days_since_push] == 1.0 and obs[lay.response_rate] == 0
    assert not obs[lay.category_pushes].any() and obs[lay.cap_hit] == 0 and obs[lay.day] == 0
    obs, _, _, _, info = env.step(1)
    assert obs[lay.day] == pytest.approx(1 / 10)
    assert info["pushed"] and info["click"] == 1
    np.testing.assert_array_equal(obs[lay.context], [2.0, 3.0])  # the context does not change
    assert obs[lay.recent_pushes] == 1
    assert obs[lay.days_since_push] == pytest.approx(1 / 10)
    assert obs[lay.response_rate] == 1.0  # one push, one click
    np.testing.assert_array_equal(obs[lay.category_pushes], [0.0, 1.0])
    assert obs[lay.cap_hit] == 1.0  # one push in the last 3 days: a push tomorrow would be refused
    obs, _, _, _, info = env.step(3)  # push nothing
    assert not info["pushed"]
    assert obs[lay.recent_pushes] == 1 and obs[lay.days_since_push] == pytest.approx(2 / 10)
    np.testing.assert_allclose(obs[lay.category_pushes], [0.0, 0.5])  # decayed by history_decay
    assert obs[lay.cap_hit] == 1.0
    obs, *_ = env.step(3)
    assert obs[lay.cap_hit] == 0.0 and obs[lay.recent_pushes] == 1  # out of the cap window, not the fatigue window
    obs, *_ = env.step(3)
    assert obs[lay.recent_pushes] == 0 and obs[lay.days_since_push] == pytest.approx(4 / 10)
    assert obs[lay.day] == pytest.approx(4 / 10)
    for _ in range(10):
        obs, *_ = env.step(3)
    assert obs[lay.day] == 1.0  # capped at 1 past the horizon (no TimeLimit here)
    assert env.reset(seed=1)[0][lay.day] == 0.0  # a new user starts at day 0


def test_single_and_batched_env_read_the_same_fields() -> None:
    """The same users and actions in PushEnv and BatchedPushEnv give the same values in every field
    (sure clicks: no draw decides an outcome, so both envs see the same history)."""
    shop = sure_click_shop()
    kw = {"response": shop.response, "contexts": shop.contexts, "categories": shop.categories,
          "config": {"frequency_cap": 2, "cap_window": 4, **NO_CHURN}}
    users = np.array([2, 0, 1])
    actions = np.array([[0, 2, 1], [0, 3, 1], [2, 2, 3], [3, 0, 2], [1, 3, 0]])  # 3 = push nothing
    batched = BatchedPushEnv(len(users), **kw)
    lay = batched.layout
    batched.reset(seed=0)
    state = batched._state
    batched.dynamics.reset_users(state, slice(None), batched.np_random, users)  # the chosen pool users
    rows = [state.obs.copy()]
    for a in actions:
        obs, *_ = batched.step(a)
        rows.append(obs)
    for j, user in enumerate(users):
        single = PushEnv(**kw)
        obs, _ = single.reset(seed=0, options={"user": int(user)})
        seen = [obs]
        for a in actions[:, j]:
            seen.append(single.step(int(a))[0])
        for t, (one, many) in enumerate(zip(seen, rows, strict=True)):
            for name, where in lay.slices().items():
                np.testing.assert_allclose(one[where], many[j, where], err_msg=f"user {user}, day {t}, {name}")


@pytest.mark.parametrize("mode", ["SameStep", "NextStep", "Disabled"])
def test_day_restarts_at_zero_for_a_new_user_in_every_autoreset_mode(mode: str) -> None:
    """day = steps in the current episode / horizon: an independent counter from the env's dones."""
    shop = sure_click_shop()
    env = BatchedPushEnv(4, max_episode_steps=3, autoreset_mode=mode, response=shop.response, contexts=shop.contexts,
                         categories=shop.categories, config={"horizon": 5, **NO_CHURN})
    lay = env.layout
    obs, _ = env.reset(seed=0)
    elapsed = np.zeros(4)
    np.testing.assert_array_equal(obs[:, lay.day], elapsed)
    pending = np.zeros(4, dtype=bool)  # next-step: the step after a done resets
    for t in range(8):
        if mode == "Disabled" and t % 3 == 0 and t:
            obs, _ = env.reset(options={"reset_mask": np.ones(4, dtype=bool)})
            elapsed[:] = 0
            np.testing.assert_array_equal(obs[:, lay.day], 0.0)
        obs, _, term, trunc, _ = env.step(np.array([0, 3, 1, 3]))
        done = term | trunc
        elapsed = np.where(pending, 0, elapsed + 1)
        if mode == "SameStep":
            elapsed[done] = 0
        pending = done if mode == "NextStep" else np.zeros(4, dtype=bool)
        np.testing.assert_allclose(obs[:, lay.day], elapsed / 5, err_msg=f"step {t}")
