"""Row-wise probability helpers shared by the synthetic logger, propensity models and agents."""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-6  # logit clips probabilities to [EPS, 1 - EPS]


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function, overflow-free (via tanh)."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def logit(p: float, eps: float = EPS) -> float:
    """log(p / (1 - p)) of p clipped to [eps, 1 - eps]."""
    p = min(max(p, eps), 1 - eps)
    return math.log(p / (1 - p))


def softmax(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Row-wise softmax of (n, A) logits, shifted by each row's max (in place when out is z)."""
    out = np.subtract(z, z.max(axis=1, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)
    return out
