"""Uplift diagnostics: the Qini curve and coefficient (Radcliffe, 2007).

For a score ranking users by predicted uplift of treatment (e.g. "any e-mail")
over control ("no e-mail"), target the top-scored users first. At each cut
(after all users sharing a score), with treated/control counts N_T, N_C and
outcome sums Y_T, Y_C among the targeted:

    Q = Y_T − Y_C × N_T / N_C          (0 where N_C = 0)

The curve starts at (0, 0) and ends at the overall incremental gain. The Qini
coefficient is the area between the curve and the straight line to its end
point (random targeting), divided by the number of users, so it is comparable
across samples; positive means better than random.
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


def qini_curve(score: np.ndarray, treated: np.ndarray, outcome: np.ndarray) -> QiniCurve:
    """Qini curve and coefficient of `score` (higher = target first); vectorised, ties grouped."""
    s, t, y = _check(score, treated, outcome)
    order = np.argsort(-s, kind="mergesort")
    s, t, y = s[order], t[order], y[order]
    cuts = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    n_t = np.cumsum(t)[cuts]
    n_c = (cuts + 1) - n_t
    y_t = np.cumsum(np.where(t, y, 0.0))[cuts]
    y_c = np.cumsum(np.where(t, 0.0, y))[cuts]
    ratio = np.divide(n_t, n_c, out=np.zeros(len(cuts)), where=n_c > 0)
    gain = np.r_[0.0, y_t - y_c * ratio]
    n = np.r_[0, cuts + 1].astype(float)
    area = np.trapezoid(gain, n)
    random_area = 0.5 * n[-1] * gain[-1]
    return QiniCurve(n_targeted=n, gain=gain, coefficient=float((area - random_area) / (n[-1] ** 2)))
