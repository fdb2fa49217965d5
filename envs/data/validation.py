"""Column-by-column validation of a log chunk. Never drops or repairs a row.

`resolve_features` fixes the feature columns once (from the first chunk), and
`validate_chunk` checks one chunk and returns it in canonical form:

    action (original id), action_index (int64), position (int64),
    propensity (float64, if logged), timestamp (UTC), user_id,
    unsubscribe (float64 0/1, if logged; under this name whatever the file calls it),
    reward columns (float64), feature columns.

Across chunks (`unsubscribe_observed`, `pushes_after_unsubscribe`), with user_id and timestamp: a
user's rows after (strictly later than) their first unsubscribe do not observe an unsubscribe (they
already had); if such rows still record pushes (action != the no-push action) it is a warning, not an
error (some shops keep sending).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pushrl.envs.common.errors import LoggedDataError, show
from pushrl.envs.data.catalogue import Catalogue
from pushrl.envs.data.schema import BINARY_REWARDS, NONNEGATIVE_REWARDS, LogSchema

CANONICAL = ("action", "action_index", "position", "propensity", "timestamp", "user_id")
UNSUBSCRIBE = "unsubscribe"
"""The canonical column of the unsubscribe outcome (present only when the log has one)."""
UNSUBSCRIBE_OBSERVED = "unsubscribe_observed"
"""The canonical bool column `LoggedData` adds next to it: the row's unsubscribe is observed (`unsubscribe_observed`)."""


@dataclass(frozen=True)
class ResolvedColumns:
    """The columns a log actually has, roles fixed."""

    rewards: tuple[str, ...]
    numeric_features: tuple[str, ...]
    categorical_features: tuple[str, ...]
    has_propensity: bool
    has_timestamp: bool
    has_user_id: bool
    has_position: bool
    has_unsubscribe: bool = False
    unsubscribe_column: str = UNSUBSCRIBE
    """The file's name of the unsubscribe column (canonical frames call it `UNSUBSCRIBE`)."""


MAX_COLUMNS_SHOWN = 40


def _column_list(cols: list[str]) -> str:
    shown = cols[:MAX_COLUMNS_SHOWN]
    more = f" ... ({len(cols) - len(shown)} more)" if len(cols) > len(shown) else ""
    return f"{shown}{more}"


def _refuse_unknown_names(cols: list[str], schema: LogSchema, source: str) -> None:
    """Every name in `features` / `exclude` / the declared feature types must be a column of the file."""
    present = set(cols)
    listed = (("data.features names a column that is not in the file", schema.features or ()),
              ("data.exclude names a column that is not in the file", schema.exclude),
              ("declared feature column is missing from the file", schema.numeric_features or ()),
              ("declared feature column is missing from the file", schema.categorical_features or ()))
    for problem, names in listed:
        for col in names:
            if col not in present:
                raise LoggedDataError(f"{problem} (columns: {_column_list(cols)})", column=col,
                                      expected="a column of the file, spelled as in its header", source=source)


def _is_numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


NUMERIC_LOOKING_SHARE = 0.95
"""A text column is numeric-looking when at least this share of its non-missing values parse as numbers."""


def numeric_looking_rows(series: pd.Series, share: float = NUMERIC_LOOKING_SHARE) -> np.ndarray | None:
    """The rows (positions) whose values are not numbers, when `series` is numeric-looking; else None.

    Numeric-looking, precisely: the column is text (object or string dtype, so pandas did not read it
    as numbers), it has at least one non-missing value, at least `share` (95%) of its non-missing
    values parse as numbers (`pd.to_numeric` of the value written as text: "12", "-0.5", "1e3", " 7 "
    do; "unknown", "n/a", "12abc", True do not), and at least one does not. Missing values (empty
    cells, NaN, None) are left out of both counts. E.g. an integer column with two "unknown" cells
    among 100 is numeric-looking; a column of store codes "s1", "s2" is not.
    """
    if not (pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)):
        return None
    present = series.dropna()
    if len(present) == 0:
        return None
    text = present.astype(str) if pd.api.types.is_object_dtype(present) else present
    counts = text.value_counts(sort=False)
    parsed = pd.to_numeric(pd.Series(counts.index.to_numpy(dtype=object), dtype=object), errors="coerce")
    not_number = parsed.isna().to_numpy()
    n_bad = int(counts.to_numpy()[not_number].sum())
    if n_bad == 0 or n_bad > (1.0 - share) * len(present):
        return None
    bad_values = counts.index[not_number]
    every = series.astype(str) if pd.api.types.is_object_dtype(series) else series
    return np.flatnonzero(series.notna().to_numpy() & every.isin(bad_values).to_numpy(dtype=bool))


