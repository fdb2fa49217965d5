"""log_observations: the env's observations rebuilt from a log equal what the env showed; the mapping's rules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pushrl.envs.common.errors import LoggedDataError
from pushrl.envs.data.catalogue import Catalogue
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.schema import LogSchema
from pushrl.envs.data.synthetic import SyntheticConfig, make_truth
from pushrl.envs.model.response import TrueResponse, truth_contexts
from pushrl.envs.sim.batched_env import BatchedPushEnv
from pushrl.envs.sim.log_observations import expected_step_reward, log_observations, simulate_log
from pushrl.policies.policy import UniformPolicy

IDS = np.array(["p0", "p1", "p2", "p3", "none"], dtype=object)
SCHEMA = LogSchema(rewards=("click", "conversion"), optional_rewards=(), no_push_action="none",
                   numeric_features=(), categorical_features=())


def _env(n: int, **config: object) -> BatchedPushEnv:
    truth = make_truth(SyntheticConfig(n_users=300, n_actions=5, seed=1, no_push=True, organic_conversion=0.1))
    base = dict(no_push_action="none", frequency_cap=2, cap_window=4, churn_logit=-4.0, churn_slope=1.0, horizon=10)
    return BatchedPushEnv(n, max_episode_steps=15, response=TrueResponse(truth), contexts=truth_contexts(truth),
                          categories=truth.action_category.astype(np.int64), action_ids=IDS, config=base | config)


def _log(frame: pd.DataFrame) -> LoggedData:
    keep = ["user_id", "timestamp", "action", "propensity", "click", "conversion", "unsubscribe"]
    return LoggedData.from_frame(frame[keep], SCHEMA, catalogue=Catalogue.from_ids(IDS))


def test_env_log_observations_equal_the_envs_exactly() -> None:
    env = _env(200)
    frame, shown = simulate_log(env, UniformPolicy(5), seed=3)
    lay = env.layout
    # the log exercises every field: capped days, churned users, pushes and no-pushes, decayed counts
    assert shown[:, lay.cap_hit].max() == 1 and frame["unsubscribe"].sum() > 5
    assert 0 < shown[:, lay.days_since_push].min() < 1 and shown[:, lay.response_rate].max() > 0
    assert shown[:, lay.day].min() == 0 and shown[:, lay.day].max() == 1  # episodes of 15 days, horizon 10: capped
    steps = log_observations(_log(frame), env.dynamics.shop.contexts[frame["pool_user"]], env.dynamics)
    np.testing.assert_array_equal(steps.obs, shown)
    np.testing.assert_array_equal(steps.env_action, frame["env_action"])
    np.testing.assert_array_equal(steps.user, frame["user_id"])
    np.testing.assert_array_equal(steps.step, frame.groupby("user_id").cumcount())
    # the one-step Q-hat of the logged action, averaged, is the mean env reward (it is the exact expected reward)
    q = expected_step_reward(env.dynamics, shown)[np.arange(len(frame)), frame["env_action"]]
    err = frame["env_reward"].std() / np.sqrt(len(frame))
    assert abs(q.mean() - frame["env_reward"].mean()) < 4 * err


def _reference(frame: pd.DataFrame, env: BatchedPushEnv) -> np.ndarray:
    """Brute force: each row's history fields from the definitions, scanning the user's earlier rows."""
    dyn, c, lay = env.dynamics, env.config, env.layout
    out = np.zeros((len(frame), lay.width))
    day = (frame["timestamp"].dt.floor("D") - pd.Timestamp("1970-01-01", tz="UTC")).dt.days
    for i in range(len(frame)):
        past = frame[(frame["user_id"] == frame["user_id"].iloc[i]) & (day < day.iloc[i])]
        pday = day[past.index]
        push = past["action"] != "none"
        push_days = set(pday[push])
        gap = day.iloc[i] - 1 - pday[push]
        weight = c.history_decay ** gap
        out[i, lay.recent_pushes] = sum(d >= day.iloc[i] - c.fatigue_window for d in push_days)
        since = day.iloc[i] - max(push_days) if push_days else np.inf
        out[i, lay.days_since_push] = min(since, c.horizon) / c.horizon
        items = weight.sum()
        out[i, lay.response_rate] = min((weight * past["click"][push]).sum() / items, 1) if items > 0 else 0
        cats = dyn.categories[[list(IDS).index(a) for a in past["action"][push]]]
        for cat, w in zip(cats, weight, strict=True):
            out[i, lay.category_pushes.start + cat] += w
        out[i, lay.cap_hit] = sum(d >= day.iloc[i] - c.cap_window + 1 for d in push_days) >= c.frequency_cap
        first = day[frame["user_id"] == frame["user_id"].iloc[i]].min()
        out[i, lay.day] = min(day.iloc[i] - first, c.horizon) / c.horizon  # calendar days since the first logged one
    return out


def test_irregular_log_matches_the_definitions() -> None:
    """Gaps between days, several rows a day (one message of several items), any row order, datetimes."""
    env = _env(1)
    rng = np.random.default_rng(0)
    n = 120
    t0 = pd.Timestamp("2026-01-01", tz="UTC")
    frame = pd.DataFrame({
        "user_id": rng.choice(["u1", "u2", "u3", "u4"], n),
        "timestamp": t0 + pd.to_timedelta(rng.integers(0, 20 * 24, n), unit="h"),
        "action": rng.choice(IDS, n, p=[0.2, 0.2, 0.15, 0.15, 0.3]), "propensity": 0.5,
    })
    frame["click"] = np.where(frame["action"] != "none", rng.integers(0, 2, n), 0)
    frame["conversion"] = frame["click"]
    frame["unsubscribe"] = 0
    frame = frame.drop_duplicates(["user_id", "timestamp", "action"]).reset_index(drop=True)
    data = _log(frame)
    ctx = rng.normal(size=(len(frame), env.dynamics.d))
    steps = log_observations(data, ctx, env.dynamics)
    ref = _reference(data.frame, env)
    lay = env.layout
    np.testing.assert_allclose(steps.obs[:, lay.history], ref[:, lay.history], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(steps.obs[:, lay.day], ref[:, lay.day], rtol=1e-6)
    assert 0 < ref[:, lay.day].max() <= 1 and (ref[:, lay.day] == 0).sum() >= 4  # each user's first day is day 0
    np.testing.assert_array_equal(steps.obs[:, lay.context], ctx.astype(np.float32))
    assert (ref[:, lay.recent_pushes] > 1).any() and (ref[:, lay.cap_hit] == 1).any()
    same_day = data.frame.groupby(["user_id", data.frame["timestamp"].dt.floor("D")]).ngroup()
    assert same_day.duplicated().any()  # several rows a day occur and share one observation (history part)
    for g in np.unique(same_day[same_day.duplicated()]):
        rows = np.flatnonzero(same_day == g)
        assert (steps.obs[rows][:, lay.history] == steps.obs[rows[0], lay.history]).all()
        assert (steps.obs[rows][:, lay.day] == steps.obs[rows[0], lay.day]).all()
    # steps: consecutive ranks in time order within each user
    order = data.frame.sort_values(["user_id", "timestamp"], kind="stable").index
    ranks = pd.Series(steps.step[order]).groupby(data.frame["user_id"][order].to_numpy()).apply(list)
    assert all(r == list(range(len(r))) for r in ranks)
    assert set(steps.env_action[data.frame["action"] == "none"]) == {env.dynamics.n_allowed}


def test_refusals_name_the_problem() -> None:
    env = _env(20)
    frame, _ = simulate_log(env, UniformPolicy(5), seed=1)
    data = _log(frame)
    ctx = env.dynamics.shop.contexts[frame["pool_user"]]
    with pytest.raises(ValueError, match="model_contexts has shape"):
        log_observations(data, ctx[:, 1:], env.dynamics)
    with pytest.raises(LoggedDataError, match="user_id"):
        log_observations(_log(frame).__class__.from_frame(frame.drop(columns=["user_id"])[
            ["timestamp", "action", "propensity", "click", "conversion"]], SCHEMA, catalogue=Catalogue.from_ids(IDS)),
            ctx, env.dynamics)
    narrow = _env(20, allowed_promotions=("p0", "p1"))
    with pytest.raises(LoggedDataError, match="cannot take"):
        log_observations(data, ctx, narrow.dynamics)
