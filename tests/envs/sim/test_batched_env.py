"""BatchedPushEnv: vector-env contract, autoreset modes, and the same transition law as N PushEnvs."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from scipy import stats

from pushrl.envs.sim.batched_env import BatchedPushEnv
from pushrl.envs.sim.env_config import default_shop
from pushrl.envs.sim.push_env import PushEnv

HORIZON = 30
NO_CHURN = {"churn_logit": -50.0, "churn_slope": 0.0}
ALPHA = 0.01  # family-wise significance level of the equivalence test (Bonferroni over its statistics)


def policy(t: int, k: int) -> np.ndarray:
    """A fixed, history-free policy: day t's slate (11 = 'nothing' shows up some days)."""
    return np.array([(3 * t + 5 * j) % 11 for j in range(k)])


def single_episodes(n: int, k: int, seed: int, **cfg: object) -> dict[str, np.ndarray]:
    """Per-episode statistics of n PushEnv episodes (horizon HORIZON)."""
    env = PushEnv(slate_size=k, **cfg)
    env.reset(seed=seed)
    rows = []
    for _ in range(n):
        obs, _ = env.reset()
        total = clicks = pushes = 0.0
        obs_sum = np.zeros_like(obs, dtype=np.float64)
        terminated = False
        for t in range(HORIZON):
            obs, reward, terminated, _, info = env.step(policy(t, k) if k > 1 else int(policy(t, 1)[0]))
            total += reward
            clicks += info["click"]
            pushes += info["pushed"]
            obs_sum += obs
            if terminated:
                break
        rows.append((total, clicks, pushes, float(terminated), t + 1, *(obs_sum / (t + 1))))
    return _columns(np.array(rows))


def batched_episodes(n: int, k: int, seed: int, **cfg: object) -> dict[str, np.ndarray]:
    """The same statistics from the first episode of each of n batched users."""
    env = BatchedPushEnv(num_envs=n, max_episode_steps=HORIZON, slate_size=k, **cfg)
    obs, _ = env.reset(seed=seed)
    active = np.ones(n, dtype=bool)
    total, clicks, pushes, length = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    terminated_any = np.zeros(n)
    obs_sum = np.zeros(obs.shape)
    for t in range(HORIZON):
        obs, reward, terminated, truncated, info = env.step(np.tile(policy(t, k), (n, 1)))
        done = terminated | truncated
        last = np.where(done[:, None], info.get("final_obs", obs), obs)
        total += active * reward
        clicks += active * info["click"]
        pushes += active * info["pushed"]
        obs_sum += active[:, None] * last
        length += active
        terminated_any += active * terminated
        active &= ~done
    assert not active.any()
    return _columns(np.column_stack([total, clicks, pushes, terminated_any, length, obs_sum / length[:, None]]))


def _columns(a: np.ndarray) -> dict[str, np.ndarray]:
    names = ["return", "clicks", "pushes", "terminated", "length"] + [f"mean_obs_{i}" for i in range(a.shape[1] - 5)]
    return {name: a[:, i] for i, name in enumerate(names)}