def _refuse_numeric_looking(frame: pd.DataFrame, columns: tuple[str, ...], source: str) -> None:
    """A feature whose type is inferred must not be numbers with a few stray words (it would silently become
    categorical): refuse it, naming the rows, and say how to fix it."""
    for c in columns:
        rows = numeric_looking_rows(frame[c])
        if rows is None:
            continue
        values = sorted({str(v) for v in frame[c].iloc[rows]})
        shown = ", ".join(repr(v) for v in values[:5]) + (", ..." if len(values) > 5 else "")
        n_present = int(frame[c].notna().sum())
        raise LoggedDataError(
            f"numeric-looking column: {n_present - len(rows)} of {n_present} values are numbers, {len(rows)} are "
            f"not ({shown}); it would silently become categorical",
            column=c, rows=rows, source=source,
            expected=f"numbers only: clean those rows (write a number there, e.g. -1 plus a 0/1 '{c}_missing' "
                     f"column, or drop them), or declare the column categorical (data.categorical: [{c}], "
                     f"LogSchema(categorical_features=({c!r},)))")


def resolve_features(frame: pd.DataFrame, schema: LogSchema, source: str) -> ResolvedColumns:
    """Check required columns exist and decide the feature columns."""
    cols = list(frame.columns)
    twice = list(dict.fromkeys(c for c in cols if cols.count(c) > 1)) if len(set(cols)) < len(cols) else []
    if twice:
        raise LoggedDataError(
            f"duplicate column name(s) {twice[:MAX_COLUMNS_SHOWN]} (columns: {_column_list(cols)})", column=twice[0],
            expected="each column name once: rename or drop the repeated column", source=source)
    required = [schema.action, *schema.rewards]
    for col in required:
        if col not in cols:
            raise LoggedDataError(
                f"missing required column (columns present: {_column_list(cols)})",
                column=col,
                expected=f"the columns {required}",
                source=source,
            )
    _refuse_unknown_names(cols, schema, source)
    rewards = tuple(schema.rewards) + tuple(r for r in schema.used_optional_rewards if r in cols)
    declared_num = schema.numeric_features
    declared_cat = schema.categorical_features
    if schema.features is not None:
        chosen = list(schema.features)
    elif declared_num is None:  # every column without a role; declared categorical ones are forced categorical
        taken = set(schema.role_columns)
        chosen = [c for c in cols if c not in taken]
    else:
        chosen = [*(declared_num or ()), *(declared_cat or ())]
    inferred = tuple(c for c in chosen if c not in (declared_num or ()) and c not in (declared_cat or ()))
    _refuse_numeric_looking(frame, inferred, source)  # numbers with a few stray words: refused, not made categories
    num = tuple(c for c in chosen if c in (declared_num or ()) or (c not in (declared_cat or ()) and _is_numeric(frame[c])))
    cat = tuple(c for c in chosen if c not in num)
    clash = [c for c in (*num, *cat) if c in CANONICAL]
    if clash:
        raise LoggedDataError(
            "a feature column uses a reserved name", column=clash[0], expected=f"none of {CANONICAL}", source=source
        )
    present = set(cols)
    has_unsubscribe = schema.used(schema.unsubscribe) in present
    if has_unsubscribe:  # its canonical name must not be taken by a reward or a feature
        taken = [c for c in (*rewards, *num, *cat) if c in (UNSUBSCRIBE, UNSUBSCRIBE_OBSERVED)]
        if taken:
            raise LoggedDataError(
                f"column '{taken[0]}' is a reward or feature while data.unsubscribe={schema.unsubscribe!r} is the "
                f"unsubscribe outcome (canonical columns {UNSUBSCRIBE}, {UNSUBSCRIBE_OBSERVED})", column=taken[0],
                expected="no reward or feature of that name: rename or exclude it", source=source)
    return ResolvedColumns(
        rewards=rewards,
        numeric_features=num,
        categorical_features=cat,
        has_propensity=schema.used(schema.propensity) in present,
        has_timestamp=schema.used(schema.timestamp) in present,
        has_user_id=schema.used(schema.user_id) in present,
        has_position=schema.used(schema.position) in present,
        has_unsubscribe=has_unsubscribe,
        unsubscribe_column=str(schema.unsubscribe) if has_unsubscribe else UNSUBSCRIBE,
    )


