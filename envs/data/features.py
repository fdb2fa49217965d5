"""Context encoding fitted on training rows: standardised numbers, one-hot categories.

Every categorical feature gets an explicit unknown bucket (the last column of
its one-hot block), so a category never seen in training is encoded, not
guessed, and `unknown="refuse"` turns it into an error instead. The encoder
serialises to plain JSON for the artifact manifest.

`ranges` keeps each numeric field's training range (min, max), so the serving
runtime can tell a request outside it (out of distribution). Encoders saved
before ranges existed load with none (no range check).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

UNKNOWN = "__unknown__"


@dataclass(frozen=True)
class ContextEncoder:
    """Numeric features -> (x - mean) / std; categorical -> one-hot over vocabulary + unknown."""

    numeric: tuple[str, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    categorical: tuple[str, ...]
    vocabularies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    unknown: str = "bucket"  # or "refuse"
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # numeric field -> training (min, max)

    def __post_init__(self) -> None:
        if self.unknown not in ("bucket", "refuse"):
            raise ValueError(f"ContextEncoder.unknown must be 'bucket' or 'refuse', got {self.unknown!r}")
        for name, bounds in self.ranges.items():
            if name not in self.numeric:
                raise ValueError(f"ContextEncoder.ranges.{name}: not a numeric field; numeric: {list(self.numeric)}")
            lo, hi = bounds
            if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
                raise ValueError(f"ContextEncoder.ranges.{name}: must be finite [min, max] with min <= max, "
                                 f"got {list(bounds)}")

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        numeric: Sequence[str],
        categorical: Sequence[str],
        unknown: str = "bucket",
    ) -> ContextEncoder:
        """Learn means, stds, ranges (finite min and max) and vocabularies from (training) rows."""
        num = frame[list(numeric)].to_numpy(dtype=np.float64) if numeric else np.zeros((len(frame), 0))
        means = num.mean(axis=0) if len(frame) else np.zeros(num.shape[1])
        stds = num.std(axis=0) if len(frame) else np.ones(num.shape[1])
        stds = np.where(stds > 1e-12, stds, 1.0)
        ranges = {}
        for j, name in enumerate(numeric):
            finite = num[np.isfinite(num[:, j]), j]
            if len(finite):
                ranges[name] = (float(finite.min()), float(finite.max()))
        vocab = {c: tuple(sorted(map(str, frame[c].unique()))) for c in categorical}
        return cls(tuple(numeric), tuple(map(float, means)), tuple(map(float, stds)), tuple(categorical), vocab, unknown,
                   ranges)

    @property
    def n_features(self) -> int:
        return len(self.numeric) + sum(len(self.vocabularies[c]) + 1 for c in self.categorical)

    @property
    def feature_names(self) -> list[str]:
        names = list(self.numeric)
        for c in self.categorical:
            names += [f"{c}={v}" for v in self.vocabularies[c]] + [f"{c}={UNKNOWN}"]
        return names

    @property
    def input_fields(self) -> list[str]:
        """The raw fields a request must carry."""
        return list(self.numeric) + list(self.categorical)

    def transform(self, frame: pd.DataFrame | Sequence[Mapping[str, Any]]) -> np.ndarray:
        """(n, n_features) float64 for raw rows (a DataFrame or a list of dicts)."""
        if not isinstance(frame, pd.DataFrame):
            frame = pd.DataFrame(list(frame))
        missing = [c for c in self.input_fields if c not in frame.columns]
        if missing:
            raise ValueError(f"context is missing field(s) {missing}; expected fields {self.input_fields}")
        n = len(frame)
        out = np.zeros((n, self.n_features))
        if self.numeric:
            num = pd.DataFrame({c: pd.to_numeric(frame[c], errors="coerce") for c in self.numeric}).to_numpy(dtype=np.float64)
            bad = ~np.isfinite(num)
            if bad.any():
                row, col = np.argwhere(bad)[0]
                raise ValueError(f"context field '{self.numeric[col]}' is not a finite number at row {row}: {frame[self.numeric[col]].iloc[row]!r}")
            out[:, : len(self.numeric)] = (num - np.asarray(self.means)) / np.asarray(self.stds)
        col = len(self.numeric)
        for c in self.categorical:
            vocab = self.vocabularies[c]
            codes = pd.Index(vocab).get_indexer(frame[c].astype(str))
            unseen = codes < 0
            if unseen.any():
                if self.unknown == "refuse":
                    row = int(np.flatnonzero(unseen)[0])
                    raise ValueError(f"context field '{c}' has unknown category {frame[c].iloc[row]!r} at row {row}; known: {list(vocab)[:10]}")
                codes = np.where(unseen, len(vocab), codes)
            out[np.arange(n), col + codes] = 1.0
            col += len(vocab) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "numeric": list(self.numeric),
            "means": list(self.means),
            "stds": list(self.stds),
            "categorical": list(self.categorical),
            "vocabularies": {c: list(v) for c, v in self.vocabularies.items()},
            "unknown": self.unknown,
        }
        if self.ranges:  # left out when empty, so an encoder without ranges serialises as it always did
            out["ranges"] = {f: [lo, hi] for f, (lo, hi) in self.ranges.items()}
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ContextEncoder:
        return cls(
            tuple(d["numeric"]),
            tuple(d["means"]),
            tuple(d["stds"]),
            tuple(d["categorical"]),
            {c: tuple(v) for c, v in d["vocabularies"].items()},
            d.get("unknown", "bucket"),
            _parse_ranges(d.get("ranges", {})),
        )


def _parse_ranges(raw: Any) -> dict[str, tuple[float, float]]:
    """`{"field": [min, max]}` from a saved encoder; ValueError naming `ranges.<field>` otherwise."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"ContextEncoder.ranges must be an object {{field: [min, max]}}, got {type(raw).__name__}")
    out = {}
    for name, bounds in raw.items():
        ok = isinstance(bounds, list | tuple) and len(bounds) == 2 and all(
            isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)
        if not ok:
            raise ValueError(f"ContextEncoder.ranges.{name}: must be [min, max] numbers, got {bounds!r}")
        out[str(name)] = (float(bounds[0]), float(bounds[1]))
    return out
