"""Each user's push history strictly before each row, derived from the log (no leakage).

For row i of user u at time t_i (in days), over u's rows j with t_j < t_i STRICTLY (rows of one user at one
timestamp never see each other, nor do later rows), with push_j = [action_j is not the no-push action]:

    history_pushes_{w}d        = Σ_j push_j [t_j >= t_i - w]                          w = 1, 3, 7
    recent_pushes              = the same with w = `window` (the simulator's fatigue window, default 3)
    history_days_since_push    = min(cap, t_i - max{t_j : push_j}); cap (365) when u had no push before
    history_response_rate      = Σ_j push_j y_j 2^(-(t_i - t_j)/h) / Σ_j push_j 2^(-(t_i - t_j)/h)
                                 (y a binary reward, h the half-life in days; 0 before any push)
    history_category_pushes_7d = Σ_j push_j [cat(a_j) = cat(a_i)] [t_j >= t_i - 7]     (given categories)

`recent_pushes` is what the response model reads as its fatigue input (ResponseModelConfig.recent_pushes_column)
and what `pushrl.envs.data.synthetic.recent_push_counts` computes for synthetic logs.

Streaming: `derive_history_chunks` takes chunks of a log in which no user spans two chunks (`user_chunks`
re-cuts any chunk stream of a log sorted by user), so memory is bounded by the chunk; each chunk is sorted by
(user, time) inside, so time may go backwards within a user in file order. `derive_history` does a whole
frame and returns the rows in their original order. Vectorised: searchsorted over (user, time) keys, prefix
sums, and a log-space cumulative sum per user for the decayed rate (no loop over rows).

The simulator steps only `recent_pushes` (and its own day counters) day by day; the other columns are
descriptive and are not added to the log's context features by the run (a policy served on them would need
a history store the simulator does not have). `history_at` gives the same features for one user at decision
time from that user's past events (what a serving-side history store would compute).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pushrl.envs.common.errors import LoggedDataError
from pushrl.envs.data.logged_data import LoggedData

DAY_NS = 86_400_000_000_000
COUNT_WINDOWS = (1, 3, 7)
CATEGORY_WINDOW = 7
RECENT = "recent_pushes"
DAYS_SINCE = "history_days_since_push"
RATE = "history_response_rate"
CATEGORY = "history_category_pushes_7d"


def count_column(w: int) -> str:
    return f"history_pushes_{w}d"


@dataclass(frozen=True)
class HistoryConfig:
    """Which columns hold what, and the parameters of the features in the module docstring.

    no_push_action: the action value that sends nothing (None: every row is a push).
    reward: the binary reward of the response rate (None: no `history_response_rate`).
    categories: category per action, a mapping {action: category} or an array indexed by an integer action
        (None: no `history_category_pushes_7d`).
    """

    user_id: str = "user_id"
    timestamp: str = "timestamp"
    action: str = "action"
    no_push_action: object | None = None
    reward: str | None = None
    half_life_days: float = 7.0
    window: float = 3.0
    days_since_cap: float = 365.0
    categories: Mapping | Sequence | np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("half_life_days", "window", "days_since_cap"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value > 0):
                raise ValueError(f"HistoryConfig.{name} must be a number > 0, got {value!r}")

    @property
    def columns(self) -> tuple[str, ...]:
        """The output columns, in order."""
        cols = [RECENT, *(count_column(w) for w in COUNT_WINDOWS), DAYS_SINCE]
        cols += [RATE] if self.reward is not None else []
        cols += [CATEGORY] if self.categories is not None else []
        return tuple(cols)


# time ---------------------------------------------------------------------------------------------
def _time_values(series: pd.Series | np.ndarray) -> tuple[np.ndarray, float]:
    """(times, units per day): datetimes as int64 ns since the epoch (UTC if tz-aware), numbers as float days."""
    s = pd.Series(series) if not isinstance(series, pd.Series) else series
    if pd.api.types.is_datetime64_any_dtype(s):
        return pd.DatetimeIndex(s).as_unit("ns").asi8.copy(), float(DAY_NS)
    return s.to_numpy(dtype=np.float64), 1.0


def _time_scalar(now: object, datetime_like: bool) -> float | int:
    if datetime_like:
        return int(pd.Timestamp(now).as_unit("ns").value)
    return float(now)  # type: ignore[arg-type]


def _span(days: float, per_day: float) -> float | int:
    """A window of `days` in the time unit (exact integer ns for datetimes)."""
    return int(round(days * per_day)) if per_day == DAY_NS else float(days)


# sorted-array kernels (rows sorted by (group, time)) ----------------------------------------------------
def _window_counts(g: np.ndarray, t: np.ndarray, is_push: np.ndarray, spans: Sequence[float | int]
                   ) -> tuple[list[np.ndarray], np.ndarray]:
    """For each span w: pushes of the same group with t - w <= t_j < t (rows sorted by (g, t)); and each row's
    `tie`, the first row of its (group, time) block (rows before it are strictly earlier).

    Exact int64 keys g * U + rank(t) (rank among the distinct times); each lower bound is a searchsorted of the
    (nondecreasing) query keys g * U + rank(first time >= t - w)."""
    n = len(g)
    idx = np.arange(n)
    new = np.r_[True, (g[1:] != g[:-1]) | (t[1:] != t[:-1])] if n else np.zeros(0, bool)
    tie = np.maximum.accumulate(np.where(new, idx, 0)) if n else idx
    by_t = np.argsort(t, kind="stable")
    ts = t[by_t]
    distinct = np.r_[True, ts[1:] != ts[:-1]] if n else np.zeros(0, bool)
    uniq = ts[distinct]
    u = np.int64(len(uniq) + 1)
    rank = np.empty(n, np.int64)
    rank[by_t] = np.cumsum(distinct) - 1
    base = g.astype(np.int64) * u
    key = base + rank
    prefix = np.concatenate([[0], np.cumsum(is_push, dtype=np.int64)])
    out = []
    lo_rank = np.empty(n, np.int64)
    for w in spans:
        lo_rank[by_t] = np.searchsorted(uniq, ts - w, side="left")  # needles in time order: cache friendly
        lo = np.searchsorted(key, base + lo_rank, side="left")
        out.append((prefix[tie] - prefix[lo]).astype(np.float64))
    return out, tie


def _segments(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, length) of each run of equal g."""
    n = len(g)
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if n else np.zeros(0, dtype=np.int64)
    return starts, np.diff(np.r_[starts, n])


