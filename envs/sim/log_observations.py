"""The push env's observation for every logged row, rebuilt from the log's own history (and the reverse: a log
written by running the env).

`log_observations(data, model_contexts, dynamics)` -> (obs (n, D) float32, env_action (n,), user (n,), step (n,)):
the observation `PushDynamics` would have shown on the row's day, so a policy trained in the simulator can be
scored on the log by trajectory OPE (`pushrl.agents.trajectory_eval`). Mapping of the log onto the env's daily
model (d = day of a row = floor(timestamp in days), UTC calendar days for datetimes, numbers are days):

* one user-day of the log = one env step; every row of it (several rows a day, display positions) sees the same
  observation, built from the user's EARLIER days only; its pushed rows (action not the no-push one) are one push
  message of that many items (as a slate in the env): the day counts once in recent_pushes / days since push /
  the frequency cap, each item once in the decayed item and category counts;
* a day without rows is a day without a push (decays and counters roll on);
* a user's first logged day starts with no history (what happened before the log is unknown);
* context = the row's own encoded context (`model_contexts`, the response model's encoder output), not a pool row;
* pushes over the env's frequency cap that the log did send count as pushes (the log is what happened).

With D_j a user's days, pushed_m = [day m had a pushed row], x_m its pushed items, y_m the sum of the response
reward over them, c_m its items per category, λ = history_decay, H = horizon:

    recent_pushes    = Σ_{m<j} pushed_m [D_m >= D_j - fatigue_window]
    days_since_push  = min(D_j - max{D_m : m < j, pushed_m}, H) / H          (1 without an earlier push)
    response_rate    = min(1, Y_j / X_j), X_j = Σ_{m<j} λ^(D_j - 1 - D_m) x_m, Y_j the same with y (0 if X_j = 0)
    category_pushes  = Σ_{m<j} λ^(D_j - 1 - D_m) c_m
    cap_hit          = [Σ_{m<j} pushed_m [D_m >= D_j - cap_window + 1] >= frequency_cap]
    day              = min(D_j - D_0, H) / H        (D_0 = the user's first logged day: the episode starts there)

which is `PushDynamics._update` day by day (day counts calendar days since the user's first logged day, so on a
log with a row every day it is the user-day's index; the log's users are read as episodes starting on their
first logged day). Env action: a pushable promotion -> its index among the pushable
ones, the declared no-push action -> n_allowed. step = the row's rank within its user in (time, position, row)
order. Trajectory OPE needs every decision logged, no-push ones included: a day without rows is read as a
decision not to push that no policy could change.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from pushrl.envs.common.errors import LoggedDataError
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.sim.batched_env import BatchedPushEnv
from pushrl.envs.sim.push_env import PushDynamics

DAY_NS = 86_400_000_000_000


class LogSteps(NamedTuple):
    """The log's rows as env steps (see the module docstring)."""

    obs: np.ndarray  # (n, D) float32
    env_action: np.ndarray  # (n,) int64
    user: np.ndarray  # (n,) the log's user ids
    step: np.ndarray  # (n,) int64 rank of the row within its user


def _days(timestamp: pd.Series) -> np.ndarray:
    """(n,) int64 day of each row: UTC calendar day of a datetime, floor of a number of days."""
    if pd.api.types.is_datetime64_any_dtype(timestamp):
        return pd.DatetimeIndex(timestamp).as_unit("ns").asi8 // DAY_NS
    return np.floor(timestamp.to_numpy(dtype=np.float64)).astype(np.int64)


def env_actions(data: LoggedData, dynamics: PushDynamics) -> np.ndarray:
    """(n,) the env action of each logged row: index among the pushable promotions, n_allowed = no-push action."""
    env_ids = dynamics.shop.action_ids.tolist()
    lookup = {v: i for i, v in enumerate(dynamics.promotion_index.tolist())}
    if dynamics.no_push_item is not None:
        lookup[dynamics.no_push_item] = dynamics.n_allowed
    position = {str(a): i for i, a in enumerate(env_ids)}  # ids matched by their text (a log's "3" is the env's 3)
    per_log_action = [lookup.get(position.get(str(a), -1), -1) for a in data.action_ids.tolist()]
    mapped = np.array(per_log_action, dtype=np.int64)[data.action]
    bad = mapped < 0
    if bad.any():
        raise LoggedDataError("logged action the simulator cannot take (neither a pushable promotion nor its no-push "
                              "action)", column="action", rows=np.flatnonzero(bad), source=data.name,
                              expected=f"one of {env_ids[:20]}")
    return mapped


def _require(data: LoggedData) -> None:
    for name, value in (("user_id", data.user_id), ("timestamp", data.timestamp)):
        if value is None:
            raise LoggedDataError("the log's observations need each user's history", column=name, source=data.name,
                                  expected=f"a {name} column (repeat users over time)")


