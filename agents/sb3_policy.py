"""A trained stable-baselines3 model as a pushrl `Policy` over PushEnv observations.

Shapes (n observations of width d, A = actions per slot incl. "push nothing", k = slate size):
    observations (n, d) float: the env's observations (context + history summary)
    k = 1: action_probabilities -> (n, A); act -> actions (n,), propensities (n,)
    k > 1 (MultiDiscrete, PPO/A2C only): one independent categorical per display position, so
        action_probabilities -> (n, A, k) (the Open Bandit Pipeline `action_dist` layout) and
        act -> actions (n, k), propensities (n, k) (the per-position probabilities).
PPO/A2C: the probabilities of the policy's action distribution (softmax of its logits).
DQN: ε-greedy over the Q-values in closed form, p(a) = ε / A + (1 - ε) [a greedy] / #greedy
(ties split evenly), ε = the model's current `exploration_rate` unless given.
`probability_module(model)` is the same map as a standalone torch module for ONNX export.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.distributions import (
    CategoricalDistribution,
    MultiCategoricalDistribution,
)
from stable_baselines3.common.policies import BaseModel
from torch import nn

from pushrl.policies.policy import BasePolicy, check_contexts, sample_actions

SUPPORTED = (PPO, A2C, DQN)


def _check_model(model: Any) -> BaseAlgorithm:
    if not isinstance(model, SUPPORTED):
        raise TypeError(f"model must be a stable-baselines3 PPO, A2C or DQN, got {type(model).__name__}")
    space = model.observation_space
    if not isinstance(space, spaces.Box) or len(space.shape) != 1:
        raise ValueError(f"model must observe a flat Box (PushEnv observations), got {space}")
    act = model.action_space
    if isinstance(act, spaces.MultiDiscrete):
        if isinstance(model, DQN):
            raise ValueError("DQN supports Discrete actions only (slate_size = 1)")
        if len(set(act.nvec.tolist())) != 1:
            raise ValueError(f"slate actions must have one size per position, got nvec={act.nvec.tolist()}")
    elif not isinstance(act, spaces.Discrete):
        raise ValueError(f"model's action space must be Discrete or MultiDiscrete, got {act}")
    return model


def _check_epsilon(value: float) -> float:
    ok = isinstance(value, int | float | np.number) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"exploration_rate must be a number in [0, 1] or None, got {value!r}")
    return float(value)


def _action_shape(model: BaseAlgorithm) -> tuple[int, int]:
    """(A actions per slot, k slots) of the model's action space."""
    act = model.action_space
    if isinstance(act, spaces.Discrete):
        return int(act.n), 1
    return int(act.nvec[0]), len(act.nvec)