def _segmented_logcumsum(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Inclusive log Σ exp(values) within each segment: segments bucketed by length (padded to the next power of
    two, so memory <= 2x) and accumulated along the rows of a (segments, width) matrix, with no cross-segment sums."""
    out = np.empty_like(values)
    bucket = np.ceil(np.log2(np.maximum(lengths, 1))).astype(np.int64)
    for b in np.unique(bucket):
        sel = np.flatnonzero(bucket == b)
        cols = np.arange(1 << int(b))
        idx = starts[sel, None] + cols
        mask = cols < lengths[sel, None]
        mat = np.full(idx.shape, -np.inf)
        mat[mask] = values[idx[mask]]
        np.logaddexp.accumulate(mat, axis=1, out=mat)
        out[idx[mask]] = mat[mask]
    return out


def _derive_sorted(g, t, is_push, y, cat, cfg: HistoryConfig, per_day: float) -> dict[str, np.ndarray]:
    """Every feature for rows sorted by (user code g, time t)."""
    n = len(g)
    spans = [_span(cfg.window, per_day)] + [_span(w, per_day) for w in COUNT_WINDOWS]
    counts, tie = _window_counts(g, t, is_push, spans)
    out = {RECENT: counts[0], **{count_column(w): c for w, c in zip(COUNT_WINDOWS, counts[1:], strict=True)}}
    starts, lengths = _segments(g)
    first = np.repeat(starts, lengths)  # each row's group start
    idx = np.arange(n)
    last_push = np.concatenate([[-1], np.maximum.accumulate(np.where(is_push, idx, -1))]) if n else np.zeros(1, int)
    j = last_push[tie]  # last push among rows before the row's tie block
    has = j >= first
    gap = (t - t[np.maximum(j, 0)]).astype(np.float64) / per_day
    out[DAYS_SINCE] = np.where(has, np.minimum(gap, cfg.days_since_cap), cfg.days_since_cap)
    if y is not None:
        # log-weights relative to the user's first row: the ratio is invariant to that reference
        lw = (t - t[first]).astype(np.float64) / per_day * (np.log(2.0) / cfg.half_life_days)
        log_den = _segmented_logcumsum(np.where(is_push, lw, -np.inf), starts, lengths)
        log_num = _segmented_logcumsum(np.where(is_push & (y > 0), lw, -np.inf), starts, lengths)
        prev = np.maximum(tie - 1, 0)
        ok = (tie > first) & np.isfinite(log_den[prev])
        with np.errstate(invalid="ignore"):
            out[RATE] = np.where(ok, np.exp(log_num[prev] - np.where(ok, log_den[prev], 0.0)), 0.0)
    if cat is not None:
        n_cat = int(cat.max()) + 1 if n else 1
        gc = g.astype(np.int64) * n_cat + cat
        order = np.argsort(gc, kind="stable")  # (user, category, time): time order kept within each group
        (c7,), _ = _window_counts(gc[order], t[order], is_push[order], [_span(CATEGORY_WINDOW, per_day)])
        out[CATEGORY] = np.empty(n)
        out[CATEGORY][order] = c7
    return out


# chunks of a log --------------------------------------------------------------------------------
def _chunk_arrays(chunk: pd.DataFrame, cfg: HistoryConfig, offset: int, source: str):
    for col in (cfg.user_id, cfg.timestamp, cfg.action) + ((cfg.reward,) if cfg.reward else ()):
        if col not in chunk.columns:
            raise LoggedDataError("missing column for the push history", column=col,
                                  expected=f"the columns {cfg.user_id!r}, {cfg.timestamp!r}, {cfg.action!r}", source=source)
    g, _ = pd.factorize(chunk[cfg.user_id], sort=False)
    if (g < 0).any():
        raise LoggedDataError("missing user id", column=cfg.user_id, rows=offset + np.flatnonzero(g < 0),
                              expected="a user id in every row", source=source)
    if chunk[cfg.timestamp].isna().any():
        raise LoggedDataError("missing timestamp", column=cfg.timestamp, source=source,
                              rows=offset + np.flatnonzero(chunk[cfg.timestamp].isna().to_numpy()))
    t, per_day = _time_values(chunk[cfg.timestamp])
    a_codes, _ = pd.factorize(chunk[cfg.action], sort=False)
    action = chunk[cfg.action].to_numpy()
    is_push = np.ones(len(chunk), bool) if cfg.no_push_action is None else action != cfg.no_push_action
    y = None
    if cfg.reward is not None:
        y = pd.to_numeric(chunk[cfg.reward], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isin(y, (0.0, 1.0))
        if bad.any():
            raise LoggedDataError("the response rate needs a 0/1 reward", column=cfg.reward, rows=offset + np.flatnonzero(bad),
                                  expected="0 or 1 in every row", source=source)
    cat = None
    if cfg.categories is not None:
        lookup = pd.Series(cfg.categories) if isinstance(cfg.categories, Mapping) else pd.Series(np.asarray(cfg.categories))
        mapped = chunk[cfg.action].map(lookup)
        if mapped.isna().any():
            raise LoggedDataError("action without a category", column=cfg.action, source=source,
                                  rows=offset + np.flatnonzero(mapped.isna().to_numpy()),
                                  expected="an action listed in the categories")
        cat, _ = pd.factorize(mapped, sort=False)
    return g, t, per_day, a_codes, is_push, y, cat


def _refuse_duplicates(g, t, a, order, offset: int, cfg: HistoryConfig, source: str) -> None:
    """In (user, time, action) order equal neighbours are one decision logged twice: refused, naming both rows."""
    gs, ts, as_ = g[order], t[order], a[order]
    same = (gs[1:] == gs[:-1]) & (ts[1:] == ts[:-1]) & (as_[1:] == as_[:-1])
    if same.any():
        k = np.flatnonzero(same)
        rows = np.unique(np.r_[order[k], order[k + 1]]) + offset
        raise LoggedDataError("duplicate rows: the same (user, timestamp, action) logged more than once",
                              column=f"{cfg.user_id}, {cfg.timestamp}, {cfg.action}", rows=rows,
                              expected="one row per user, timestamp and action", source=source)


def derive_chunk(chunk: pd.DataFrame, config: HistoryConfig, offset: int = 0, source: str = "<frame>") -> pd.DataFrame:
    """The history columns of one chunk holding every row of its users (any row order; same index as `chunk`).
    `offset`: the chunk's first row number in the whole log (for error messages)."""
    g, t, per_day, a, is_push, y, cat = _chunk_arrays(chunk, config, offset, source)
    order = np.lexsort((a, t, g))  # (user, time, action)
    _refuse_duplicates(g, t, a, order, offset, config, source)
    # renumber users in sorted order so the keys g * U + rank(t) increase along the sorted rows
    gs = np.cumsum(np.r_[False, g[order][1:] != g[order][:-1]]).astype(np.int64) if len(order) else g[order]
    feats = _derive_sorted(gs, t[order], is_push[order], None if y is None else y[order],
                           None if cat is None else cat[order], config, per_day)
    out = {}
    for name in config.columns:
        col = np.empty(len(chunk))
        col[order] = feats[name]
        out[name] = col
    return pd.DataFrame(out, index=chunk.index)


def derive_history_chunks(chunks: Iterable[pd.DataFrame], config: HistoryConfig, source: str = "<frame>"
                          ) -> Iterator[pd.DataFrame]:
    """History columns chunk by chunk (each with its chunk's index). A user may not span two chunks: a user of
    the previous chunk seen again is refused, naming the rows (re-cut the stream with `user_chunks`)."""
    offset, previous = 0, None
    for chunk in chunks:
        users = chunk[config.user_id].to_numpy()
        if previous is not None:
            again = np.isin(users, previous)
            if again.any():
                raise LoggedDataError("a user spans two chunks (sort by user and re-cut with user_chunks)",
                                      column=config.user_id, rows=offset + np.flatnonzero(again),
                                      expected="all of a user's rows in one chunk", source=source)
        yield derive_chunk(chunk, config, offset, source)
        offset += len(chunk)
        previous = pd.unique(users)


def user_chunks(chunks: Iterable[pd.DataFrame], user_id: str = "user_id") -> Iterator[pd.DataFrame]:
    """Re-cut chunks of a log sorted by user so that no user spans two chunks (the trailing user's rows are held
    back and prepended to the next chunk)."""
    carry: pd.DataFrame | None = None
    for chunk in chunks:
        if carry is not None and len(carry):
            chunk = pd.concat([carry, chunk])
        if not len(chunk):
            continue
        users = chunk[user_id].to_numpy()
        other = np.flatnonzero(users != users[-1])
        k = int(other[-1]) + 1 if len(other) else 0
        if k:
            yield chunk.iloc[:k]
        carry = chunk.iloc[k:]
    if carry is not None and len(carry):
        yield carry


def derive_history(frame: pd.DataFrame, config: HistoryConfig, rows_per_chunk: int | None = None,
                   source: str = "<frame>") -> pd.DataFrame:
    """History columns of a whole frame, in its original row order and index. With `rows_per_chunk`, the frame is
    sorted by (user, time), cut into chunks of about that many rows at user boundaries, and derived chunk by chunk."""
    if rows_per_chunk is None:
        return derive_chunk(frame, config, 0, source)
    if rows_per_chunk < 1:
        raise ValueError(f"rows_per_chunk must be >= 1, got {rows_per_chunk}")
    g, _ = pd.factorize(frame[config.user_id], sort=False)
    t, _ = _time_values(frame[config.timestamp])
    order = np.lexsort((t, g))
    sorted_frame = frame.reset_index(drop=True).iloc[order]
    pieces = (sorted_frame.iloc[lo: lo + rows_per_chunk] for lo in range(0, len(frame), rows_per_chunk))
    parts = list(derive_history_chunks(user_chunks(pieces, config.user_id), config, source))
    out = pd.concat(parts).sort_index() if parts else pd.DataFrame(columns=list(config.columns), dtype=np.float64)
    out.index = frame.index
    return out


# one user at decision time (serving) ----------------------------------------------------------------
def history_at(events: pd.DataFrame, now: object, config: HistoryConfig, action: object | None = None) -> dict[str, float]:
    """One user's history features at time `now` from that user's past events (rows with `config.timestamp`,
    `config.action` and, for the rate, `config.reward`); only events strictly before `now` count. `action`: the
    promotion about to be decided (for the category count). Equals `derive_history` for a row at `now`."""
    t, per_day = _time_values(events[config.timestamp])
    now_t = _time_scalar(now, per_day == DAY_NS)
    act = events[config.action].to_numpy()
    past = t < now_t
    push = past & (np.ones(len(events), bool) if config.no_push_action is None else act != config.no_push_action)
    out = {RECENT: float(np.sum(push & (t >= now_t - _span(config.window, per_day))))}
    for w in COUNT_WINDOWS:
        out[count_column(w)] = float(np.sum(push & (t >= now_t - _span(w, per_day))))
    gap = (now_t - t[push].max()) / per_day if push.any() else config.days_since_cap
    out[DAYS_SINCE] = float(min(gap, config.days_since_cap))
    if config.reward is not None:
        y = events[config.reward].to_numpy(dtype=np.float64)[push]
        if push.any():
            # exponents relative to the latest push, so the largest weight is 1 (no overflow, no 0/0)
            w = np.exp2(-((t[push].max() - t[push]).astype(np.float64) / per_day) / config.half_life_days)
            out[RATE] = float(np.sum(w * y) / np.sum(w))
        else:
            out[RATE] = 0.0
    if config.categories is not None:
        lookup = dict(config.categories) if isinstance(config.categories, Mapping) else dict(enumerate(config.categories))
        if action is None:
            raise ValueError("history_at: the category count needs the `action` about to be decided")
        same = np.array([lookup[a] == lookup[action] for a in act], dtype=bool)
        out[CATEGORY] = float(np.sum(push & same & (t >= now_t - _span(CATEGORY_WINDOW, per_day))))
    return out


# the log (LoggedData) -----------------------------------------------------------------------------
def history_skip_reason(data: LoggedData, column: str = RECENT) -> str | None:
    """Why the run does not derive the history for this log (None: it does): no user_id, no timestamp, no user
    with rows at two timestamps, or a `column` of its own."""
    if data.user_id is None:
        return "the log has no user_id"
    if data.timestamp is None:
        return "the log has no timestamp"
    if column in data.frame.columns:
        return f"the log has its own {column!r} column"
    pairs = pd.DataFrame({"u": data.frame["user_id"], "t": data.frame["timestamp"]}).drop_duplicates()
    if not pairs["u"].duplicated().any():
        return "no user has rows at two timestamps (no repeat users)"
    return None


def log_history(data: LoggedData, no_push_action: object | None = None, window: float = 3.0,
                reward: str | None = None, half_life_days: float = 7.0, category_column: str | None = None,
                rows_per_chunk: int | None = 2_000_000) -> pd.DataFrame:
    """History columns of a validated log (row order of `data.frame`). `no_push_action` is an action id of the
    log; `category_column` a catalogue column (its value per action is the category)."""
    ids = list(data.action_ids)
    no_push = None if no_push_action is None else ids.index(no_push_action)
    cats = None
    if category_column is not None:
        cats = data.catalogue.features[category_column].to_numpy()
    cfg = HistoryConfig(action="action_index", no_push_action=no_push, reward=reward, half_life_days=half_life_days,
                        window=window, categories=cats)
    return derive_history(data.frame, cfg, rows_per_chunk=rows_per_chunk, source=data.name)


def with_log_column(data: LoggedData, column: str, values: np.ndarray) -> LoggedData:
    """The log with one more frame column that is NOT a context feature (like the response model's fatigue input
    `recent_pushes`, which `ResponseModel` reads from the frame by name). Subsets and splits keep it."""
    if column in data.frame.columns:
        raise ValueError(f"the log already has a column {column!r}")
    return dataclasses.replace(data, frame=data.frame.assign(**{column: np.asarray(values, dtype=np.float64)}))


def history_summary(data: LoggedData, history: pd.DataFrame, no_push_action: object | None = None) -> dict[str, float]:
    """Repeat users, pushes per user and the median gap (days) between a user's consecutive pushes, plus the mean
    of every history column."""
    users = data.frame["user_id"]
    rows_per_user = users.value_counts()
    is_push = np.ones(data.n_rounds, bool) if no_push_action is None else data.frame["action"].to_numpy() != no_push_action
    t, per_day = _time_values(data.frame["timestamp"])
    pushes = pd.DataFrame({"u": users.to_numpy()[is_push], "t": t[is_push]}).sort_values(["u", "t"], kind="stable")
    gaps = pushes.groupby("u", sort=False)["t"].diff().dropna().to_numpy(dtype=np.float64) / per_day
    out = {"users": float(len(rows_per_user)), "repeat_users": float((rows_per_user > 1).sum()),
           "pushes": float(is_push.sum()), "pushes_per_user": float(is_push.sum() / max(len(rows_per_user), 1)),
           "median_gap_days": float(np.median(gaps)) if len(gaps) else float("nan")}
    out.update({f"mean_{c}": float(history[c].mean()) for c in history.columns})
    return out
