"""ObservationBandit: a contextual bandit on compact features of the push-env observation, and its online training.

features = [top-k principal components of the context, the history part of the observation, 1]:
the full ~110-wide OBD context makes LinUCB 30x slower, so the context is projected onto the
principal components of the pool (an SVD of the centred pool contexts) and the history columns
(`ObservationLayout.history`) are kept as they are; the day of the episode is left out (a day's expected reward
does not depend on it, and the features stay those of the bandits' earlier runs). Rewards are divided by `reward_scale` (the
world's average push) so exploration settings mean the same on every log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pushrl.agents.bandits import BanditAgent, make_bandit
from pushrl.agents.rollout import learn_online
from pushrl.agents.sequential_config import SequentialConfig
from pushrl.envs.sim.push_env import PushDynamics
from pushrl.envs.sim.world import World
from pushrl.policies.policy import BasePolicy


class ObservationBandit(BasePolicy):
    """A bandit (`pushrl.agents.bandits.make_bandit(name, **hparams)`) over `features(observations)`.

    Args:
        name, hparams: the bandit and its hyperparameters.
        dynamics: the env's dynamics (actions, observation layout).
        pool: (n, d) the pool's contexts (the principal components are theirs).
        dims: principal components kept (at most d).
        reward_scale: rewards are divided by it in `update`.
        seed: the bandit's seed.
    """

    def __init__(self, name: str, hparams: Mapping[str, Any], dynamics: PushDynamics, pool: np.ndarray, dims: int,
                 reward_scale: float, seed: int) -> None:
        self.layout = dynamics.layout
        self.reward_scale = float(reward_scale)
        self.n_features = self.layout.width
        self.mean = pool.mean(axis=0)
        _, s, vt = np.linalg.svd(pool - self.mean, full_matrices=False)
        k = min(dims, vt.shape[0])
        self.projection = vt[:k].T  # (d, k)
        total = float((s**2).sum())
        self.explained = float((s[:k] ** 2).sum() / total) if total > 0 else 1.0
        """Share of the pool contexts' variance the kept components explain."""
        history = self.layout.history
        width = k + (history.stop - history.start) + 1
        self.bandit: BanditAgent = make_bandit(name, n_actions=dynamics.n_allowed + 1, n_features=width, seed=seed,
                                               **dict(hparams))

    @property
    def n_actions(self) -> int:
        return self.bandit.n_actions

    def features(self, obs: np.ndarray) -> np.ndarray:
        """(n, k + history width + 1) features of observations (n, D)."""
        x = np.asarray(obs, dtype=np.float64)
        z = (x[:, self.layout.context] - self.mean) @ self.projection
        return np.hstack([z, x[:, self.layout.history], np.ones((len(x), 1))])

    def _probabilities(self, contexts: np.ndarray) -> np.ndarray:
        return self.bandit.action_probabilities(self.features(contexts))

    def act(self, contexts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self.bandit.act(self.features(contexts), rng)

    def update(self, contexts: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        self.bandit.update(self.features(contexts), actions, np.asarray(rewards, dtype=np.float64) / self.reward_scale)


def train_bandit(name: str, hparams: Mapping[str, Any], world: World, cfg: SequentialConfig, diversity_weight: float | None,
                 seed: int) -> tuple[ObservationBandit, np.ndarray]:
    """A bandit trained online (`learn_online`, cfg.bandit_days days x cfg.bandit_users users) in the world's env,
    λ = diversity_weight (absolute; None: the world's). Returns it and its per-day mean reward."""
    env = world.factory(diversity_weight)(cfg.bandit_users)
    agent = ObservationBandit(name, hparams, env.dynamics, world.shop.contexts, cfg.bandit_context_dims, world.unit, seed)
    res = learn_online(agent, env, cfg.bandit_days, batch=1, seed=seed)
    return agent, res.mean_reward
