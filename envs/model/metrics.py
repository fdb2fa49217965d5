"""Prediction metrics for binary rewards: log loss, rank AUC, calibration error.

All take batch-first arrays: y (n,) in {0, 1}, p (n,) predicted P(y = 1).
numpy only (no sklearn); the tests cross-check against sklearn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BIN_STRATEGIES = ("equal_mass", "equal_width")
EPS = 1e-12


def _check_pair(y: np.ndarray, p: np.ndarray, name: str = "p") -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y and {name} must have the same shape, got {y.shape} and {p.shape}")
    if len(y) == 0:
        raise ValueError("y is empty: need at least one row")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} has NaN or infinite values at rows {np.flatnonzero(~np.isfinite(p))[:5].tolist()}")
    return y, p


def log_loss(y: np.ndarray, p: np.ndarray, weights: np.ndarray | None = None, eps: float = EPS) -> float:
    """Mean binary cross-entropy, p clipped to [eps, 1 - eps]; optional row weights."""
    y, p = _check_pair(y, p)
    p = np.clip(p, eps, 1 - eps)
    per_row = -(y * np.log(p) + (1 - y) * np.log1p(-p))
    if weights is None:
        return float(per_row.mean())
    w = np.asarray(weights, dtype=np.float64).ravel()
    return float(np.sum(w * per_row) / np.sum(w))


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of x, ties get the mean of the ranks they span."""
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.r_[0, np.flatnonzero(np.diff(xs)) + 1]
    ends = np.r_[starts[1:], len(xs)]
    tie_rank = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(tie_rank, ends - starts)
    return ranks


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC from the Mann-Whitney U statistic (ties count one half); NaN if y has one class."""
    y, score = _check_pair(y, score, "score")
    pos = y > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = average_ranks(score)
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclass(frozen=True)
class Reliability:
    """Per-bin calibration data: mean prediction, observed rate and row count (empty bins dropped)."""

    mean_predicted: np.ndarray
    observed_rate: np.ndarray
    count: np.ndarray
    strategy: str

    @property
    def ece(self) -> float:
        w = self.count / self.count.sum()
        return float(np.sum(w * np.abs(self.observed_rate - self.mean_predicted)))


def bin_ids(p: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    """Bin of each prediction (0 .. n_bins-1).

    equal_width: [0, 1/B), [1/B, 2/B), ..., [(B-1)/B, 1].
    equal_mass: rows sorted by p (ties broken by row order) and cut into B
        contiguous groups whose sizes differ by at most one (`np.array_split`).
        With rare events (click rates < 1%) equal-width bins put almost every row
        in the first bin, so equal-mass is the default.
    """
    if not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be an int >= 1, got {n_bins!r}")
    if strategy not in BIN_STRATEGIES:
        raise ValueError(f"strategy must be one of {BIN_STRATEGIES}, got {strategy!r}")
    if strategy == "equal_width":
        return np.minimum((np.clip(p, 0.0, 1.0) * n_bins).astype(np.int64), n_bins - 1)
    order = np.argsort(p, kind="mergesort")
    ids = np.empty(len(p), dtype=np.int64)
    for b, rows in enumerate(np.array_split(order, n_bins)):
        ids[rows] = b
    return ids


def reliability(y: np.ndarray, p: np.ndarray, n_bins: int = 10, strategy: str = "equal_mass") -> Reliability:
    """The reliability-diagram data behind `expected_calibration_error`."""
    y, p = _check_pair(y, p)
    ids = bin_ids(p, n_bins, strategy)
    count = np.bincount(ids, minlength=n_bins).astype(np.float64)
    sum_p = np.bincount(ids, weights=p, minlength=n_bins)
    sum_y = np.bincount(ids, weights=y, minlength=n_bins)
    keep = count > 0
    return Reliability(sum_p[keep] / count[keep], sum_y[keep] / count[keep], count[keep], strategy)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10, strategy: str = "equal_mass") -> float:
    """ECE = sum_b (n_b / n) |mean(y_b) - mean(p_b)| over non-empty bins (see `bin_ids`)."""
    return reliability(y, p, n_bins, strategy).ece
