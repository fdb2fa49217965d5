"""The simulator-evaluation harness: metrics against a brute-force PushEnv loop, seeds, bad inputs,
and `learn_online` with a tiny ε-greedy stub."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from pushrl.agents.rollout import (
    RolloutResult,
    compare,
    estimate,
    learn_online,
    metric_names,
    rollout,
)
from pushrl.envs.sim.batched_env import BatchedPushEnv
from pushrl.envs.sim.observation import ObservationLayout
from pushrl.envs.sim.push_env import PushEnv
from pushrl.policies.policy import BasePolicy, UniformPolicy

D = 2
POOL = np.random.default_rng(0).normal(size=(40, D))
CATEGORIES = np.array([0, 0, 1, 2])  # 4 promotions in 3 categories
DETERMINISTIC_CLICKS = [1.0, 0.0, 1.0, 0.0]
NO_PUSH = 4  # the organic case: a fifth catalogue action (category 3) is the log's no-push action
LAYOUT = ObservationLayout(D, 3)


class ToyResponse:
    """Click probability of each promotion, the same for every user and day."""

    reward_names = ("click",)
    reward_kinds = {"click": "binary"}
    n_context_features = D

    def __init__(self, click: list[float]) -> None:
        self.click = np.asarray(click, dtype=np.float64)

    @property
    def n_actions(self) -> int:
        return len(self.click)

    def predict(self, contexts: np.ndarray, recent: np.ndarray, position: np.ndarray) -> dict[str, np.ndarray]:
        return {"click": np.tile(self.click, (len(contexts), 1))}


def env_kwargs(click: list[float] = DETERMINISTIC_CLICKS, **cfg: object) -> dict:
    config = {"churn_logit": -50.0, "churn_slope": 0.0, "fatigue": "response", **cfg}
    if cfg.get("no_push_action") is not None:  # the organic case: every day without a push is a click
        return {"response": ToyResponse([*click, 1.0]), "contexts": POOL, "categories": np.append(CATEGORIES, 3),
                "config": config}
    return {"response": ToyResponse(click), "contexts": POOL, "categories": CATEGORIES, "config": config}


class ObservationRule(BasePolicy):
    """Deterministic: the action depends on the context sign and the recent-push count (k slots)."""

    n_features = LAYOUT.width

    def __init__(self, slate_size: int = 1) -> None:
        self.k = slate_size

    @property
    def n_actions(self) -> int:
        return 5

    def choose(self, obs: np.ndarray) -> np.ndarray:
        ctx = obs[:, LAYOUT.context]  # the context and recent pushes sit where they do in every layout of width D
        base = 2 * (ctx[:, 0] > 0) + 2 * (ctx[:, 1] > 0) + obs[:, LAYOUT.recent_pushes].astype(np.int64)  # 4 = nothing at t=0
        return np.stack([(base + 3 * j) % 5 for j in range(self.k)], axis=1)

    def _probabilities(self, contexts: np.ndarray) -> np.ndarray:
        out = np.zeros((len(contexts), 5))
        out[np.arange(len(contexts)), self.choose(contexts)[:, 0]] = 1.0
        return out

    def act(self, contexts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        a = self.choose(contexts)
        return (a[:, 0], np.ones(len(a))) if self.k == 1 else (a, np.ones(a.shape))


def brute_force(users: np.ndarray, horizon: int, slate: int, **cfg: object) -> dict[str, float]:
    """One seed's metrics from single PushEnv episodes and plain Python bookkeeping."""
    env = PushEnv(slate_size=slate, **env_kwargs(**cfg))
    policy = ObservationRule(slate)
    total_reward, objective, pushed_objective, clicks, pushed_clicks = 0.0, 0.0, 0.0, 0.0, 0.0
    pushes, novelty_sum, unsubscribed = 0, 0.0, 0
    exposure = np.zeros(4)
    slate_pairs = []
    for user in users:
        obs, _ = env.reset(seed=0, options={"user": int(user)})
        for _ in range(horizon):
            action = policy.choose(obs[None])[0]
            obs, reward, terminated, _, info = env.step(action if slate > 1 else int(action[0]))
            total_reward += reward
            objective += info["objective"]
            clicks += info["click"]
            pushed = [int(p) for p in info["promotions"] if p >= 0]
            pushes += bool(pushed)
            if pushed:
                pushed_clicks += info["click"]
                pushed_objective += info["objective"]
            novelty_sum += info["diversity"]  # the env's own novelty of the pushed items
            for p in pushed:
                exposure[p] += 1
            if len(pushed) == 2:
                slate_pairs.append(float(CATEGORIES[pushed[0]] != CATEGORIES[pushed[1]]))
            if terminated:
                unsubscribed += 1
                break
    n = len(users)
    x = exposure
    gini = np.abs(x[:, None] - x[None, :]).sum() / (2 * len(x) ** 2 * x.mean()) if x.sum() else np.nan
    return {
        "reward_per_user": total_reward / n,
        "objective_per_user": objective / n,
        "objective_per_push": pushed_objective / pushes if pushes else np.nan,
        "response_rate": pushed_clicks / pushes if pushes else np.nan,
        "click_per_user": clicks / n,
        "click_per_push": pushed_clicks / pushes if pushes else np.nan,
        "unsubscribe_rate": unsubscribed / n,
        "pushes_per_user": pushes / n,
        "catalogue_coverage": float((exposure > 0).mean()),
        "intra_list_diversity": float(np.mean(slate_pairs)) if slate_pairs else np.nan,
        "category_novelty": novelty_sum / exposure.sum() if exposure.sum() else np.nan,
        "exposure_gini": gini,
    }


