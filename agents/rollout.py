"""The one simulator-evaluation harness: every agent's numbers are computed here, the same way.

`rollout(policy, env_or_factory, n_users, n_seeds, seed)` runs one episode for each of n_users
simulated users at once in a `BatchedPushEnv` (the policy gets the (n_users, D) observation
batch every day), repeats it for n_seeds independent seeds, and reports every metric as the
mean over seeds with a 95% t-interval over the per-seed values.

Shapes (S = n_seeds, n = n_users, T = the env's max_episode_steps, k = slate size):
    actions    (S, n, T, k) int64: env actions the policy chose (n_allowed = push nothing),
               -1 once the user's episode has ended
    promotions (S, n, T, k) int64: catalogue index of each promotion pushed, -1 = none
    outcomes   {"reward", "objective", "pushed", "unsubscribed", and one per reward of the env's
               response, by its name}: (S, n, T) float64, 0 once the episode has ended
    active     (S, n, T) bool: the user's episode was running on day t
    users      (S, n) int64: the pool row (shop.contexts) of each user

Metrics (`metric_names(env)`): BASE_METRICS, then for each reward r of the env's response
`<r>_per_user` (its outcomes over the episode, organic ones on days without a push included) and
`<r>_per_push` (the pushed items' outcomes per push message). `response_rate` is
`<response reward>_per_push` of the env's response reward (its first binary reward; nan without
one) and `objective_per_push` the objective the pushed items earned per push. Coverage and exposure
Gini are over the pushable promotions (a declared no-push action is not one).

`learn_online(agent, env, n_steps, batch)` trains any object with `act(contexts, rng) ->
(actions, propensities)` and `update(contexts, actions, rewards)` online in the batched env.
`compare(a, b)` says whether one rollout beats another (CIs, and the paired difference per seed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from gymnasium.vector import AutoresetMode
from scipy import stats

from pushrl.agents.bandits.base import check_int
from pushrl.envs.sim import diversity
from pushrl.envs.sim.batched_env import BatchedPushEnv
from pushrl.policies.policy import Policy

EnvFactory = Callable[[int], BatchedPushEnv]
"""Builds a BatchedPushEnv of the given number of users."""

BASE_METRICS = ("reward_per_user", "objective_per_user", "objective_per_push", "response_rate", "unsubscribe_rate",
                "pushes_per_user", "catalogue_coverage", "intra_list_diversity", "category_novelty", "exposure_gini")
ENV_OUTCOMES = ("reward", "objective", "pushed", "unsubscribed")
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """Mean over seeds and its 95% t-interval (nan bounds with fewer than two finite seeds)."""

    mean: float
    ci_low: float
    ci_high: float


def estimate(values: np.ndarray, confidence: float = CONFIDENCE) -> Estimate:
    """Mean and t-interval of the finite entries of `values` (n_seeds,)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"))
    mean = float(v.mean())
    if len(v) < 2:
        return Estimate(mean, float("nan"), float("nan"))
    half = float(stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return Estimate(mean, mean - half, mean + half)


@dataclass(frozen=True, eq=False)
class RolloutResult:
    """Per-user trajectories and per-seed metrics of `rollout` (shapes in the module docstring)."""

    per_seed: dict[str, np.ndarray]
    """metric name -> (n_seeds,) value of each seed (names: `metric_names(env)`)."""
    actions: np.ndarray
    promotions: np.ndarray
    outcomes: dict[str, np.ndarray]
    active: np.ndarray
    users: np.ndarray

    @property
    def n_seeds(self) -> int:
        return int(self.active.shape[0])

    @property
    def n_users(self) -> int:
        return int(self.active.shape[1])

    @property
    def metrics(self) -> dict[str, Estimate]:
        """metric name -> mean over seeds with its 95% CI."""
        return {m: estimate(v) for m, v in self.per_seed.items()}

    def to_frame(self, name: str = "policy") -> pd.DataFrame:
        """One row (index `name`): each metric's mean, `<metric>_ci_low`, `<metric>_ci_high`."""
        row: dict[str, float | int] = {}
        for m, e in self.metrics.items():
            row.update({m: e.mean, f"{m}_ci_low": e.ci_low, f"{m}_ci_high": e.ci_high})
        row.update(n_users=self.n_users, n_seeds=self.n_seeds)
        return pd.DataFrame([row], index=pd.Index([name], name="policy"))


def compare(a: RolloutResult, b: RolloutResult, metric: str = "reward_per_user") -> dict[str, Any]:
    """Is `a` better than `b` on `metric`? Two rollouts on the same users and seeds.

    verdict: "better" / "worse" when the 95% CIs over seeds do not overlap, else "overlap";
    difference (with difference_ci_low/high): the mean and t-interval of the per-seed difference a - b.
    """
    ea, eb = a.metrics[metric], b.metrics[metric]
    if ea.ci_low > eb.ci_high:
        verdict = "better"
    elif ea.ci_high < eb.ci_low:
        verdict = "worse"
    else:
        verdict = "overlap"
    diff = estimate(a.per_seed[metric] - b.per_seed[metric])
    return {"verdict": verdict, "difference": diff.mean, "difference_ci_low": diff.ci_low, "difference_ci_high": diff.ci_high}



def metric_names(env: BatchedPushEnv) -> tuple[str, ...]:
    """Every metric `rollout` reports on `env` (see the module docstring)."""
    rewards = env.dynamics.outcomes
    return BASE_METRICS + tuple(f"{r}_per_user" for r in rewards) + tuple(f"{r}_per_push" for r in rewards)


def resolve_env(env_or_factory: BatchedPushEnv | EnvFactory, n_users: int | None) -> BatchedPushEnv:
    """The env to run: the given one (n_users None or its num_envs) or factory(n_users)."""
    if isinstance(env_or_factory, BatchedPushEnv):
        if n_users is not None and n_users != env_or_factory.num_envs:
            raise ValueError(f"n_users={n_users} differs from the env's num_envs={env_or_factory.num_envs}; "
                             "pass n_users=None or an env factory to choose the number of users")
        env = env_or_factory
    elif callable(env_or_factory):
        if n_users is None:
            raise ValueError("n_users is required when an env factory is given")
        n_users = check_int("n_users", n_users, 1)
        env = env_or_factory(n_users)
        if not isinstance(env, BatchedPushEnv) or env.num_envs != n_users:
            raise ValueError(f"the env factory must return a BatchedPushEnv of n_users={n_users} users, got "
                             f"{type(env).__name__} with num_envs={getattr(env, 'num_envs', None)}")
    else:
        raise TypeError(f"env_or_factory must be a BatchedPushEnv or a callable n_users -> BatchedPushEnv, "
                        f"got {type(env_or_factory).__name__}")
    return env


def env_n_actions(env: BatchedPushEnv) -> int:
    """Actions per slot of the env: its promotions plus "push nothing"."""
    return env.dynamics.n_allowed + 1


def _check_policy(policy: Any, env: BatchedPushEnv) -> None:
    if not isinstance(policy, Policy):
        raise TypeError(f"policy must implement the Policy protocol (n_actions, action_probabilities, act), "
                        f"got {type(policy).__name__}")
    if policy.n_actions != env_n_actions(env):
        raise ValueError(f"policy.n_actions={policy.n_actions} but the env has {env_n_actions(env)} actions per slot "
                         f"({env.dynamics.n_allowed} promotions + push nothing)")


def _policy_actions(policy: Policy, obs: np.ndarray, rng: np.random.Generator, k: int) -> np.ndarray:
    a = np.asarray(policy.act(obs, rng)[0])
    n = len(obs)
    if a.shape not in ((n, k), (n,) if k == 1 else (n, k)):
        raise ValueError(f"policy.act returned actions of shape {a.shape}, expected ({n},) or ({n}, {k}) "
                         f"for slate_size={k}")
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"policy.act must return integer actions, got dtype {a.dtype}")
    return a.reshape(n, k).astype(np.int64, copy=False)


