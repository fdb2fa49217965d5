"""Small statistics every layer uses: a mean with its confidence interval."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np


def mean_ci(values: np.ndarray, alpha: float = 0.05, binary: bool | None = None) -> tuple[float, float, float]:
    """Mean with a (1 − alpha) CI: Wilson score for 0/1 data, normal approximation otherwise."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    z = NormalDist().inv_cdf(1 - alpha / 2)
    m = float(v.mean())
    if binary is None:
        binary = bool(np.isin(v, (0.0, 1.0)).all())
    if binary:
        centre = (m + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(m * (1 - m) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return m, float(centre - half), float(centre + half)
    se = float(v.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    return m, m - z * se, m + z * se
