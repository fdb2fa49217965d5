"""Turn each trained policy into a torch scorer over encoded contexts, then an artifact.

Agents in `pushrl run` see the response model's encoded context plus an
intercept column; the serving runtime feeds the ONNX model the encoded context
only, so every scorer appends the intercept itself. What is exported, and so what
`served_policy` returns for OPE to score (the artifact's probabilities, exactly):

    epsilon_greedy  linear scores θᵀx, runtime ε-greedy: served with its sampling and true propensities
    softmax         linear scores θᵀx, runtime softmax at the same temperature: served with its sampling
    linucb          θᵀx + α·sqrt(xᵀA⁻¹x), runtime greedy (LinUCB is deterministic: exact)
    lints           posterior mean θᵀx, runtime greedy: evaluated and served as that greedy policy
                    (`GreedyPosteriorMean`), not as Thompson sampling (see below)
    neural_linear   MLP representation, then the last layer's posterior mean, runtime greedy (as lints)
    linucb_shared   feature-based: θᵀφ(x, z_a) + α·sqrt(φᵀA⁻¹φ) over the catalogue's action features z,
                    a second ONNX input, so the runtime scores a new catalogue without retraining (exact)
    lints_shared    feature-based posterior mean θᵀφ(x, z_a), runtime greedy (as lints)
    SB3 PPO/A2C/DQN `export_sb3`: their action probabilities over the env's observation; the manifest's
                    input fields are the observation's named columns and the last action is "push nothing"
    uniform / logging / most_popular   their constant probabilities (exact; a context-dependent
                    logging policy given as a callable cannot be exported and is refused)

Why Thompson sampling ships greedy: its true propensities (the chance each action's
posterior draw is the largest) have no closed form beyond two actions. The bandits'
own `action_probabilities` are exact for a stand-in policy that picks one of `n_mc`
fixed draws, but reproducing it in ONNX means an argmax over `n_mc` float32 draws per
row, where a near-tie that float32 rounding resolves differently in torch and in
onnxruntime moves a probability by 1/n_mc: no 1e-5 parity. So a TS agent is scored by OPE as the greedy posterior-mean
policy its artifact serves with propensity 1, and its training is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pushrl.agents.bandits.linear import EpsilonGreedy, LinearBandit, LinTS, LinUCB, Softmax
from pushrl.agents.bandits.neural import NeuralLinear
from pushrl.agents.export import LinearUCBScorer, export_scorer
from pushrl.envs.data.features import ContextEncoder
from pushrl.policies.artifact import CatalogueSpec, Exploration
from pushrl.policies.baselines import (
    LoggingPolicyReplay,
    MostPopular,
    greedy_probabilities,
)
from pushrl.policies.policy import BasePolicy, Policy, UniformPolicy

EXPORTABLE = ("epsilon_greedy, softmax, linucb, lints, linucb_shared, lints_shared, neural_linear, uniform, logging, "
              "most_popular (SB3: export_sb3)")


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


class SharedLinearScorer(torch.nn.Module):
    """A shared-feature linear bandit over (contexts (n, d), action features (A, m)) -> (n, A) scores.

    Both inputs get the constant-1 column the agents were trained with, then
    φ(x, z_a) = vec(x z_aᵀ) ("outer") or [x, z_a] ("concat"); score = θᵀφ + α·sqrt(φᵀA⁻¹φ) (α = 0: the mean).
    """

    def __init__(self, bandit: LinearBandit, alpha: float) -> None:
        super().__init__()
        self.outer = bandit.interaction == "outer"
        self.alpha = float(alpha)
        self.register_buffer("theta", torch.from_numpy(np.asarray(bandit.stats.theta[0], np.float32)))
        self.register_buffer("a_inv", torch.from_numpy(np.asarray(bandit.stats.A_inv[0], np.float32)))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)
        z = torch.cat([z, torch.ones_like(z[:, :1])], dim=1)
        n, a = x.shape[0], z.shape[0]
        if self.outer:
            phi = (x[:, None, :, None] * z[None, :, None, :]).reshape(n, a, x.shape[1] * z.shape[1])
        else:
            phi = torch.cat([x[:, None, :].expand(n, a, x.shape[1]), z[None, :, :].expand(n, a, z.shape[1])], dim=2)
        mean = phi @ self.theta
        if self.alpha == 0.0:
            return mean
        quad = ((phi @ self.a_inv) * phi).sum(dim=2)
        return mean + self.alpha * torch.sqrt(torch.clamp(quad, min=0.0))


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


class GreedyPosteriorMean(BasePolicy):
    """Argmax of a Thompson-sampling bandit's posterior mean, ties split evenly: what its artifact serves.

    bandit: a trained LinTS, SharedLinTS or NeuralLinear; read on every call, never changed, so it keeps
    learning (and is saved) as the bandit it is.
    """

    def __init__(self, bandit: LinTS) -> None:
        if not isinstance(bandit, LinTS):
            raise TypeError(f"bandit must be a LinTS, SharedLinTS or NeuralLinear, got {type(bandit).__name__}")
        self.bandit = bandit
        self.n_features = bandit.n_features

    @property
    def n_actions(self) -> int:
        return self.bandit.n_actions

    def _probabilities(self, contexts: np.ndarray) -> np.ndarray:
        return greedy_probabilities(self.bandit.estimates(contexts))


def served_policy(policy: Policy) -> Policy:
    """The Policy whose `action_probabilities` are what `export_policy(policy, ...)`'s artifact serves.

    Score this with OPE and export this same object, so the shipped artifact is the evaluated policy.
    ε-greedy, softmax, LinUCB (disjoint and shared) and the constant baselines are served exactly as
    they are (the policy itself is returned); Thompson-sampling agents (lints, lints_shared,
    neural_linear) are served greedy on their posterior mean, so they come back as
    `GreedyPosteriorMean` (module docstring). Idempotent. Raises ValueError for a policy
    `export_policy` cannot export, naming its type.
    """
    if isinstance(policy, GreedyPosteriorMean):
        return policy
    if isinstance(policy, LinTS):
        return GreedyPosteriorMean(policy)
    _check_exportable(policy)
    return policy


def _check_exportable(policy: Policy) -> None:
    """ValueError unless `scorer_for` has an exporter for `policy`."""
    if isinstance(policy, LoggingPolicyReplay) and not policy.is_constant:
        raise ValueError("the logging policy is a context-dependent callable, which cannot be exported to ONNX; "
                         "give LoggingPolicyReplay its (n_actions,) probability vector to export it")
    if isinstance(policy, LinearBandit) and policy.shared and not isinstance(policy, LinUCB | LinTS):
        raise ValueError(f"no exporter for a shared-feature {type(policy).__name__}")
    known = EpsilonGreedy | Softmax | LinUCB | LinTS | UniformPolicy | LoggingPolicyReplay | MostPopular
    if not isinstance(policy, known):
        raise ValueError(f"no exporter for policy type {type(policy).__name__}; exportable: {EXPORTABLE}")


def scorer_for(policy: Policy) -> tuple[torch.nn.Module, Exploration, str, str]:
    """(module over encoded contexts, runtime exploration, ONNX output kind, note)."""
    if isinstance(policy, GreedyPosteriorMean):
        policy = policy.bandit
    _check_exportable(policy)
    if isinstance(policy, LinearBandit) and policy.shared:
        if isinstance(policy, LinUCB):
            return SharedLinearScorer(policy, policy.alpha), Exploration(), "scores", "exact (feature-based)"
        return (SharedLinearScorer(policy, 0.0), Exploration(), "scores",
                "Thompson sampling exported as its greedy posterior-mean policy (no sampling in ONNX; feature-based)")
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
    probs = policy.action_probabilities(np.zeros((1, policy.n_features or 1)))[0]
    return ConstantProbabilities(probs), Exploration(), "probabilities", "exact"


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
    catalogue: CatalogueSpec | None = None,
) -> Path:
    """Export a trained policy to an artifact folder (atomic; ONNX parity checked by `export_scorer`).

    policy: a trained agent or its `served_policy`; both export the same artifact, whose probabilities
        are `served_policy(policy).action_probabilities` on the same encoded contexts (plus intercept).
    catalogue: the promotion-feature encoder and raw features of `action_ids`; required for (and only
        used by) shared-feature bandits, whose encoded catalogue must equal the features they were trained on.
    """
    module, exploration, output, note = scorer_for(policy)
    if isinstance(policy, GreedyPosteriorMean):
        policy = policy.bandit
    shared = isinstance(module, SharedLinearScorer)
    if shared and catalogue is None:
        raise ValueError(f"{name} scores actions from their features: export it with catalogue=CatalogueSpec(...) "
                         "(the catalogue encoder and each action's raw features)")
    if shared:
        from pushrl.agents.export import catalogue_matrix

        z, trained = catalogue_matrix(catalogue), policy.action_features
        if trained is None or z.shape[0] != trained.shape[0] or z.shape[1] + 1 != trained.shape[1] \
                or not np.allclose(np.hstack([z, np.ones((len(z), 1))]), trained, atol=1e-5):
            raise ValueError(f"catalogue does not encode to the action features {name} was trained on (plus the "
                             f"intercept column): encoded {z.shape}, trained "
                             f"{None if trained is None else trained.shape}")
    elif catalogue is not None:
        raise ValueError(f"{name} scores a fixed action set; catalogue is only for shared-feature bandits")
    meta = dict(metadata or {})
    meta["training_config"] = {**meta.get("training_config", {}), "agent": name, "export": note}
    return export_scorer(module.eval(), encoder, [a.item() if hasattr(a, "item") else a for a in action_ids], folder,
                         exploration=exploration, output=output, no_push_action=no_push_action, policy_kind=name,
                         metadata=meta, parity_rows=parity_rows, catalogue=catalogue)


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
