"""Contextual bandits: ε-greedy, softmax, LinUCB, LinTS (disjoint and shared), NeuralLinear.

`make_bandit("linucb", n_actions=10, n_features=5, alpha=0.5)` builds one by name.
"""

from __future__ import annotations

import inspect
from typing import Any

from pushrl.agents.bandits.base import BanditAgent, OfflineResult, OnlineEnv, OnlineResult
from pushrl.agents.bandits.linear import (
    EpsilonGreedy,
    LinearBandit,
    LinTS,
    LinUCB,
    SharedLinTS,
    SharedLinUCB,
    Softmax,
)
from pushrl.agents.bandits.neural import NeuralLinear
from pushrl.agents.bandits.ridge import RidgeStats

BANDITS: dict[str, type[BanditAgent]] = {
    "epsilon_greedy": EpsilonGreedy,
    "softmax": Softmax,
    "linucb": LinUCB,
    "lints": LinTS,
    "linucb_shared": SharedLinUCB,
    "lints_shared": SharedLinTS,
    "neural_linear": NeuralLinear,
}


def make_bandit(name: str, **hparams: Any) -> BanditAgent:
    """Build the bandit registered as `name`; unknown names or hyperparameters are refused."""
    if name not in BANDITS:
        raise ValueError(f"unknown bandit {name!r}; allowed: {sorted(BANDITS)}")
    cls = BANDITS[name]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    forgetting = hparams.pop("forgetting", None)
    if forgetting is not None and not hasattr(cls, "forgetting"):
        raise TypeError(f"{name} has no forgetting factor; linear bandits do")
    unknown = sorted(set(hparams) - set(allowed))
    if unknown:
        raise TypeError(f"{name} got unknown hyperparameter(s) {unknown}; allowed: {allowed + ['forgetting']}")
    agent = cls(**hparams)
    if forgetting is not None:
        agent.forgetting = forgetting
    return agent


__all__ = [
    "BANDITS",
    "BanditAgent",
    "EpsilonGreedy",
    "LinTS",
    "LinUCB",
    "LinearBandit",
    "NeuralLinear",
    "OfflineResult",
    "OnlineEnv",
    "OnlineResult",
    "RidgeStats",
    "SharedLinTS",
    "SharedLinUCB",
    "Softmax",
    "make_bandit",
]
