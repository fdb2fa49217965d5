"""Drift over time in a log with timestamps: feature PSI and reward rates per time window.

Windows (`time_windows`): either `n_windows` of about equal row counts in time
order (rows sharing a timestamp stay in one window, so a window may hold more
or fewer rows), or calendar periods of a pandas frequency (`freq="D"`, `"W"`,
`"M"`, ...; periods in UTC, empty periods skipped). The first window is the
reference ("training") window.

Population stability index of a feature in window w against the reference r:

    PSI = Σ_bins (p_w - p_r) · ln(p_w / p_r),   p = max(count / rows, eps)

Numeric features are binned at the reference window's quantiles (n_bins
equal-mass bins; repeated edges merged, so a feature with few values gets
fewer bins; outer bins open-ended, so new extremes land in them). Categorical
features use one bin per category seen in either window. Empty bins get the
proportion `eps` (default 1e-4) instead of 0, without renormalising, so PSI
stays finite; a category absent from the reference and holding share q now
contributes about q · ln(q / eps). Conventional reading: < 0.1 stable,
0.1-0.25 moderate shift, > 0.25 major shift.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pushrl.envs.data.logged_data import LoggedData

DEFAULT_EPS = 1e-4
MODERATE, MAJOR = 0.1, 0.25


@dataclass(frozen=True, eq=False)
class TimeWindow:
    """One window: a label, its first and last timestamp and its row indices (into the log)."""

    label: str
    start: pd.Timestamp
    end: pd.Timestamp
    rows: np.ndarray


def time_windows(data: LoggedData, n_windows: int | None = None, freq: str | None = None) -> list[TimeWindow]:
    """Split a timestamped log into windows in time order (give exactly one of n_windows, freq)."""
    if data.timestamp is None:
        raise ValueError(f"log '{data.name}' has no timestamp column: drift over time cannot be measured")
    if (n_windows is None) == (freq is None):
        raise ValueError(f"give exactly one of n_windows and freq, got n_windows={n_windows!r}, freq={freq!r}")
    ts = data.timestamp
    if n_windows is not None:
        if isinstance(n_windows, bool) or not isinstance(n_windows, int | np.integer) or n_windows < 2:
            raise ValueError(f"n_windows must be an int >= 2 (a reference and at least one more), got {n_windows!r}")
        values = ts.to_numpy()
        order = np.argsort(values, kind="stable")
        sorted_ts = values[order]
        n = len(order)
        cuts = [0]
        for k in range(1, n_windows):
            i = min(max(int(round(k * n / n_windows)), 1), n)
            cuts.append(max(int(np.searchsorted(sorted_ts, sorted_ts[i - 1], side="right")), cuts[-1]))
        cuts.append(n)
        pieces = [np.sort(order[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]
        labels = [f"w{k}" for k in range(len(pieces))]
    else:
        try:
            periods = ts.dt.tz_convert("UTC").dt.tz_localize(None).dt.to_period(freq)
        except (ValueError, TypeError) as err:
            raise ValueError(f"freq must be a pandas period frequency such as 'D', 'W' or 'M', got {freq!r}: {err}") from err
        codes, uniques = pd.factorize(periods, sort=True)
        pieces = [np.flatnonzero(codes == k) for k in range(len(uniques))]
        labels = [str(u) for u in uniques]
    if len(pieces) < 2:
        raise ValueError(f"the log's {data.n_rounds} rows fall into {len(pieces)} window(s); drift needs at least 2 "
                         "(too few distinct timestamps, or a frequency longer than the log's time range)")
    return [TimeWindow(lab, ts.iloc[p].min(), ts.iloc[p].max(), p) for lab, p in zip(labels, pieces, strict=True)]


def quantile_edges(reference: np.ndarray, n_bins: int) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (repeated edges merged)."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 2:
        raise ValueError(f"n_bins must be an int >= 2, got {n_bins!r}")
    return np.unique(np.quantile(np.asarray(reference, dtype=np.float64), np.linspace(0, 1, n_bins + 1)[1:-1]))


def _psi(ref_counts: np.ndarray, cur_counts: np.ndarray, eps: float) -> float:
    p_r = np.maximum(ref_counts / max(ref_counts.sum(), 1), eps)
    p_w = np.maximum(cur_counts / max(cur_counts.sum(), 1), eps)
    return float(np.sum((p_w - p_r) * np.log(p_w / p_r)))


def psi(
    reference: np.ndarray | pd.Series,
    current: np.ndarray | pd.Series,
    *,
    categorical: bool = False,
    n_bins: int = 10,
    eps: float = DEFAULT_EPS,
) -> float:
    """Population stability index of `current` against `reference` (see module docstring)."""
    if not 0 < eps < 1:
        raise ValueError(f"eps must be in (0, 1), got {eps!r}")
    ref, cur = np.asarray(reference), np.asarray(current)
    if ref.size == 0 or cur.size == 0:
        raise ValueError(f"PSI needs rows in both windows, got {ref.size} reference and {cur.size} current rows")
    if categorical:
        cats, codes = np.unique(np.concatenate([ref.astype(str), cur.astype(str)]), return_inverse=True)
        k = len(cats)
        return _psi(np.bincount(codes[: ref.size], minlength=k), np.bincount(codes[ref.size:], minlength=k), eps)
    edges = quantile_edges(ref, n_bins)
    k = len(edges) + 1
    ref_bins = np.searchsorted(edges, ref.astype(np.float64), side="right")
    cur_bins = np.searchsorted(edges, cur.astype(np.float64), side="right")
    return _psi(np.bincount(ref_bins, minlength=k), np.bincount(cur_bins, minlength=k), eps)


@dataclass(frozen=True, eq=False)
class DriftReport:
    """Per-window drift against the first window.

    Attributes:
        windows: one row per window (label index): start, end, rows.
        psi: window x feature PSI (the first row, the reference, is 0).
        reward_rates: window x reward mean.
        n_bins, eps: the PSI settings.
        warnings: features with a moderate or major shift, and where.
    """

    windows: pd.DataFrame
    psi: pd.DataFrame
    reward_rates: pd.DataFrame
    n_bins: int
    eps: float
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "windows": self.windows.reset_index().astype({"start": str, "end": str}).to_dict(orient="records"),
            "psi": self.psi.to_dict(orient="index"),
            "reward_rates": self.reward_rates.to_dict(orient="index"),
            "n_bins": self.n_bins,
            "eps": self.eps,
            "warnings": list(self.warnings),
        }

    def to_text(self) -> str:
        lines = [f"drift against window {self.windows.index[0]} (PSI: <{MODERATE} stable, "
                 f"{MODERATE}-{MAJOR} moderate, >{MAJOR} major; {self.n_bins} quantile bins, eps {self.eps:g})",
                 "windows:", self.windows.to_string(), "PSI per feature:",
                 self.psi.to_string(float_format=lambda v: f"{v:.4f}"), "reward rate per window:",
                 self.reward_rates.to_string(float_format=lambda v: f"{v:.5g}")]
        lines += [f"warning: {w}" for w in self.warnings] or ["warnings: none"]
        return "\n".join(lines)


def drift_report(
    data: LoggedData,
    n_windows: int | None = None,
    freq: str | None = None,
    *,
    n_bins: int = 10,
    eps: float = DEFAULT_EPS,
    features: tuple[str, ...] | None = None,
) -> DriftReport:
    """PSI of every feature and the reward rates, per time window against the first window."""
    windows = time_windows(data, n_windows, freq)
    numeric = set(data.columns.numeric_features)
    names = tuple(features) if features is not None else data.feature_names
    unknown = [f for f in names if f not in data.feature_names]
    if unknown:
        raise ValueError(f"features {unknown} are not features of this log; it has {list(data.feature_names)}")
    labels = [w.label for w in windows]
    ref = windows[0].rows
    table = pd.DataFrame(0.0, index=pd.Index(labels, name="window"), columns=list(names))
    for f in names:
        col = data.frame[f].to_numpy()
        for w in windows[1:]:
            table.loc[w.label, f] = psi(col[ref], col[w.rows], categorical=f not in numeric, n_bins=n_bins, eps=eps)
    rates = pd.DataFrame(
        {r: [float(data.reward(r)[w.rows].mean()) for w in windows] for r in data.reward_names},
        index=pd.Index(labels, name="window"),
    )
    info = pd.DataFrame({"start": [w.start for w in windows], "end": [w.end for w in windows],
                         "rows": [len(w.rows) for w in windows]}, index=pd.Index(labels, name="window"))
    warnings = []
    for f in names:
        worst = table[f].idxmax()
        if table.loc[worst, f] > MODERATE:
            kind = "major" if table.loc[worst, f] > MAJOR else "moderate"
            warnings.append(f"feature '{f}': {kind} shift, PSI {table.loc[worst, f]:.3f} in window {worst}")
    return DriftReport(info, table, rates, n_bins, eps, tuple(warnings))