def log_observations(data: LoggedData, model_contexts: np.ndarray, dynamics: PushDynamics,
                     response_reward: str | None = None) -> LogSteps:
    """The env's observation of every logged row, its env action, user and step (module docstring).

    model_contexts: (n, d) the rows' encoded contexts (`ResponseModel.encode(data)[0]`), d = dynamics.d.
    response_reward: the log's reward behind response_rate (default: the env's, `dynamics.response_reward`).
    """
    _require(data)
    n = data.n_rounds
    ctx = np.asarray(model_contexts, dtype=np.float64)
    if ctx.shape != (n, dynamics.d):
        raise ValueError(f"model_contexts has shape {ctx.shape}, expected (n_rows, d) = ({n}, {dynamics.d})")
    reward = dynamics.response_reward if response_reward is None else response_reward
    action = env_actions(data, dynamics)
    user = data.user_id
    ucode, _ = pd.factorize(pd.Series(user), sort=False)
    day = _days(data.timestamp)
    tns = _days_fraction(data.timestamp)
    order = np.lexsort((np.arange(n), data.position, tns, ucode))
    u_s, d_s = ucode[order], day[order]
    new_user = np.r_[True, u_s[1:] != u_s[:-1]]
    starts = np.flatnonzero(new_user)
    step = np.empty(n, dtype=np.int64)
    step[order] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    new_day = new_user | np.r_[True, d_s[1:] != d_s[:-1]]
    ud = np.cumsum(new_day) - 1  # user-day index of each sorted row
    n_ud = int(ud[-1]) + 1
    ud_user, ud_day = u_s[new_day], d_s[new_day]
    pushed_row = action[order] < dynamics.n_allowed
    items = np.bincount(ud, weights=pushed_row, minlength=n_ud)
    if reward is not None:
        if reward not in data.reward_names:
            raise LoggedDataError("the response rate needs the env's response reward", column=reward,
                                  source=data.name, expected=f"a reward column {reward!r}")
        y = data.reward(reward)[order]
        responses = np.bincount(ud, weights=y * pushed_row, minlength=n_ud)
    else:
        responses = np.zeros(n_ud)
    cats = dynamics.categories[dynamics._promo_of_action[np.minimum(action[order], dynamics.n_allowed)]]
    c_count = np.zeros((n_ud, dynamics.n_categories))
    np.add.at(c_count, (ud[pushed_row], cats[pushed_row]), 1.0)
    pushed = items > 0
    state = _day_state(dynamics, ud_user, ud_day, pushed, items, responses, c_count)
    obs = np.empty((n, dynamics.obs_dim), dtype=np.float32)
    lay = dynamics.layout
    obs[order] = state[ud]
    obs[:, lay.context] = ctx
    return LogSteps(obs, action, user, step)


def _days_fraction(timestamp: pd.Series) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(timestamp):
        return pd.DatetimeIndex(timestamp).as_unit("ns").asi8.astype(np.float64)
    return timestamp.to_numpy(dtype=np.float64)


def _day_state(dyn: PushDynamics, user: np.ndarray, day: np.ndarray, pushed: np.ndarray, items: np.ndarray,
               responses: np.ndarray, c_count: np.ndarray) -> np.ndarray:
    """(n_ud, D) float32 observation (history columns; context left 0) at the start of each user-day (sorted by
    user, day), from the user's earlier days."""
    c, lay = dyn.config, dyn.layout
    m = len(user)
    idx = np.arange(m)
    first = np.r_[True, user[1:] != user[:-1]]
    start = np.maximum.accumulate(np.where(first, idx, 0))
    span = int(day.max() - day.min()) + max(c.fatigue_window, c.cap_window) + 2
    key = user.astype(np.int64) * span + (day - day.min())
    prefix = np.r_[0, np.cumsum(pushed)]

    def pushes_since(back: int) -> np.ndarray:  # pushed days m < j of the user with D_m >= D_j - back
        lo = np.maximum(np.searchsorted(key, key - back, side="left"), start)
        return (prefix[idx] - prefix[lo]).astype(np.float64)

    out = np.zeros((m, dyn.obs_dim), dtype=np.float32)
    out[:, lay.recent_pushes] = pushes_since(c.fatigue_window)
    last = np.r_[-1, np.maximum.accumulate(np.where(pushed, idx, -1))][idx]  # last pushed day before j
    has = last >= start
    since = np.where(has, (day - day[np.maximum(last, 0)]).astype(np.float64), np.inf)
    out[:, lay.days_since_push] = np.minimum(since, c.horizon) / c.horizon
    out[:, lay.day] = np.minimum((day - day[start]).astype(np.float64), c.horizon) / c.horizon
    if c.frequency_cap is not None:
        out[:, lay.cap_hit] = pushes_since(c.cap_window - 1) >= c.frequency_cap
    # decayed sums, day by day as PushDynamics._update: S <- λ S + x at the end of a day, × λ per empty day
    decay = c.history_decay
    x = np.column_stack([items, responses, c_count])
    s = np.zeros_like(x)
    rank = idx - start
    later = np.flatnonzero(rank > 0)
    by_rank = later[np.argsort(rank[later], kind="stable")]
    bounds = np.searchsorted(rank[by_rank], np.arange(1, int(rank.max()) + 2)) if len(by_rank) else np.zeros(1, int)
    for r in range(len(bounds) - 1):
        j = by_rank[bounds[r]:bounds[r + 1]]
        carried = s[j - 1] * decay + x[j - 1]
        gap = day[j] - day[j - 1]
        far = gap > 1
        if far.any():
            carried[far] *= (decay ** (gap[far] - 1).astype(np.float64))[:, None]
        s[j] = carried
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(s[:, 0] > 0, s[:, 1] / s[:, 0], 0.0)
    out[:, lay.response_rate] = np.minimum(rate, 1.0)
    out[:, lay.category_pushes] = s[:, 2:]
    return out


