"""Row-wise probability helpers shared by the synthetic logger, propensity models and agents."""

from __future__ import annotations

import numpy as np


def softmax(z: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Row-wise softmax of (n, A) logits, shifted by each row's max (in place when out is z)."""
    out = np.subtract(z, z.max(axis=1, keepdims=True), out=out)
    np.exp(out, out=out)
    out /= out.sum(axis=1, keepdims=True)
    return out
