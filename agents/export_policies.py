"""Turn each trained policy into a torch scorer over encoded contexts, then an artifact.

Agents in `pushrl run` see the response model's encoded context plus an
intercept column; the serving runtime feeds the ONNX model the encoded context
only, so every scorer appends the intercept itself. What is exported:

    epsilon_greedy  linear scores θᵀx, runtime ε-greedy (exact)
    softmax         linear scores θᵀx, runtime softmax at the same temperature (exact)
    linucb          θᵀx + α·sqrt(xᵀA⁻¹x), runtime greedy (exact)
    lints           posterior mean θᵀx, runtime greedy: Thompson sampling's randomisation
                    is not reproduced in ONNX (stated in the manifest's training_config)
    neural_linear   MLP representation, then the last layer's posterior mean, runtime greedy (same caveat)
    SB3 PPO/A2C/DQN `export_sb3`: their action probabilities over the env's observation; the manifest's
                    input fields are the observation's named columns and the last action is "push nothing"
    uniform / logging / most_popular   their constant probabilities (exact)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pushrl.agents.bandits.linear import EpsilonGreedy, LinTS, LinUCB, Softmax
from pushrl.agents.bandits.neural import NeuralLinear
from pushrl.agents.export import LinearUCBScorer, export_scorer
from pushrl.envs.features import ContextEncoder
from pushrl.policies.artifact import Exploration
from pushrl.policies.baselines import LoggingPolicyReplay, MostPopular, UniformRandom
from pushrl.policies.policy import Policy


class WithIntercept(torch.nn.Module):
    """Appends the constant-1 column the agents were trained with."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.cat([x, torch.ones_like(x[:, :1])], dim=1))


class LinearScorer(torch.nn.Module):
    """Per-action linear scores x @ θᵀ (θ: (A, d))."""

    def __init__(self, theta: np.ndarray, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("theta", torch.from_numpy(np.asarray(theta, np.float32) * np.float32(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.theta.T


class NeuralMeanScorer(torch.nn.Module):
    """NeuralLinear's posterior-mean scores: θ_aᵀ [body(x), 1] (x includes the agents' intercept column)."""

    def __init__(self, bandit: NeuralLinear) -> None:
        super().__init__()
        import copy

        self.body = copy.deepcopy(bandit.body).float().eval()
        self.register_buffer("theta", torch.from_numpy(np.asarray(bandit.stats.theta, np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return torch.cat([h, torch.ones_like(h[:, :1])], dim=1) @ self.theta.T


class ConstantProbabilities(torch.nn.Module):
    """The same probability vector for every context (context-free policies)."""

    def __init__(self, probabilities: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("p", torch.from_numpy(np.asarray(probabilities, np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * 0.0 + self.p[None, :]


def scorer_for(policy: Policy) -> tuple[torch.nn.Module, Exploration, str, str]:
    """(module over encoded contexts, runtime exploration, ONNX output kind, note)."""
    if isinstance(policy, EpsilonGreedy):
        return WithIntercept(LinearScorer(policy.stats.theta)), Exploration("epsilon", epsilon=policy.epsilon), "scores", "exact"
    if isinstance(policy, Softmax):
        return (WithIntercept(LinearScorer(policy.stats.theta)), Exploration("softmax", temperature=policy.temperature),
                "scores", "exact")
    if isinstance(policy, LinUCB):
        return WithIntercept(LinearUCBScorer(policy.stats.theta, policy.stats.A_inv, policy.alpha)), Exploration(), "scores", "exact"
    if isinstance(policy, NeuralLinear):
        return (WithIntercept(NeuralMeanScorer(policy)), Exploration(), "scores",
                "NeuralLinear exported as its greedy posterior-mean policy (no sampling in ONNX)")
    if isinstance(policy, LinTS):
        return (WithIntercept(LinearScorer(policy.stats.theta)), Exploration(), "scores",
                "Thompson sampling exported as its greedy posterior-mean policy (no sampling in ONNX)")
    if isinstance(policy, UniformRandom | LoggingPolicyReplay | MostPopular):
        probs = policy.action_probabilities(np.zeros((1, policy.n_features or 1)))[0]
        return ConstantProbabilities(probs), Exploration(), "probabilities", "exact"
    raise ValueError(f"no exporter for policy type {type(policy).__name__}; exportable: epsilon_greedy, softmax, "
                     "linucb, lints, uniform, logging, most_popular (SB3: pushrl.agents.sb3_policy.probability_module)")


def export_policy(
    policy: Policy,
    name: str,
    encoder: ContextEncoder,
    action_ids: Sequence[Any],
    folder: str | Path,
    *,
    no_push_action: Any | None = None,
    metadata: dict[str, Any] | None = None,
    parity_rows: int = 10_000,
) -> Path:
    """Export a trained policy to an artifact folder (atomic; ONNX parity checked by `export_scorer`)."""
    module, exploration, output, note = scorer_for(policy)
    meta = dict(metadata or {})
    meta["training_config"] = {**meta.get("training_config", {}), "agent": name, "export": note}
    return export_scorer(module.eval(), encoder, [a.item() if hasattr(a, "item") else a for a in action_ids], folder,
                         exploration=exploration, output=output, no_push_action=no_push_action, policy_kind=name,
                         metadata=meta, parity_rows=parity_rows)


NO_PUSH = "__no_push__"


def export_sb3(model: Any, observation_names: Sequence[str], action_ids: Sequence[Any], folder: str | Path, *,
               name: str, metadata: dict[str, Any] | None = None, parity_rows: int = 10_000) -> Path:
    """Export an SB3 model (PPO/A2C/DQN) trained in PushEnv: input = the env's observation, by column name.

    The manifest's encoder is the identity over the observation columns (mean 0, sd 1), so a request
    carries the observation fields as numbers; the action ids are the promotions plus `__no_push__`
    (the env's last action), which is the manifest's no-push action.
    """
    from pushrl.agents.sb3_policy import probability_module

    names = list(observation_names)
    encoder = ContextEncoder(tuple(names), tuple(0.0 for _ in names), tuple(1.0 for _ in names), ())
    ids = [a.item() if hasattr(a, "item") else a for a in action_ids] + [NO_PUSH]
    meta = dict(metadata or {})
    meta["training_config"] = {**meta.get("training_config", {}), "agent": name, "export": "exact (SB3 probabilities)"}
    return export_scorer(probability_module(model), encoder, ids, folder, exploration=Exploration(), output="probabilities",
                         no_push_action=NO_PUSH, policy_kind=name, metadata=meta, parity_rows=parity_rows)