def expected_step_reward(dynamics: PushDynamics, obs: np.ndarray) -> np.ndarray:
    """(n, n_allowed + 1) the env's expected reward of one day for each env action (last: push nothing):

        push a:  E[objective | a] (fatigue, costs) + λ novelty(cat a) - push_cost - unsubscribe_penalty P(unsub | a)
        nothing: E[objective | no push] (the no-push action's organic outcomes; 0 without one)

    with a push refused (scored as nothing) where cap_hit; read from `obs` by the env's layout. The one-step Q-hat
    of trajectory DR (exact immediate reward when `dynamics` is the env's; tomorrow's effects are not in it).
    """
    lay, c = dynamics.layout, dynamics.config
    o = np.asarray(obs)
    context, recent = o[:, lay.context].astype(np.float64), o[:, lay.recent_pushes].astype(np.float64)
    value = dynamics.expected_objective(context, recent)
    cat_cols = np.arange(lay.width)[lay.category_pushes][dynamics.categories[dynamics.promotion_index]]
    novelty = 1.0 / (1.0 + o[:, cat_cols].astype(np.float64))
    p_unsub = dynamics.unsubscribe_by_action(context, recent)
    value[:, :-1] += c.diversity_weight * novelty - c.push_cost - c.unsubscribe_penalty * p_unsub
    capped = o[:, lay.cap_hit] > 0.5
    value[capped, :-1] = value[capped, -1:]
    return value


def simulate_log(env: BatchedPushEnv, policy: Any, seed: int, start: str = "2026-01-01T12:00:00Z"
                 ) -> tuple[pd.DataFrame, np.ndarray]:
    """Run one episode of each of env.num_envs users with `policy` (anything with act(obs, rng) -> (actions,
    propensities)) and write it as a log: (frame, obs (n, D) float32 the env showed at each row).

    One row per user-day while the user's episode runs (k = 1 envs with a declared no-push action): user_id
    (slot), timestamp (start + day t, UTC datetimes), pool_user, action (catalogue id actually sent: the no-push id
    on a day the policy pushed nothing or the cap refused), env_action (its env action), propensity (the policy's
    probability of its env action; 1 on a cap_hit day, where every action sends nothing), one column per reward of
    the env's response (the day's outcome), unsubscribe, env_reward (the env's reward of the day).
    """
    dyn = env.dynamics
    if dyn.k != 1 or dyn.no_push_item is None:
        raise ValueError("simulate_log needs slate_size = 1 and a declared no_push_action (every decision logged)")
    if env.max_episode_steps is None:
        raise ValueError("simulate_log needs an env with max_episode_steps (the episode length)")
    rng = np.random.default_rng(seed)
    origin = pd.Timestamp(start)
    obs, info = env.reset(seed=seed)
    pool_user = info["user"].copy()
    ids = dyn.shop.action_ids
    alive = np.ones(env.num_envs, dtype=bool)
    rows, seen = [], []
    for t in range(env.max_episode_steps):
        actions, prop = policy.act(obs, rng)
        actions = np.asarray(actions, dtype=np.int64).reshape(-1)
        prop = np.where(obs[:, dyn.layout.cap_hit] > 0.5, 1.0, np.asarray(prop, dtype=np.float64))
        nxt, reward, term, trunc, info = env.step(actions)
        sent = np.where(info["pushed"], actions, dyn.n_allowed)
        who = np.flatnonzero(alive)
        frame = {"user_id": who, "timestamp": origin + pd.Timedelta(days=t), "pool_user": pool_user[who],
                 "action": np.where(sent[who] == dyn.n_allowed, ids[dyn.no_push_item], ids[dyn._promo_of_action[sent[who]]]),
                 "env_action": sent[who], "propensity": prop[who]}
        for r in dyn.outcomes:
            frame[r] = np.asarray(info[r], dtype=np.float64)[who]
        frame["unsubscribe"] = info["unsubscribed"][who].astype(np.float64)
        frame["env_reward"] = reward[who]
        rows.append(pd.DataFrame(frame))
        seen.append(obs[who])
        alive &= ~(term | trunc)
        obs = nxt
        if not alive.any():
            break
    out = pd.concat(rows, ignore_index=True)
    order = np.lexsort((out["timestamp"].to_numpy(), out["user_id"].to_numpy()))
    return out.iloc[order].reset_index(drop=True), np.concatenate(seen)[order]