def _seed_pairs(seed: int, n: int) -> list[tuple[int, int]]:
    """n independent (env seed, policy seed) pairs split from one seed."""
    pairs = []
    for child in np.random.SeedSequence(seed).spawn(n):
        env_ss, pol_ss = child.spawn(2)
        pairs.append((int(env_ss.generate_state(1)[0]), int(pol_ss.generate_state(1)[0])))
    return pairs


def rollout(policy: Policy, env_or_factory: BatchedPushEnv | EnvFactory, n_users: int | None = None,
            n_seeds: int = 5, seed: int = 0) -> RolloutResult:
    """Evaluate `policy` on one episode of each of n_users users, for n_seeds seeds.

    Args:
        policy: any Policy; `act(observations (n_users, D), rng)` is called once per day.
        env_or_factory: a BatchedPushEnv (its num_envs users) or a callable n_users -> BatchedPushEnv.
            Its `max_episode_steps` is the episode length T; any autoreset mode works.
        n_users, n_seeds, seed: users per seed, independent repetitions, the one seed they split from.
    """
    env = resolve_env(env_or_factory, n_users)
    n_seeds = check_int("n_seeds", n_seeds, 1)
    seed = check_int("seed", seed, 0)
    _check_policy(policy, env)
    if env.max_episode_steps is None:
        raise ValueError("the env's max_episode_steps is None: rollout needs finite episodes "
                         "(build the env with max_episode_steps=T)")
    n, horizon, k = env.num_envs, env.max_episode_steps, env.config.slate_size
    actions = np.full((n_seeds, n, horizon, k), -1, dtype=np.int64)
    promotions = np.full((n_seeds, n, horizon, k), -1, dtype=np.int64)
    names = ENV_OUTCOMES + env.dynamics.outcomes
    outcomes = {o: np.zeros((n_seeds, n, horizon)) for o in names}
    active = np.zeros((n_seeds, n, horizon), dtype=bool)
    users = np.zeros((n_seeds, n), dtype=np.int64)
    for s, (env_seed, policy_seed) in enumerate(_seed_pairs(seed, n_seeds)):
        rng = np.random.default_rng(policy_seed)
        obs, info = env.reset(seed=env_seed)
        users[s] = info["user"]
        running = np.ones(n, dtype=bool)
        for t in range(horizon):
            a = _policy_actions(policy, obs, rng, k)
            obs, reward, terminated, truncated, info = env.step(a)
            active[s, :, t] = running
            actions[s, running, t] = a[running]
            promotions[s, running, t] = info["promotions"][running]
            outcomes["reward"][s, :, t] = np.where(running, reward, 0.0)
            for o in names[1:]:
                outcomes[o][s, :, t] = np.where(running, info[o], 0.0)
            done = terminated | truncated
            running &= ~done
            if env.autoreset_mode is AutoresetMode.DISABLED and done.any():
                obs, _ = env.reset(options={"reset_mask": done})
            if not running.any():
                break
    seeds = [_metrics(env, promotions[s], {o: v[s] for o, v in outcomes.items()}) for s in range(n_seeds)]
    per_seed = {m: np.array([x[m] for x in seeds]) for m in metric_names(env)}
    return RolloutResult(per_seed, actions, promotions, outcomes, active, users)