def _numeric(series: pd.Series, column: str, source: str, offset: int, what: str) -> np.ndarray:
    """A column as float64; refuses non-numbers and missing values, naming the rows."""
    if pd.api.types.is_bool_dtype(series):
        series = series.astype(np.float64)
    if not pd.api.types.is_numeric_dtype(series):
        coerced = pd.to_numeric(series, errors="coerce")
        bad = coerced.isna().to_numpy() & series.notna().to_numpy()
        if bad.any():
            sample = series[bad].iloc[0]
            raise LoggedDataError(
                f"wrong dtype: non-numeric value {show(sample)} (column dtype {series.dtype})",
                column=column,
                rows=offset + np.flatnonzero(bad),
                expected=what,
                source=source,
            )
        series = coerced
    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        raise LoggedDataError(
            "NaN, missing or infinite values",
            column=column,
            rows=offset + np.flatnonzero(bad),
            expected=what,
            source=source,
        )
    return values


def _check(bad: np.ndarray, problem: str, column: str, expected: str, source: str, offset: int) -> None:
    if bad.any():
        raise LoggedDataError(problem, column=column, rows=offset + np.flatnonzero(bad), expected=expected, source=source)


def validate_chunk(
    frame: pd.DataFrame,
    schema: LogSchema,
    resolved: ResolvedColumns,
    catalogue: Catalogue,
    source: str,
    offset: int = 0,
) -> pd.DataFrame:
    """Validate one chunk (rows `offset`.. of the file) and return it canonical."""
    cols = set(frame.columns)
    needed = {schema.action, *resolved.rewards, *resolved.numeric_features, *resolved.categorical_features}
    for flag, name in (
        (resolved.has_propensity, schema.propensity),
        (resolved.has_timestamp, schema.timestamp),
        (resolved.has_user_id, schema.user_id),
        (resolved.has_position, schema.position),
        (resolved.has_unsubscribe, schema.unsubscribe),
    ):
        if flag:
            needed.add(name)
    missing = sorted(needed - cols)
    if missing:
        raise LoggedDataError("missing column in this chunk", column=missing[0], expected="the same columns throughout", source=source)

    out: dict[str, object] = {}
    # action
    action = frame[schema.action]
    _check(action.isna().to_numpy(), "missing promotion id", schema.action, "a promotion id in every row", source, offset)
    index = catalogue.index_of(action.to_numpy())
    unknown = index < 0
    if unknown.any():
        ids = sorted({str(v) for v in action.to_numpy()[unknown]})[:5]
        raise LoggedDataError(
            f"promotion ids not in the catalogue: {ids}",
            column=schema.action,
            rows=offset + np.flatnonzero(unknown),
            expected=f"one of the {catalogue.n_actions} catalogue ids (e.g. {list(map(str, catalogue.ids[:5]))})",
            source=source,
        )
    out["action"] = action.to_numpy()
    out["action_index"] = index.astype(np.int64)

    # position
    if resolved.has_position:
        pos = _numeric(frame[schema.position], schema.position, source, offset, "integer positions >= 0")
        _check((pos < 0) | (pos != np.round(pos)), "position is negative or not an integer", schema.position,
               "integer positions >= 0 (0-based slot)", source, offset)
        out["position"] = pos.astype(np.int64)
    else:
        out["position"] = np.zeros(len(frame), dtype=np.int64)

    # propensity
    if resolved.has_propensity:
        p = _numeric(frame[schema.propensity], schema.propensity, source, offset, "a probability in (0, 1]")
        _check((p <= 0) | (p > 1), "propensity outside (0, 1]", schema.propensity,
               "0 < propensity <= 1 (the logging policy's probability of the logged action)", source, offset)
        out["propensity"] = p

    # timestamp
    if resolved.has_timestamp:
        raw = frame[schema.timestamp]
        _check(raw.isna().to_numpy(), "missing timestamp", schema.timestamp, "a timestamp in every row", source, offset)
        if pd.api.types.is_datetime64_any_dtype(raw):
            ts = pd.to_datetime(raw, utc=True)
        else:
            ts = pd.to_datetime(raw.astype(str), utc=True, errors="coerce", format="ISO8601")
            bad = ts.isna().to_numpy()
            if bad.any():
                sample = raw[bad].iloc[0]
                raise LoggedDataError(
                    f"timestamps that do not parse (e.g. {show(sample)})",
                    column=schema.timestamp,
                    rows=offset + np.flatnonzero(bad),
                    expected="ISO 8601 date-times such as '2019-11-24 00:00:34+00:00'",
                    source=source,
                )
        out["timestamp"] = ts.array

    if resolved.has_user_id:
        uid = frame[schema.user_id]
        _check(uid.isna().to_numpy(), "missing user id", schema.user_id, "a user id in every row", source, offset)
        out["user_id"] = uid.to_numpy()

    if resolved.has_unsubscribe:  # an outcome, not a reward: 0/1, no gaps
        col = str(schema.unsubscribe)
        values = _numeric(frame[col], col, source, offset, "0 or 1 (1: the user unsubscribed)")
        _check((values != 0) & (values != 1), "value other than 0 or 1", col, "0 or 1 (1: the user unsubscribed)",
               source, offset)
        out[UNSUBSCRIBE] = values

    # rewards
    for r in resolved.rewards:
        values = _numeric(frame[r], r, source, offset, "a finite number")
        if r in BINARY_REWARDS:
            _check((values != 0) & (values != 1), "value other than 0 or 1", r, "0 or 1", source, offset)
        if r in NONNEGATIVE_REWARDS:
            _check(values < 0, "negative value", r, "a value >= 0", source, offset)
        out[r] = values
    # money needs a purchase: revenue/spend > 0 only where conversion is 1
    if "conversion" in out:
        for r in NONNEGATIVE_REWARDS:
            if r in out:
                _check((out[r] > 0) & (out["conversion"] == 0), f"{r} > 0 where conversion is 0", r,
                       f"{r} = 0 unless conversion = 1", source, offset)

    # features
    for c in resolved.numeric_features:
        out[c] = _numeric(frame[c], c, source, offset,
                          f"a finite number; nothing is filled in silently: fill the gaps in the file (e.g. -1 and a 0/1 "
                          f"'{c}_missing' column), declare it categorical with data.categorical=[{c}], or drop "
                          f"the column with data.exclude=[{c}]")
    for c in resolved.categorical_features:
        values = frame[c]
        _check(values.isna().to_numpy(), "missing category", c,
               f"a category in every row; fill the gaps in the file (e.g. 'unknown') or drop the column with "
               f"data.exclude=[{c}]", source, offset)
        out[c] = values.astype(str).to_numpy(dtype=object)

    result = pd.DataFrame(out)
    result.index = pd.RangeIndex(offset, offset + len(frame))
    return result


