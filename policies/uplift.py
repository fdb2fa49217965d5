"""Uplift diagnostics: the Qini curve and coefficient (Radcliffe, 2007).

For a score ranking users by predicted uplift of treatment (e.g. "any push")
over control ("no push"), target the top-scored users first. At each cut
(after all users sharing a score), with treated/control counts N_T, N_C and
outcome sums Y_T, Y_C among the targeted:

    Q = Y_T − Y_C × N_T / N_C          (0 where N_C = 0)

The curve starts at (0, 0) and ends at the overall incremental gain. The Qini
coefficient is the area between the curve and the straight line to its end
point (random targeting), divided by the squared number of users, so it is
comparable across samples; positive means better than random.

Optional row weights (for a log that was not randomised uniformly: inverse
logged propensities) make a row count as `weight` users in every count and
sum, the x axis included: integer weights give exactly the curve of the log
with each row repeated that many times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class QiniCurve:
    n_targeted: np.ndarray  # (k,) users targeted at each cut, starting at 0
    gain: np.ndarray  # (k,) incremental outcome at each cut
    coefficient: float

    @property
    def fraction_targeted(self) -> np.ndarray:
        return self.n_targeted / self.n_targeted[-1]


def _check_weight(weight: np.ndarray | None, n: int) -> np.ndarray | None:
    if weight is None:
        return None
    w = np.asarray(weight, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weight must be 1-D with one value per user ({n}), got shape {w.shape}")
    bad = np.flatnonzero(~np.isfinite(w) | (w <= 0))
    if len(bad):
        raise ValueError(f"weight must be finite and > 0; index {int(bad[0])} has {w[bad[0]]!r}")
    return w


def _check(score: np.ndarray, treated: np.ndarray, outcome: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s, t, y = (np.asarray(a) for a in (score, treated, outcome))
    if not (s.ndim == t.ndim == y.ndim == 1 and len(s) == len(t) == len(y)):
        raise ValueError(f"score, treated and outcome must be 1-D of equal length, got {s.shape}, {t.shape}, {y.shape}")
    if not np.isin(t, (0, 1)).all():
        raise ValueError("treated must be 0/1 (or bool)")
    for name, a in (("score", s), ("outcome", y)):
        if not np.isfinite(a.astype(float)).all():
            raise ValueError(f"{name} has NaN or inf at index {int(np.flatnonzero(~np.isfinite(a.astype(float)))[0])}")
    return s.astype(float), t.astype(bool), y.astype(float)


def qini_curve(score: np.ndarray, treated: np.ndarray, outcome: np.ndarray,
               weight: np.ndarray | None = None) -> QiniCurve:
    """Qini curve and coefficient of `score` (higher = target first); vectorised, ties grouped.

    weight: optional (n,) positive row weights (a row counts as `weight` users); None: all 1.
    """
    s, t, y = _check(score, treated, outcome)
    w = _check_weight(weight, len(s))
    order = np.argsort(-s, kind="mergesort")
    s, t, y = s[order], t[order], y[order]
    cuts = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    if w is None:
        n_t = np.cumsum(t)[cuts]
        n_c = (cuts + 1) - n_t
        y_t = np.cumsum(np.where(t, y, 0.0))[cuts]
        y_c = np.cumsum(np.where(t, 0.0, y))[cuts]
        n = np.r_[0, cuts + 1].astype(float)
    else:
        w = w[order]
        n_t = np.cumsum(np.where(t, w, 0.0))[cuts]
        n_c = np.cumsum(np.where(t, 0.0, w))[cuts]
        y_t = np.cumsum(np.where(t, w * y, 0.0))[cuts]
        y_c = np.cumsum(np.where(t, 0.0, w * y))[cuts]
        n = np.r_[0.0, np.cumsum(w)[cuts]]
    ratio = np.divide(n_t, n_c, out=np.zeros(len(cuts)), where=n_c > 0)
    gain = np.r_[0.0, y_t - y_c * ratio]
    area = np.trapezoid(gain, n)
    random_area = 0.5 * n[-1] * gain[-1]
    return QiniCurve(n_targeted=n, gain=gain, coefficient=float((area - random_area) / (n[-1] ** 2)))