def _metrics(env: BatchedPushEnv, promotions: np.ndarray, out: dict[str, np.ndarray]) -> dict[str, float]:
    """Every metric of one seed: promotions (n, T, k) catalogue indices, outcomes (n, T)."""
    nan = float("nan")
    dyn = env.dynamics
    pushed = out["pushed"]
    pushes = pushed.sum()

    def per_push(v: np.ndarray) -> float:  # on a push day every outcome is the pushed items' own
        return float((v * pushed).sum() / pushes) if pushes > 0 else nan

    position = np.full(dyn.shop.n_actions + 1, -1, dtype=np.int64)  # catalogue index -> pushable index
    position[dyn.promotion_index] = np.arange(dyn.n_allowed)
    pushable = position[promotions]  # -1 (none) stays -1 through position[-1]
    report = diversity.diversity_report(pushable, dyn.categories[dyn.promotion_index], env.config.history_decay,
                                        out["unsubscribed"] > 0)
    rewards = dyn.outcomes
    return {
        "reward_per_user": float(out["reward"].sum(axis=1).mean()),
        "objective_per_user": float(out["objective"].sum(axis=1).mean()),
        "objective_per_push": per_push(out["objective"]),
        "response_rate": per_push(out[dyn.response_reward]) if dyn.response_reward is not None else nan,
        **report,
        **{f"{r}_per_user": float(out[r].sum(axis=1).mean()) for r in rewards},
        **{f"{r}_per_push": per_push(out[r]) for r in rewards},
    }


