"""RL that decides WHEN to push; the myopic greedy on the response model decides WHICH promotion.

The factored decision (docs/RL_TIMING.md has the evidence for it): each day the agent chooses between
two actions, 0 = push nothing and 1 = push the greedy's best promotion at the user's current recent-push
count r (`MyopicGreedy.scores`, the simulator's own expected reward of each action: fatigue, the
objective's costs and the unsubscribe penalty included; the DP optimum picks the promotion the same way
per r). The agent observes normalised features of the env's observation (`TimingFeatures`, width
N_FEATURES, all O(1)):

    recent      recent_pushes / fatigue_window
    days_since  days_since_push (already / horizon, capped at 1)
    response    response_rate
    cap_hit     1 if a push today would be refused
    gain_now    (best push score - no-push score) / unit at the current r   (clipped to [-CLIP, CLIP];
                -CLIP when no push is allowed: capped)
    gain_rested the same with r = 0 (what a rested user would be worth)
    no_push     no-push score / unit (organic outcomes of a day without a push)
    day         the observation's day (days elapsed in the episode / horizon): the optimum's schedule depends on
                it (a push's lost future shrinks as the episode ends), a stationary policy cannot follow it

and is paid reward / unit (`world.unit`, the mean expected objective of a fresh push), so an OBD click
(~0.004 a push) and a Hillstrom conversion earn rewards of the same size.

* `TimingFeatures(dynamics, unit)`: obs (n, D) -> (features (n, F) float32, best promotion (n,)).
* `to_timing_vec_env(env, unit)`: an SB3 VecEnv over a BatchedPushEnv (SAME_STEP autoreset) with that
  observation, Discrete(2) actions and rewards / unit.
* `TimingPolicy(model, features)`: a trained PPO / DQN / A2C model as a BasePolicy over the env's own
  observation (n_allowed + 1 actions), so `rollout` evaluates it like every other agent. Deterministic by
  default (the model's most likely action; DQN: argmax Q).
* `expected_value(policy, env, n_seeds, seed)`: per-user episode values Σ_t E[r_t | s_t, a_t], the low-noise
  evaluation docs/RL_TIMING.md uses (unbiased for the value `rollout` estimates).
* `timing_agent_config(algo, ...)`, `train_timing(config, world_factory, unit, run_dir)`: training through
  `pushrl.agents.sb3_agents.train_sb3` (checkpoints, learning curve of the TimingPolicy).
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import DQN
from stable_baselines3.common.base_class import BaseAlgorithm

from pushrl.agents.sb3_adapter import batched_vec_env_class, check_sb3_env
from pushrl.agents.sb3_agents import EnvFactory, SB3AgentConfig, TrainedSB3, train_sb3
from pushrl.envs.sim.batched_env import BatchedPushEnv
from pushrl.envs.sim.log_observations import expected_step_reward
from pushrl.envs.sim.push_env import PushDynamics
from pushrl.policies.policy import BasePolicy, check_contexts
from pushrl.policies.timing import MyopicGreedy

FEATURE_NAMES = ("recent", "days_since", "response", "cap_hit", "gain_now", "gain_rested", "no_push", "day")
N_FEATURES = len(FEATURE_NAMES)
CLIP = 10.0
"""Features in units of `unit` are clipped to [-CLIP, CLIP]."""
NO_PUSH, PUSH = 0, 1

TIMING_DEFAULTS: dict[str, dict[str, Any]] = {
    # gamma 0.97 (docs/RL_TIMING.md: 0.95 over-pushes on OBD, 0.99 collapses PPO / DQN onto never push); small nets
    "ppo": {"n_steps": 32, "n_epochs": 4, "gamma": 0.97, "ent_coef": 0.0, "policy_kwargs": {"net_arch": [32, 32]}},
    "a2c": {"n_steps": 8, "gamma": 0.97, "ent_coef": 0.0, "policy_kwargs": {"net_arch": [32, 32]}},
    "dqn": {"gamma": 0.97, "buffer_size": 50_000, "learning_starts": 1_000, "train_freq": 1, "gradient_steps": 1,
            "target_update_interval": 500, "exploration_fraction": 0.3, "exploration_final_eps": 0.02,
            "policy_kwargs": {"net_arch": [32, 32]}},
}
"""SB3 settings of each algorithm on the timing problem (overridable through algo_kwargs)."""


class TimingFeatures:
    """The agent's normalised view of env observations and the greedy's best promotion (module docstring)."""

    def __init__(self, dynamics: PushDynamics, unit: float) -> None:
        if not np.isfinite(unit) or unit <= 0:
            raise ValueError(f"unit must be a finite number > 0, got {unit!r}")
        if dynamics.config.slate_size != 1:
            raise ValueError(f"the timing agent pushes one promotion a day, the env has slate_size="
                             f"{dynamics.config.slate_size}")
        self.dyn, self.unit = dynamics, float(unit)
        self.layout = dynamics.layout
        self.greedy = MyopicGreedy(dynamics, dynamics.config.diversity_weight)
        self.window = max(1, dynamics.config.fatigue_window)

    @property
    def n_allowed(self) -> int:
        return self.dyn.n_allowed

    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(features (n, N_FEATURES) float32, greedy's best promotion (n,) int64) of observations (n, D)."""
        feats, best, _ = self.evaluate(obs)
        return feats, best

    def evaluate(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Features, best promotion, and (n, 2) expected one-day reward / unit of [no push, push the best]
        (a refused push, cap hit, earns the no-push value)."""
        obs = np.asarray(obs)
        lay = self.layout
        scores = self.greedy.scores(obs)
        push, none = scores[:, :-1], scores[:, -1]
        best = np.argmax(push, axis=1)
        rested_obs = obs.copy()
        rested_obs[:, lay.recent_pushes] = 0.0
        rested_obs[:, lay.cap_hit] = 0.0
        rested = self.greedy.scores(rested_obs)
        gain_now = self._scaled(push[np.arange(len(obs)), best] - none)
        gain_rested = self._scaled(rested[:, :-1].max(axis=1) - rested[:, -1])
        feats = np.column_stack([obs[:, lay.recent_pushes] / self.window, obs[:, lay.days_since_push],
                                 obs[:, lay.response_rate], obs[:, lay.cap_hit], gain_now, gain_rested,
                                 self._scaled(none), obs[:, lay.day]])
        best_score = push[np.arange(len(obs)), best]
        expected = np.column_stack([none, np.where(np.isfinite(best_score), best_score, none)]) / self.unit
        return feats.astype(np.float32), best.astype(np.int64), expected

    def _scaled(self, values: np.ndarray) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64) / self.unit
        return np.clip(np.nan_to_num(v, nan=-CLIP, neginf=-CLIP, posinf=CLIP), -CLIP, CLIP)

    def env_actions(self, decisions: np.ndarray, best: np.ndarray) -> np.ndarray:
        """Env actions of the 0/1 decisions: the best promotion where 1, push nothing (n_allowed) where 0."""
        d = np.asarray(decisions).reshape(-1)
        if not np.isin(d, (NO_PUSH, PUSH)).all():
            raise ValueError(f"timing decisions must be 0 (no push) or 1 (push), got {np.unique(d)[:5].tolist()}")
        return np.where(d == PUSH, best, self.n_allowed).astype(np.int64)


def observation_space() -> spaces.Box:
    return spaces.Box(-CLIP, CLIP, shape=(N_FEATURES,), dtype=np.float32)


def to_timing_vec_env(env: BatchedPushEnv, unit: float, expected_reward: bool = True) -> Any:
    """An SB3 VecEnv: the env's users with TimingFeatures observations, Discrete(2), rewards / unit.

    expected_reward: pay each day's expected reward of the chosen action (`TimingFeatures.evaluate`, the
    simulator's own expectation: outcomes, costs and the expected unsubscribe penalty) instead of the drawn
    outcome; unsubscribes still end episodes as drawn. E[return] is unchanged, the variance is not: an OBD
    click pays 1 / 0.004 = 250 units with probability 0.004, a push's value differs between r by ~0.2 units.
    """
    check_sb3_env(env)
    return _vec_env_class()(env, TimingFeatures(env.dynamics, unit), bool(expected_reward))


@lru_cache(maxsize=1)
def _vec_env_class() -> type:
    class TimingVecEnv(batched_vec_env_class()):
        """BatchedPushEnv behind SB3's VecEnv with the timing agent's observation and actions."""

        def __init__(self, env: BatchedPushEnv, features: TimingFeatures, expected_reward: bool) -> None:
            self.features, self.expected_reward = features, expected_reward
            self._decisions = np.zeros(env.num_envs, dtype=np.int64)
            self._best = np.zeros(env.num_envs, dtype=np.int64)
            self._expected = np.zeros((env.num_envs, 2))
            super().__init__(env, observation_space(), spaces.Discrete(2))

        def _observe(self, obs: np.ndarray) -> np.ndarray:
            feats, self._best, self._expected = self.features.evaluate(obs)
            return feats

        def _terminal(self, final_obs: np.ndarray) -> np.ndarray:
            return self.features(final_obs)[0]

        def _env_actions(self, actions: np.ndarray) -> np.ndarray:
            self._decisions = np.asarray(actions).reshape(-1).astype(np.int64)
            return self.features.env_actions(actions, self._best)

        def _reward(self, reward: np.ndarray) -> np.ndarray:
            if self.expected_reward:  # E[reward | state, action]: same value, without the outcome draw's noise
                reward = self._expected[np.arange(self.num_envs), self._decisions] * self.features.unit
            return reward / self.features.unit

    return TimingVecEnv


class TimingPolicy(BasePolicy):
    """A trained timing model as a policy over the env's observation (n_allowed + 1 actions).

    p(push the greedy's best promotion) = the model's P(action 1) (deterministic: 1 if it is the model's
    most likely action / DQN's argmax Q, ties to no push), the rest on push nothing (the last action).
    """

    def __init__(self, model: BaseAlgorithm, features: TimingFeatures, deterministic: bool = True) -> None:
        if not isinstance(model.action_space, spaces.Discrete) or int(model.action_space.n) != 2:
            raise ValueError(f"a timing model has Discrete(2) actions, got {model.action_space}")
        if tuple(model.observation_space.shape) != (N_FEATURES,):
            raise ValueError(f"a timing model observes {N_FEATURES} features, got {model.observation_space.shape}")
        self.model, self.features, self.deterministic = model, features, bool(deterministic)
        self.n_features = features.layout.width

    @property
    def n_actions(self) -> int:
        return self.features.n_allowed + 1

    def push_probability(self, features: np.ndarray) -> np.ndarray:
        """(n,) P(push) of the model for timing features (n, N_FEATURES)."""
        policy = self.model.policy
        was_training = policy.training
        policy.set_training_mode(False)
        try:
            with torch.no_grad():
                x = torch.as_tensor(features, dtype=torch.float32, device=policy.device)
                if isinstance(self.model, DQN):
                    q = policy.q_net(x).cpu().double().numpy()
                    return (q[:, PUSH] > q[:, NO_PUSH]).astype(np.float64)
                p = policy.get_distribution(x).distribution.probs.cpu().double().numpy()[:, PUSH]
        finally:
            policy.set_training_mode(was_training)
        return (p > 0.5).astype(np.float64) if self.deterministic else p

    def _probabilities(self, contexts: np.ndarray) -> np.ndarray:
        feats, best = self.features(check_contexts(contexts, self.n_features, "observations"))
        p = self.push_probability(feats)
        out = np.zeros((len(contexts), self.n_actions))
        out[np.arange(len(contexts)), best] = p
        out[:, -1] += 1.0 - p
        return out


def timing_agent_config(algo: str, timesteps: int, n_envs: int, learning_rate: float, seed: int,
                        curve_points: int = 5, curve_users: int = 512, algo_kwargs: dict[str, Any] | None = None
                        ) -> SB3AgentConfig:
    """SB3AgentConfig of one timing agent: TIMING_DEFAULTS[algo] under algo_kwargs, one final checkpoint,
    curve_points learning-curve evaluations of curve_users users x 3 seeds."""
    eval_freq = max(1, timesteps // curve_points) if curve_points else 0
    return SB3AgentConfig(algo=algo, total_timesteps=timesteps, n_envs=n_envs, learning_rate=learning_rate, seed=seed,
                          tensorboard_log=None, checkpoint_freq=0, keep_checkpoints=1, eval_freq=eval_freq,
                          eval_users=curve_users, eval_seeds=3, algo_kwargs=dict(algo_kwargs or {}))


def train_timing(config: SB3AgentConfig, env_factory: EnvFactory, unit: float, run_dir: str | Path,
                 expected_reward: bool = True) -> TrainedSB3:
    """Train (or resume) one timing agent on env_factory's shop; `TrainedSB3.policy()` is its TimingPolicy.

    The algorithm's settings are TIMING_DEFAULTS[config.algo] overridden by config.algo_kwargs."""
    config = dataclasses.replace(config, algo_kwargs={**TIMING_DEFAULTS[config.algo], **config.algo_kwargs})
    features: dict[str, TimingFeatures] = {}

    def adapter(env: BatchedPushEnv) -> Any:
        features.setdefault("f", TimingFeatures(env.dynamics, unit))
        return to_timing_vec_env(env, unit, expected_reward)

    def as_policy(model: BaseAlgorithm, exploration_rate: float | None = None) -> BasePolicy:
        return TimingPolicy(model, features["f"])

    return train_sb3(config, env_factory, run_dir, adapter=adapter, as_policy=as_policy)


def expected_value(policy: BasePolicy, env: BatchedPushEnv, n_seeds: int, seed: int = 0) -> np.ndarray:
    """(n_seeds × num_envs,) value of one episode per user slot: Σ_t E[reward_t | obs_t, a_t] over the days the
    user's first episode runs (`expected_step_reward`: the env's exact one-day expectation of the action taken).

    E[Σ_t E[r_t | s_t, a_t]] = E[Σ_t r_t]: the same value as the drawn rewards `rollout` sums, without the outcome
    draws' noise (an OBD click pays 250 units with probability 0.004); trajectories (unsubscribes, the response
    rate's history) are still drawn. Env seed seed + i for repeat i, the policy's rng default_rng(seed + i), so
    two policies evaluated with the same seed see the same users in the same slots (paired differences).
    """
    if env.dynamics.k != 1:
        raise ValueError(f"expected_value scores one action a day, the env has slate_size={env.dynamics.k}")
    if env.max_episode_steps is None:
        raise ValueError("expected_value needs an env with max_episode_steps (the episode length)")
    if isinstance(n_seeds, bool) or not isinstance(n_seeds, int) or n_seeds < 1:
        raise ValueError(f"n_seeds must be an integer >= 1, got {n_seeds!r}")
    n, out = env.num_envs, []
    for i in range(n_seeds):
        if hasattr(policy, "reset"):
            policy.reset()
        obs, _ = env.reset(seed=seed + i)
        rng = np.random.default_rng(seed + i)
        alive, value = np.ones(n, dtype=bool), np.zeros(n)
        for _ in range(env.max_episode_steps):
            actions = np.asarray(policy.act(obs, rng)[0], dtype=np.int64).reshape(-1)
            value += np.where(alive, expected_step_reward(env.dynamics, obs)[np.arange(n), actions], 0.0)
            obs, _, terminated, truncated, _ = env.step(actions)
            alive &= ~(terminated | truncated)
            if not alive.any():
                break
        out.append(value)
    return np.concatenate(out)
