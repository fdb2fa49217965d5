"""The promotion catalogue: action id -> promotion features."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pushrl.envs.common.errors import LoggedDataError


@dataclass(frozen=True, eq=False)
class Catalogue:
    """Promotions in index order.

    Attributes:
        features: one row per promotion, indexed by the promotion id (unique),
            columns are promotion features (numeric or categorical; may be none).
    """

    features: pd.DataFrame

    def __post_init__(self) -> None:
        idx = self.features.index
        if len(idx) == 0:
            raise LoggedDataError("the catalogue has no promotions", expected="at least one row")
        dup = idx.duplicated(keep=False)
        if dup.any():
            rows = np.flatnonzero(dup)
            raise LoggedDataError(
                f"duplicate promotion ids {sorted(map(str, set(idx[dup])))[:5]}",
                column=str(idx.name or "action"),
                rows=rows,
                expected="each promotion id exactly once",
            )
        for col in self.features.columns:
            values = self.features[col]
            if values.isna().any():
                raise LoggedDataError(
                    "missing promotion feature values",
                    column=str(col),
                    rows=np.flatnonzero(values.isna().to_numpy()),
                    expected="a value for every promotion",
                )

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, id_column: str = "action", source: str | None = None) -> Catalogue:
        """Build from a table with an id column and feature columns."""
        if id_column not in frame.columns:
            raise LoggedDataError(
                f"missing required column (columns present: {list(frame.columns)[:10]})",
                column=id_column,
                expected="a promotion id column",
                source=source,
            )
        if frame[id_column].isna().any():
            raise LoggedDataError(
                "missing promotion ids",
                column=id_column,
                rows=np.flatnonzero(frame[id_column].isna().to_numpy()),
                expected="an id in every row",
                source=source,
            )
        return cls(frame.set_index(id_column))

    @classmethod
    def from_ids(cls, ids: list | np.ndarray | pd.Index) -> Catalogue:
        """A catalogue with ids only (no promotion features)."""
        return cls(pd.DataFrame(index=pd.Index(list(ids), name="action")))

    @property
    def ids(self) -> np.ndarray:
        return self.features.index.to_numpy()

    @property
    def n_actions(self) -> int:
        return len(self.features.index)

    @property
    def numeric_features(self) -> tuple[str, ...]:
        return tuple(c for c in self.features.columns if pd.api.types.is_numeric_dtype(self.features[c]))

    @property
    def categorical_features(self) -> tuple[str, ...]:
        return tuple(c for c in self.features.columns if c not in self.numeric_features)

    def index_of(self, ids: pd.Series | np.ndarray | list) -> np.ndarray:
        """Action index of each id; -1 where the id is not in the catalogue."""
        return self.features.index.get_indexer(pd.Index(ids))


def coarsest_category(catalogue: Catalogue) -> np.ndarray:
    """(A,) category code per promotion, for novelty and coverage: the categorical feature with the fewest
    levels above one (e.g. a product family); one category for every promotion if there is none."""
    feats = catalogue.features
    best = None
    for col in catalogue.categorical_features:
        levels = feats[col].nunique()
        if levels > 1 and (best is None or levels < feats[best].nunique()):
            best = col
    if best is None:
        return np.zeros(len(feats), dtype=np.int64)
    return pd.factorize(feats[best].astype(str))[0].astype(np.int64)