@dataclass(frozen=True)
class OnlineLearningResult:
    """What `learn_online` saw: per-step means over the env's users, and counts."""

    mean_reward: np.ndarray
    """(n_steps,) mean env reward per user on each step."""
    push_rate: np.ndarray
    """(n_steps,) share of users pushed on each step."""
    n_decisions: int
    n_updates: int
    """Calls of `agent.update`."""


def learn_online(agent: Any, env: BatchedPushEnv, n_steps: int, batch: int = 1, seed: int = 0) -> OnlineLearningResult:
    """Train a bandit-like agent online in a batched env (k = 1, SAME_STEP autoreset).

    Each env step the agent chooses for all env.num_envs users with `agent.act(observations, rng)`
    (actions are env actions, n_allowed = push nothing); every `batch` steps it gets
    `agent.update(observations, actions, rewards)` with the rows of those steps (the env's reward,
    λ term and costs included). The env is reset with a seed split from `seed`.
    """
    for method in ("act", "update"):
        if not callable(getattr(agent, method, None)):
            raise TypeError(f"agent must have act(contexts, rng) and update(contexts, actions, rewards); "
                            f"{type(agent).__name__} has no {method}()")
    if not isinstance(env, BatchedPushEnv):
        raise TypeError(f"env must be a BatchedPushEnv, got {type(env).__name__}")
    if env.config.slate_size != 1:
        raise ValueError(f"learn_online needs slate_size=1 (one action per user), the env has slate_size={env.config.slate_size}")
    if env.autoreset_mode is not AutoresetMode.SAME_STEP:
        raise ValueError(f"learn_online needs autoreset_mode=SAME_STEP, the env has {env.autoreset_mode}")
    n_steps = check_int("n_steps", n_steps, 1)
    batch = check_int("batch", batch, 1)
    seed = check_int("seed", seed, 0)
    n_actions = getattr(agent, "n_actions", None)
    if n_actions is not None and n_actions != env_n_actions(env):
        raise ValueError(f"agent.n_actions={n_actions} but the env has {env_n_actions(env)} actions "
                         f"({env.dynamics.n_allowed} promotions + push nothing)")
    env_seed, act_seed = _seed_pairs(seed, 1)[0]
    rng = np.random.default_rng(act_seed)
    obs, _ = env.reset(seed=env_seed)
    n = env.num_envs
    mean_reward, push_rate = np.empty(n_steps), np.empty(n_steps)
    buffer: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    updates = 0
    for step in range(n_steps):
        a = _policy_actions(agent, obs, rng, 1)[:, 0]
        next_obs, reward, _, _, info = env.step(a)
        buffer.append((obs, a, reward))
        mean_reward[step], push_rate[step] = reward.mean(), info["pushed"].mean()
        obs = next_obs
        if len(buffer) == batch or step == n_steps - 1:
            agent.update(*(np.concatenate(parts) for parts in zip(*buffer, strict=True)))
            buffer, updates = [], updates + 1
    return OnlineLearningResult(mean_reward, push_rate, n_steps * n, updates)