def min_p_value(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[float, str, int]:
    """Smallest two-sample Welch t-test p-value over the statistics with any variance, and how many."""
    pvals = {}
    for name in a:
        if np.ptp(a[name]) == 0 and np.ptp(b[name]) == 0:
            assert a[name][0] == b[name][0], name  # constant in both: must be the same constant
            continue
        pvals[name] = stats.ttest_ind(a[name], b[name], equal_var=False).pvalue
    worst = min(pvals, key=pvals.get)
    return pvals[worst], worst, len(pvals)


@pytest.mark.parametrize(("k", "n"), [(1, 500), (2, 300)])
def test_batched_env_has_the_transition_law_of_n_single_envs(k: int, n: int) -> None:
    cfg = {"diversity_weight": 0.5, "push_cost": 0.02, "churn_logit": -4.0, "churn_slope": 0.5}
    single = single_episodes(n, k, seed=1, **cfg)
    batched = batched_episodes(n, k, seed=2, **cfg)
    p, worst, m = min_p_value(single, batched)
    assert p > ALPHA / m, f"{worst}: p = {p:.2g} < {ALPHA}/{m}"
    assert 0.1 < single["terminated"].mean() < 0.9  # churn, cap and horizon all matter here
    # the same test detects a batched env with other dynamics (power check)
    other = batched_episodes(n, k, seed=2, **{**cfg, "churn_slope": 1.2})
    p, _, m = min_p_value(single, other)
    assert p < ALPHA / m


def test_spaces_metadata_and_info_shapes() -> None:
    env = BatchedPushEnv(num_envs=8, slate_size=3, max_episode_steps=HORIZON)
    single = PushEnv(slate_size=3)
    assert env.single_observation_space == single.observation_space
    assert env.single_action_space == single.action_space
    assert env.observation_space.shape == (8, single.observation_space.shape[0])
    assert env.action_space.shape == (8, 3)
    assert env.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    obs, info = env.reset(seed=0)
    assert obs.shape == (8, single.observation_space.shape[0]) and obs.dtype == np.float32
    assert info["user"].shape == (8,)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    assert reward.shape == terminated.shape == truncated.shape == (8,)
    assert info["promotions"].shape == (8, 3)
    assert all(v.shape[0] == 8 for v in info.values())


def test_same_seed_same_trajectory() -> None:
    def run(seed: int) -> list[np.ndarray]:
        env = BatchedPushEnv(num_envs=64, max_episode_steps=10, churn_logit=-2.0)
        out = [env.reset(seed=seed)[0]]
        for t in range(25):
            obs, reward, terminated, truncated, _ = env.step(np.full(64, t % 11))
            out += [obs, reward, terminated, truncated]
        return out

    a, b, c = run(5), run(5), run(6)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_same_step_autoreset_gives_final_obs_and_fresh_users() -> None:
    env = BatchedPushEnv(num_envs=16, max_episode_steps=5, **NO_CHURN)
    env.reset(seed=0)
    lay = env.layout
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(np.zeros(16, dtype=np.int64))
    assert truncated.all() and not terminated.any()
    assert info["_final_obs"].all()
    assert (info["final_obs"][:, lay.recent_pushes] > 0).all()  # the old users had pushes
    assert (obs[:, lay.recent_pushes] == 0).all() and (obs[:, lay.days_since_push] == 1).all()  # the new users have none
    _, _, _, truncated, _ = env.step(np.zeros(16, dtype=np.int64))
    assert not truncated.any()


def test_next_step_autoreset_spends_one_step_resetting() -> None:
    env = BatchedPushEnv(num_envs=4, max_episode_steps=2, autoreset_mode="NextStep", **NO_CHURN)
    env.reset(seed=0)
    env.step(np.zeros(4, dtype=np.int64))
    obs, _, _, truncated, info = env.step(np.zeros(4, dtype=np.int64))
    assert truncated.all() and "final_obs" not in info and (obs[:, env.layout.recent_pushes] == 2).all()
    obs, reward, terminated, truncated, info = env.step(np.zeros(4, dtype=np.int64))
    assert (reward == 0).all() and not (terminated | truncated).any() and not info["pushed"].any()
    assert (obs[:, env.layout.recent_pushes] == 0).all()


def test_disabled_autoreset_needs_an_explicit_reset() -> None:
    env = BatchedPushEnv(num_envs=4, max_episode_steps=1, autoreset_mode=AutoresetMode.DISABLED)
    env.reset(seed=0)
    env.step(np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="reset them with reset"):
        env.step(np.zeros(4, dtype=np.int64))
    mask = np.array([True, True, True, True])
    _, info = env.reset(options={"reset_mask": mask})
    assert info["_user"].all()
    env.step(np.zeros(4, dtype=np.int64))


def test_step_before_reset_is_refused() -> None:
    with pytest.raises(ValueError, match="call reset"):
        BatchedPushEnv(num_envs=2).step(np.zeros(2, dtype=np.int64))


class CountingResponse:
    def __init__(self) -> None:
        self.inner = default_shop().response
        self.reward_names, self.n_actions, self.calls, self.rows = self.inner.reward_names, 10, 0, []

    def predict(self, contexts: np.ndarray, recent_pushes: np.ndarray, position: np.ndarray) -> dict:
        self.calls += 1
        self.rows.append(len(contexts))
        return self.inner.predict(contexts, recent_pushes, position)


def test_response_is_called_once_per_step_for_the_whole_batch() -> None:
    shop = default_shop()
    response = CountingResponse()
    env = BatchedPushEnv(num_envs=500, slate_size=2, response=response, contexts=shop.contexts,
                         categories=shop.categories, frequency_cap=None, **NO_CHURN)
    env.reset(seed=0)
    response.calls, response.rows = 0, []
    for _ in range(7):
        env.step(np.tile([1, 2], (500, 1)))
    assert response.calls == 7 and response.rows == [1000] * 7  # 500 users × 2 slots, one call
