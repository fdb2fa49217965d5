"""Flag candidate policies that learned nothing worth shipping: collapsed onto one action, or a baseline's twin.

Inputs are every policy's action probabilities on the same evaluation rows,
`probabilities[name]`: (n, n_actions) float, rows sum to 1. For a candidate c
(a policy that is not a baseline):

    share_c(a)   = mean over rows of p_c(a | x)             (its share of pushes on a)
    TV(c, b)     = mean over rows of ½ Σ_a |p_c(a|x) − p_b(a|x)|   (mean total-variation distance)

c "collapsed" when max_a share_c(a) >= `collapse_share` (default 0.99), and
"duplicates" baseline b when TV(c, b) <= `duplicate_tv` (default 0.01; the
nearest baseline is named). Both bounds are inclusive, up to 1e-12 of rounding.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from pushrl.policies.policy import PROBABILITY_ATOL

COLLAPSE_SHARE = 0.99
DUPLICATE_TV = 0.01
ROUNDING = 1e-12  # bounds are inclusive: a share or distance within this of the bound counts as on it


def mean_tv_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Mean over rows of the total-variation distance ½ Σ_a |p − q| between two (n, A) probability arrays."""
    return float(0.5 * np.abs(p - q).sum(axis=1).mean())


def degenerate_notes(
    probabilities: Mapping[str, np.ndarray],
    baselines: Collection[str],
    action_ids: Sequence[Any],
    *,
    collapse_share: float = COLLAPSE_SHARE,
    duplicate_tv: float = DUPLICATE_TV,
) -> dict[str, str]:
    """{candidate: one-line note} for each candidate that collapsed or duplicates a baseline (others absent).

    probabilities: {policy name: (n, n_actions) probabilities on the same rows}, n >= 1.
    baselines: names that are baselines (compared against, never flagged); names absent from
        `probabilities` are ignored.
    action_ids: the n_actions action ids, in column order (named in the collapse note).
    Notes read "collapsed: puts 99.7% of its pushes on 'clearance30'" and/or
    "duplicates baseline most_popular (TV distance 0.002)", joined by "; ".
    Raises ValueError naming the policy whose array is not (n, n_actions) probabilities.
    """
    ids = list(action_ids)
    arrays = _checked(probabilities, len(ids))
    _check_bound("collapse_share", collapse_share)
    _check_bound("duplicate_tv", duplicate_tv)
    wanted = set(baselines)
    base = [b for b in arrays if b in wanted]
    notes: dict[str, str] = {}
    for name, p in arrays.items():
        if name in base:
            continue
        parts = []
        shares = p.mean(axis=0)
        top = int(shares.argmax())
        if shares[top] >= collapse_share - ROUNDING:
            parts.append(f"collapsed: puts {shares[top]:.1%} of its pushes on '{ids[top]}'")
        if base:
            distances = {b: mean_tv_distance(p, arrays[b]) for b in base}
            nearest = min(distances, key=distances.__getitem__)
            if distances[nearest] <= duplicate_tv + ROUNDING:
                parts.append(f"duplicates baseline {nearest} (TV distance {distances[nearest]:.3f})")
        if parts:
            notes[name] = "; ".join(parts)
    return notes


def _checked(probabilities: Mapping[str, np.ndarray], n_actions: int) -> dict[str, np.ndarray]:
    """Every array as float64 (n, n_actions) probabilities with the same n; ValueError naming the policy."""
    out: dict[str, np.ndarray] = {}
    n_rows: tuple[str, int] | None = None
    for name, raw in probabilities.items():
        p = np.asarray(raw, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != n_actions or p.shape[0] < 1:
            raise ValueError(f"probabilities[{name!r}] must have shape (n >= 1, {n_actions}) (one column per "
                             f"action id), got {p.shape}")
        if n_rows is not None and p.shape[0] != n_rows[1]:
            raise ValueError(f"probabilities[{name!r}] has {p.shape[0]} rows but probabilities[{n_rows[0]!r}] has "
                             f"{n_rows[1]}: every policy must be scored on the same rows")
        n_rows = n_rows or (name, p.shape[0])
        bad = ~np.isfinite(p) | (p < 0)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(f"probabilities[{name!r}] has {float(p[row, col])} at row {row}, action {col}: "
                             "expected finite values >= 0")
        sums = p.sum(axis=1)
        off = np.abs(sums - 1.0) > PROBABILITY_ATOL
        if off.any():
            row = int(np.argmax(off))
            raise ValueError(f"probabilities[{name!r}] row {row} sums to {sums[row]:.8g}, expected 1")
        out[name] = p
    return out


def _check_bound(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