def unsubscribe_observed(frame: pd.DataFrame) -> np.ndarray:
    """(n,) bool: rows whose unsubscribe outcome is observed, i.e. the user had not unsubscribed before.

    With user_id and timestamp in the canonical frame: False on a user's rows strictly later than the
    user's first unsubscribe (timestamp order, not row order); otherwise (or without the columns) True."""
    n = len(frame)
    if UNSUBSCRIBE not in frame or "user_id" not in frame or "timestamp" not in frame or n == 0:
        return np.ones(n, dtype=bool)
    unsub = frame[UNSUBSCRIBE].to_numpy() == 1
    if not unsub.any():
        return np.ones(n, dtype=bool)
    first = frame.loc[unsub].groupby("user_id", sort=False)["timestamp"].min()
    when = frame["user_id"].map(first)
    return ~(when.notna().to_numpy() & (frame["timestamp"] > when).to_numpy())


def pushes_after_unsubscribe(frame: pd.DataFrame, no_push_index: int | None = None, column: str = UNSUBSCRIBE,
                             max_rows: int = 5) -> str | None:
    """A warning naming how many users still got pushes after their first unsubscribe (rows whose action
    is not the no-push action, strictly later than it) and the first such rows; None if there are none."""
    after = ~(frame[UNSUBSCRIBE_OBSERVED].to_numpy(dtype=bool) if UNSUBSCRIBE_OBSERVED in frame
              else unsubscribe_observed(frame))
    if no_push_index is not None:
        after &= frame["action_index"].to_numpy() != no_push_index
    if not after.any():
        return None
    rows = frame.index.to_numpy()[after]
    users = frame["user_id"].to_numpy()[after]
    n_users = len(pd.unique(users))
    shown = ", ".join(str(int(r)) for r in rows[:max_rows]) + (", ..." if len(rows) > max_rows else "")
    return (f"column '{column}': {n_users} user(s) still got pushes after unsubscribing ({len(rows)} row(s), "
            f"first rows {shown}); their later rows are left out of the unsubscribe model (the outcome is not "
            "observed once a user has unsubscribed). Fine if the shop keeps sending; otherwise check user_id/timestamp")
