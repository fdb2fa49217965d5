"""The accuracy–diversity Pareto front of evaluated policies: non-dominated points and the front's shape.

Vocabulary: a *point* is one policy evaluated in the simulator, with an accuracy (objective per
push: the objective the pushed promotions earned per push message, whatever the objective's
rewards are called) and a diversity (mean category novelty of the pushed promotions; catalogue
coverage as a second view). Both are maximised. A point is *dominated* if another point is at
least as good on both and strictly better on one; the non-dominated points are the front.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ACCURACY = "objective_per_push"
DIVERSITY = "category_novelty"
FLAT, MONOTONE, NOT_MONOTONE = "flat", "monotone", "not monotone"
"""The shapes `front_shape` tells apart."""


def non_dominated(points: np.ndarray) -> np.ndarray:
    """(n,) bool: True where no other row of `points` (n, m) is >= in every column and > in one.

    Every column is maximised. Rows with a NaN are never on the front and dominate nothing.
    Equal rows do not dominate each other (both stay on the front).
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"points must be a 2-D (n_points, n_objectives) array, got shape {p.shape}")
    finite = np.isfinite(p).all(axis=1)
    q = p[finite]
    geq = (q[None, :, :] >= q[:, None, :]).all(axis=2)  # geq[i, j]: j is >= i everywhere
    gt = (q[None, :, :] > q[:, None, :]).any(axis=2)  # gt[i, j]: j is > i somewhere
    out = np.zeros(len(p), dtype=bool)
    out[finite] = ~(geq & gt).any(axis=1)
    return out


def mark_front(frame: pd.DataFrame, accuracy: str = ACCURACY, diversity: str = DIVERSITY,
               group: str | None = None) -> pd.DataFrame:
    """A copy of `frame` with a bool column `non_dominated` (per value of `group`, if given)."""
    missing = [c for c in (accuracy, diversity, group) if c is not None and c not in frame.columns]
    if missing:
        raise ValueError(f"mark_front: columns {missing} are missing; the frame has {list(frame.columns)}")
    out = frame.copy()
    out["non_dominated"] = False
    groups = [(None, out.index)] if group is None else list(out.groupby(group, sort=False).groups.items())
    for _, idx in groups:
        pts = out.loc[idx, [accuracy, diversity]].to_numpy(dtype=np.float64)
        out.loc[idx, "non_dominated"] = non_dominated(pts)
    out["non_dominated"] = out["non_dominated"].astype(bool)
    return out


def front_shape(points: pd.DataFrame, accuracy: str = ACCURACY, diversity: str = DIVERSITY) -> tuple[str, float]:
    """Over one agent's sweep: FLAT (one accuracy at every λ), MONOTONE (accuracy never rises as
    diversity rises) or NOT_MONOTONE; and the Spearman rank correlation of accuracy and diversity
    (nan when flat). Rows with a NaN in either column are left out."""
    p = points.dropna(subset=[accuracy, diversity]).sort_values([diversity, accuracy], ascending=[True, False])
    acc = p[accuracy].to_numpy()
    if len(p) < 2 or np.ptp(acc) <= 1e-12 * max(1.0, float(np.abs(acc).max())):
        return FLAT, float("nan")
    rho = float(p[[accuracy, diversity]].rank().corr().iloc[0, 1])
    return (MONOTONE if np.all(np.diff(acc) <= 1e-12) else NOT_MONOTONE), rho
