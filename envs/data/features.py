"""Context encoding fitted on training rows: standardised numbers, one-hot categories.

Every categorical feature gets an explicit unknown bucket (the last column of
its one-hot block), so a category never seen in training is encoded, not
guessed, and `unknown="refuse"` turns it into an error instead. The encoder
serialises to plain JSON for the artifact manifest.
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

    def __post_init__(self) -> None:
        if self.unknown not in ("bucket", "refuse"):
            raise ValueError(f"ContextEncoder.unknown must be 'bucket' or 'refuse', got {self.unknown!r}")

    @classmethod
    def fit(
        cls,
        frame: pd.DataFrame,
        numeric: Sequence[str],
        categorical: Sequence[str],
        unknown: str = "bucket",
    ) -> ContextEncoder:
        """Learn means, stds and vocabularies from (training) rows."""
        num = frame[list(numeric)].to_numpy(dtype=np.float64) if numeric else np.zeros((len(frame), 0))
        means = num.mean(axis=0) if len(frame) else np.zeros(num.shape[1])
        stds = num.std(axis=0) if len(frame) else np.ones(num.shape[1])
        stds = np.where(stds > 1e-12, stds, 1.0)
        vocab = {c: tuple(sorted(map(str, frame[c].unique()))) for c in categorical}
        return cls(tuple(numeric), tuple(map(float, means)), tuple(map(float, stds)), tuple(categorical), vocab, unknown)

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
        return {
            "numeric": list(self.numeric),
            "means": list(self.means),
            "stds": list(self.stds),
            "categorical": list(self.categorical),
            "vocabularies": {c: list(v) for c, v in self.vocabularies.items()},
            "unknown": self.unknown,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ContextEncoder:
        return cls(
            tuple(d["numeric"]),
            tuple(d["means"]),
            tuple(d["stds"]),
            tuple(d["categorical"]),
            {c: tuple(v) for c, v in d["vocabularies"].items()},
            d.get("unknown", "bucket"),
        )
