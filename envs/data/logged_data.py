"""LoggedData: one validated row per push decision plus the promotion catalogue.

Arrays handed to the rest of pushrl (batch first, n = n_rounds):
    action (n,) int64 index into the catalogue, position (n,) int64 0-based,
    pscore (n,) float64 logging propensity (None if not logged),
    reward(name) (n,) float64, timestamp (n,) datetime64[ns, UTC] or None,
    unsubscribe (n,) float64 0/1 or None (an outcome, never among `reward_names`),
    unsubscribe_observed (n,) bool (False on a user's rows after their first unsubscribe).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from pushrl.envs.common.errors import LoggedDataError
from pushrl.envs.data.catalogue import Catalogue
from pushrl.envs.data.leakage import suspicious_columns
from pushrl.envs.data.schema import LogSchema
from pushrl.envs.data.validation import (
    UNSUBSCRIBE,
    UNSUBSCRIBE_OBSERVED,
    ResolvedColumns,
    pushes_after_unsubscribe,
    resolve_features,
    unsubscribe_observed,
    validate_chunk,
)


@dataclass(frozen=True, eq=False)
class LoggedData:
    """A validated log. Build it with `from_frame` or the loaders, never by hand.

    Attributes:
        frame: canonical columns (see `pushrl.envs.data.validation`), one row per decision.
        catalogue: the promotions; `action_index` points into it.
        columns: which rewards / features the log has.
        n_positions: number of display slots (1 for single-slot pushes).
        name: a short label (file name or dataset name) used in reports.
        notes: facts a user must be told (e.g. how the log was split).
        warnings: context features that look like a role (a probability, an outcome, an id, a timestamp),
            by name, each saying how to declare or drop it (`pushrl.envs.data.leakage.suspicious_columns`);
            and users still pushed after unsubscribing (`pushrl.envs.data.validation.pushes_after_unsubscribe`).
    """

    frame: pd.DataFrame
    catalogue: Catalogue
    columns: ResolvedColumns
    n_positions: int
    name: str = "log"
    notes: tuple[str, ...] = field(default_factory=tuple)
    warnings: tuple[str, ...] = field(default_factory=tuple)

    # construction -----------------------------------------------------------------
    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        schema: LogSchema | None = None,
        catalogue: Catalogue | None = None,
        n_positions: int | None = None,
        name: str = "log",
        source: str = "<frame>",
    ) -> LoggedData:
        """Validate a raw table and return LoggedData (raises LoggedDataError)."""
        schema = schema or LogSchema()
        if len(frame) == 0:
            raise LoggedDataError("the log has no rows", expected="at least one push decision", source=source)
        resolved = resolve_features(frame, schema, source)
        if catalogue is None:
            catalogue = catalogue_from_log(frame, schema, source)
        canonical = validate_chunk(frame.reset_index(drop=True), schema, resolved, catalogue, source)
        return cls.from_canonical(canonical, catalogue, resolved, n_positions, name, source, schema.no_push_action)

    @classmethod
    def from_canonical(
        cls,
        canonical: pd.DataFrame,
        catalogue: Catalogue,
        resolved: ResolvedColumns,
        n_positions: int | None,
        name: str,
        source: str,
        no_push_action: object | None = None,
    ) -> LoggedData:
        """Wrap already-validated canonical rows; checks the position range, notes look-alike features and users
        pushed after unsubscribing (`no_push_action`: the id whose rows are not pushes; None: every row is one)."""
        seen = int(canonical["position"].max()) + 1 if len(canonical) else 1
        if n_positions is None:
            n_positions = seen
        elif seen > n_positions:
            rows = np.flatnonzero(canonical["position"].to_numpy() >= n_positions)
            raise LoggedDataError(
                "position beyond the number of slots",
                column="position",
                rows=rows,
                expected=f"0 <= position < {n_positions}",
                source=source,
            )
        canonical = canonical.reset_index(drop=True)
        warnings = tuple(suspicious_columns(canonical, resolved))
        if resolved.has_unsubscribe:
            canonical[UNSUBSCRIBE_OBSERVED] = unsubscribe_observed(canonical)  # kept through splits and subsets
            late = pushes_after_unsubscribe(canonical, _action_index(catalogue, no_push_action),
                                            resolved.unsubscribe_column)
            warnings += (late,) if late else ()
        return cls(canonical, catalogue, resolved, int(n_positions), name, warnings=warnings)

    # arrays -------------------------------------------------------------------------
    @property
    def n_rounds(self) -> int:
        return len(self.frame)

    @property
    def n_actions(self) -> int:
        return self.catalogue.n_actions

    @property
    def action_ids(self) -> np.ndarray:
        return self.catalogue.ids

    @property
    def action(self) -> np.ndarray:
        return self.frame["action_index"].to_numpy(dtype=np.int64)

    @property
    def position(self) -> np.ndarray:
        return self.frame["position"].to_numpy(dtype=np.int64)

    @property
    def pscore(self) -> np.ndarray | None:
        if not self.columns.has_propensity:
            return None
        return self.frame["propensity"].to_numpy(dtype=np.float64)

    @property
    def timestamp(self) -> pd.Series | None:
        return self.frame["timestamp"] if self.columns.has_timestamp else None

    @property
    def user_id(self) -> np.ndarray | None:
        return self.frame["user_id"].to_numpy() if self.columns.has_user_id else None

    @property
    def has_unsubscribe(self) -> bool:
        """Whether the log has an unsubscribe column (`LogSchema.unsubscribe`)."""
        return self.columns.has_unsubscribe

    @property
    def unsubscribe(self) -> np.ndarray | None:
        """(n,) float64 0/1 unsubscribe outcome, or None without the column."""
        return self.frame[UNSUBSCRIBE].to_numpy(dtype=np.float64) if self.columns.has_unsubscribe else None

    @property
    def unsubscribe_observed(self) -> np.ndarray:
        """(n,) bool: rows whose unsubscribe is observed (the user had not unsubscribed at an earlier time in the
        whole log this one was split from); all True without an unsubscribe column."""
        if UNSUBSCRIBE_OBSERVED in self.frame:
            return self.frame[UNSUBSCRIBE_OBSERVED].to_numpy(dtype=bool)
        return unsubscribe_observed(self.frame)

    @property
    def reward_names(self) -> tuple[str, ...]:
        return self.columns.rewards

    def reward(self, name: str | None = None) -> np.ndarray:
        """The named reward (default: the primary one) as float64."""
        name = name or self.columns.rewards[0]
        if name not in self.columns.rewards:
            raise KeyError(f"reward {name!r} is not in this log; it has {list(self.columns.rewards)}")
        return self.frame[name].to_numpy(dtype=np.float64)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.columns.numeric_features + self.columns.categorical_features

    def features(self) -> pd.DataFrame:
        """The raw context features (numeric then categorical), one row per decision."""
        return self.frame[list(self.feature_names)]

    # derived ------------------------------------------------------------------------
    def subset(self, rows: np.ndarray, name: str | None = None) -> LoggedData:
        """The given rows (in the given order) as a new LoggedData."""
        part = self.frame.iloc[np.asarray(rows)].reset_index(drop=True)
        return replace(self, frame=part, name=name or self.name)

    def with_notes(self, *notes: str) -> LoggedData:
        return replace(self, notes=self.notes + tuple(notes))

    def fingerprint(self) -> str:
        """SHA-256 over the canonical rows and the catalogue: identifies the training data."""
        h = hashlib.sha256()
        h.update(pd.util.hash_pandas_object(self.frame, index=False).to_numpy().tobytes())
        h.update(pd.util.hash_pandas_object(self.catalogue.features.reset_index(), index=False).to_numpy().tobytes())
        return h.hexdigest()


def _action_index(catalogue: Catalogue, action_id: object | None) -> int | None:
    """Catalogue index of an action id (matched as given, else by its text: a config's "0" is the id 0); None if absent."""
    if action_id is None:
        return None
    found = int(catalogue.index_of(np.array([action_id], dtype=object))[0])
    if found >= 0:
        return found
    text = [str(i) for i in catalogue.ids.tolist()]
    return text.index(str(action_id)) if str(action_id) in text else None


def catalogue_from_log(frame: pd.DataFrame, schema: LogSchema, source: str) -> Catalogue:
    """A feature-less catalogue of the ids seen in the log, sorted."""
    if schema.action not in frame.columns:
        raise LoggedDataError("missing required column", column=schema.action, expected="a promotion id column", source=source)
    ids = frame[schema.action].dropna().unique()
    try:
        ids = np.sort(ids)
    except TypeError:
        ids = np.array(sorted(ids, key=str), dtype=object)
    return Catalogue.from_ids(ids)