CASES = {
    "no churn": {"slate": 1, "cfg": {"diversity_weight": 0.5, "push_cost": 0.1, "frequency_cap": 3}},
    "certain churn": {"slate": 1, "cfg": {"churn_logit": 50.0, "unsubscribe_penalty": 2.0}},
    "slates": {"slate": 2, "cfg": {"diversity_weight": 0.3, "frequency_cap": None}},
    "organic no-push": {"slate": 1, "cfg": {"no_push_action": NO_PUSH, "frequency_cap": 2, "push_cost": 0.1}},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_metrics_match_brute_force(case: str) -> None:
    slate, cfg = CASES[case]["slate"], CASES[case]["cfg"]
    horizon, n_users, n_seeds = 10, 6, 3
    result = rollout(ObservationRule(slate), lambda n: BatchedPushEnv(n, horizon, slate_size=slate, **env_kwargs(**cfg)),
                     n_users=n_users, n_seeds=n_seeds, seed=11)
    expected = [brute_force(result.users[s], horizon, slate, **cfg) for s in range(n_seeds)]
    assert set(result.per_seed) == set(expected[0]) == set(metric_names(resolve(result, slate, horizon, cfg)))
    for m in result.per_seed:
        want = np.array([e[m] for e in expected])
        np.testing.assert_allclose(result.per_seed[m], want, rtol=1e-9, atol=1e-12, err_msg=m)
        est = result.metrics[m]
        if np.isfinite(want).all():
            half = stats.t.ppf(0.975, n_seeds - 1) * want.std(ddof=1) / np.sqrt(n_seeds)
            np.testing.assert_allclose([est.mean, est.ci_low, est.ci_high], [want.mean(), want.mean() - half,
                                       want.mean() + half], rtol=1e-9, atol=1e-12, err_msg=m)
    assert result.actions.shape == (n_seeds, n_users, horizon, slate)
    ended = ~result.active
    assert (result.actions[ended] == -1).all() and (result.outcomes["reward"][ended] == 0).all()
    if case == "certain churn":  # every user's episode ended at its first push
        assert 0 < result.metrics["unsubscribe_rate"].mean < 1 and ended.any()
    if case == "organic no-push":  # days without a push click organically, and count in per-user, not per-push
        m = result.metrics
        assert m["click_per_user"].mean > m["click_per_push"].mean * m["pushes_per_user"].mean


def resolve(result, slate: int, horizon: int, cfg: dict) -> BatchedPushEnv:
    """An env like the one `result` ran on (for its metric names)."""
    return BatchedPushEnv(result.n_users, horizon, slate_size=slate, **env_kwargs(**cfg))


@pytest.mark.parametrize("mode", ["NextStep", "Disabled"])
def test_autoreset_modes_give_the_same_metrics(mode: str) -> None:
    cfg = CASES["certain churn"]["cfg"]
    runs = [rollout(ObservationRule(), BatchedPushEnv(8, 10, autoreset_mode=m, **env_kwargs(**cfg)), None, 2, seed=3)
            for m in ("SameStep", mode)]
    assert set(runs[0].per_seed) == set(runs[1].per_seed)
    for m in runs[0].per_seed:
        np.testing.assert_array_equal(runs[0].per_seed[m], runs[1].per_seed[m])


def test_seeds_repeat_and_differ() -> None:
    factory = lambda n: BatchedPushEnv(n, 8, **env_kwargs([0.3, 0.5, 0.2, 0.4]))  # noqa: E731
    a, b, c = (rollout(UniformPolicy(5), factory, 32, 2, seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.per_seed["reward_per_user"], b.per_seed["reward_per_user"])
    assert not np.array_equal(a.users, c.users)
    assert not np.array_equal(a.users[0], a.users[1])  # seeds are independent repetitions


def test_to_frame_is_one_comparison_row() -> None:
    env = BatchedPushEnv(16, 5, **env_kwargs())
    table = pd.concat([rollout(UniformPolicy(5), env, None, 3).to_frame("uniform"),
                       rollout(ObservationRule(), env, None, 3).to_frame("rule")])
    assert list(table.index) == ["uniform", "rule"]
    for m in metric_names(env):
        assert {m, f"{m}_ci_low", f"{m}_ci_high"} <= set(table.columns)
    finite = table["reward_per_user_ci_low"].notna()
    assert (table["reward_per_user_ci_low"][finite] <= table["reward_per_user"][finite]).all()
    assert (table[["n_users", "n_seeds"]].to_numpy() == [16, 3]).all()


def _result(reward_per_user: list[float]) -> RolloutResult:
    empty = np.zeros((len(reward_per_user), 1, 1))
    return RolloutResult({"reward_per_user": np.array(reward_per_user)}, empty, empty, {}, empty, empty)


def test_compare_gives_the_verdict_and_the_paired_difference() -> None:
    high, low = _result([2.0, 2.1, 1.9, 2.0]), _result([1.0, 1.2, 0.8, 1.0])
    out = compare(high, low)
    assert out["verdict"] == "better" and compare(low, high)["verdict"] == "worse"
    assert out["difference"] == pytest.approx(1.0)
    diffs = np.array([1.0, 0.9, 1.1, 1.0])
    half = stats.t.ppf(0.975, 3) * diffs.std(ddof=1) / 2
    assert (out["difference_ci_low"], out["difference_ci_high"]) == pytest.approx((1.0 - half, 1.0 + half))
    # overlapping CIs, but every seed is higher: the paired difference excludes 0
    a, b = _result([1.0, 2.0, 3.0, 4.0]), _result([0.9, 1.9, 2.9, 3.9])
    out = compare(a, b)
    assert out["verdict"] == "overlap" and out["difference_ci_low"] > 0
    env = BatchedPushEnv(16, 5, **env_kwargs())
    same = rollout(UniformPolicy(5), env, None, 3, seed=1)
    assert compare(same, same) == {"verdict": "overlap", "difference": 0.0, "difference_ci_low": 0.0,
                                   "difference_ci_high": 0.0}


def test_estimate_with_one_seed_has_no_interval() -> None:
    e = estimate(np.array([2.0, np.nan]))
    assert e.mean == 2.0 and np.isnan(e.ci_low) and np.isnan(e.ci_high)


def test_bad_inputs() -> None:
    env = BatchedPushEnv(4, 5, **env_kwargs())
    with pytest.raises(ValueError, match="n_users=3 differs from the env's num_envs=4"):
        rollout(UniformPolicy(5), env, n_users=3)
    with pytest.raises(ValueError, match=r"policy.n_actions=4 but the env has 5 actions"):
        rollout(UniformPolicy(4), env)
    with pytest.raises(ValueError, match="n_seeds must be an integer >= 1"):
        rollout(UniformPolicy(5), env, n_seeds=0)
    with pytest.raises(ValueError, match="max_episode_steps is None"):
        rollout(UniformPolicy(5), BatchedPushEnv(4, **env_kwargs()))
    with pytest.raises(ValueError, match="n_users is required"):
        rollout(UniformPolicy(5), lambda n: env)
    with pytest.raises(ValueError, match="factory must return a BatchedPushEnv of n_users=3"):
        rollout(UniformPolicy(5), lambda n: env, n_users=3)
    with pytest.raises(TypeError, match="Policy protocol"):
        rollout(object(), env)
    with pytest.raises(ValueError, match=r"policy.act returned actions of shape \(4, 2\)"):
        rollout(ObservationRule(2), env)


class EpsilonGreedyStub:
    """Context-free ε-greedy over running means: the smallest bandit `learn_online` can train."""

    def __init__(self, n_actions: int, epsilon: float = 0.1) -> None:
        self.n_actions, self.epsilon = n_actions, epsilon
        self.sums, self.counts = np.zeros(n_actions), np.zeros(n_actions)
        self.batches: list[tuple[tuple[int, ...], int]] = []

    def act(self, contexts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        means = np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1), np.inf)
        explore = rng.random(len(contexts)) < self.epsilon
        a = np.where(explore, rng.integers(0, self.n_actions, len(contexts)), np.argmax(means))
        p = np.where(a == np.argmax(means), 1 - self.epsilon, 0.0) + self.epsilon / self.n_actions
        return a, p

    def update(self, contexts: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        self.batches.append((contexts.shape, len(actions)))
        np.add.at(self.sums, actions, rewards)
        np.add.at(self.counts, actions, 1)


def test_learn_online_trains_a_bandit_in_the_simulator() -> None:
    env = BatchedPushEnv(64, 1, **env_kwargs([0.1, 0.2, 0.8, 0.1]))  # promotion 2 is best; 4 = push nothing
    stub = EpsilonGreedyStub(5)
    result = learn_online(stub, env, n_steps=40, batch=3, seed=0)
    assert int(np.argmax(stub.sums / np.maximum(stub.counts, 1))) == 2
    assert stub.counts.sum() == result.n_decisions == 40 * 64
    assert result.n_updates == len(stub.batches) == 14  # 13 full batches of 3 steps + the last step
    assert stub.batches[0] == ((3 * 64, env.single_observation_space.shape[0]), 3 * 64)
    assert stub.batches[-1][1] == 64
    assert result.mean_reward[-10:].mean() > 0.6 > result.mean_reward[0]
    assert result.mean_reward.shape == result.push_rate.shape == (40,)


def test_learn_online_bad_inputs() -> None:
    env = BatchedPushEnv(4, 1, **env_kwargs())
    with pytest.raises(ValueError, match="agent.n_actions=4 but the env has 5 actions"):
        learn_online(EpsilonGreedyStub(4), env, 2)
    with pytest.raises(TypeError, match="has no update"):
        learn_online(UniformPolicy(5), env, 2)
    with pytest.raises(ValueError, match="slate_size=1"):
        learn_online(EpsilonGreedyStub(5), BatchedPushEnv(4, 1, slate_size=2, **env_kwargs()), 2)
    with pytest.raises(ValueError, match="SAME_STEP"):
        learn_online(EpsilonGreedyStub(5), BatchedPushEnv(4, 1, autoreset_mode="NextStep", **env_kwargs()), 2)
    with pytest.raises(ValueError, match="batch must be an integer >= 1"):
        learn_online(EpsilonGreedyStub(5), env, 2, batch=0)