class SB3Policy(BasePolicy):
    """A PPO / A2C / DQN model as a Policy (see the module docstring for shapes).

    Args:
        model: the trained SB3 model (not copied: the policy follows further training).
        exploration_rate: DQN only: ε of the ε-greedy probabilities; None: the model's current
            `exploration_rate` (0 gives the greedy policy).
    """

    def __init__(self, model: BaseAlgorithm, exploration_rate: float | None = None) -> None:
        self.model = _check_model(model)
        if exploration_rate is not None:
            if not isinstance(model, DQN):
                raise ValueError(f"exploration_rate applies to DQN only, got it for {type(model).__name__}")
            exploration_rate = _check_epsilon(exploration_rate)
        self._epsilon = exploration_rate
        self.n_features = int(model.observation_space.shape[0])
        self._n_actions, self.slate_size = _action_shape(model)

    @property
    def n_actions(self) -> int:
        return self._n_actions

    @property
    def exploration_rate(self) -> float:
        """ε of the DQN ε-greedy policy (0 for PPO/A2C, whose exploration is their distribution)."""
        if not isinstance(self.model, DQN):
            return 0.0
        return self._epsilon if self._epsilon is not None else _check_epsilon(self.model.exploration_rate)

    def action_probabilities(self, contexts: np.ndarray) -> np.ndarray:
        """(n, A) probabilities, or (n, A, k) for slates, of the observations `contexts` (n, d)."""
        return self._probabilities(check_contexts(contexts, self.n_features, "observations"))

    def _probabilities(self, contexts: np.ndarray) -> np.ndarray:
        policy = self.model.policy
        was_training = policy.training
        policy.set_training_mode(False)
        try:
            with torch.no_grad():
                obs = torch.as_tensor(contexts, dtype=torch.float32, device=policy.device)
                if isinstance(self.model, DQN):
                    q = policy.q_net(obs)
                    return epsilon_greedy(q.cpu().double().numpy(), self.exploration_rate)
                dist = policy.get_distribution(obs)
                if isinstance(dist, CategoricalDistribution):
                    p = dist.distribution.probs.cpu().double().numpy()
                elif isinstance(dist, MultiCategoricalDistribution):
                    p = torch.stack([d.probs for d in dist.distribution], dim=2).cpu().double().numpy()
                else:
                    raise ValueError(f"unsupported action distribution {type(dist).__name__}")
                return p / p.sum(axis=1, keepdims=True)  # float32 softmax, renormalised in float64
        finally:
            policy.set_training_mode(was_training)

    def act(self, contexts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Sample actions with their propensities: (n,) each, or (n, k) each for slates."""
        p = self.action_probabilities(contexts)
        if p.ndim == 2:
            return sample_actions(p, rng)
        draws = [sample_actions(p[:, :, j], rng) for j in range(p.shape[2])]
        return np.stack([a for a, _ in draws], axis=1), np.stack([q for _, q in draws], axis=1)


def epsilon_greedy(q_values: np.ndarray, epsilon: float) -> np.ndarray:
    """(n, A) ε-greedy probabilities of (n, A) Q-values, ties for the maximum split evenly."""
    q = np.asarray(q_values, dtype=np.float64)
    greedy = q == q.max(axis=1, keepdims=True)
    return epsilon / q.shape[1] + (1.0 - epsilon) * greedy / greedy.sum(axis=1, keepdims=True)


class _ActorProbabilities(nn.Module):
    """PPO/A2C: observations (n, d) float32 -> softmax of the actor's logits, (n, A) or (n, A, k)."""

    def __init__(self, policy: nn.Module, n_actions: int, slate_size: int) -> None:
        super().__init__()
        self.policy = policy
        self.n_actions, self.slate_size = n_actions, slate_size

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        # BaseModel's extract_features, as ActorCriticPolicy.get_distribution calls it
        features = BaseModel.extract_features(self.policy, observations, self.policy.pi_features_extractor)
        logits = self.policy.action_net(self.policy.mlp_extractor.forward_actor(features))
        if self.slate_size == 1:
            return torch.softmax(logits, dim=1)
        logits = logits.reshape(-1, self.slate_size, self.n_actions)
        return torch.softmax(logits, dim=2).transpose(1, 2)


class _EpsilonGreedyProbabilities(nn.Module):
    """DQN: observations (n, d) float32 -> ε-greedy probabilities over the Q-values, (n, A)."""

    def __init__(self, q_net: nn.Module, epsilon: float) -> None:
        super().__init__()
        self.q_net = q_net
        self.epsilon = float(epsilon)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        q = self.q_net(observations)
        greedy = (q == q.max(dim=1, keepdim=True).values).to(q.dtype)
        n_actions = q.shape[1]
        return self.epsilon / n_actions + (1.0 - self.epsilon) * greedy / greedy.sum(dim=1, keepdim=True)


def probability_module(model: BaseAlgorithm, exploration_rate: float | None = None) -> nn.Module:
    """A frozen copy of the model's policy as a module: (n, d) float32 -> action probabilities.

    Output (n, A), or (n, A, k) for slates, the same numbers as `SB3Policy.action_probabilities`
    (DQN: ε = `exploration_rate`, default the model's current one). The module is in eval mode,
    on the CPU, without gradients, and exportable with `torch.onnx.export`.
    """
    wrapper = SB3Policy(model, exploration_rate)
    policy = copy.deepcopy(model.policy).to("cpu")
    module: nn.Module
    if isinstance(model, DQN):
        module = _EpsilonGreedyProbabilities(policy.q_net, wrapper.exploration_rate)
    else:
        module = _ActorProbabilities(policy, wrapper.n_actions, wrapper.slate_size)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
