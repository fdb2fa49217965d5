"""Context features that look like a role, and context features that leak a reward.

Both checks are about the context features (the columns a model takes as input).

`suspicious_columns` warns, by name and values, about a feature that looks like
a column with a role: a probability or score (a logging propensity, a model's
prediction), a 0/1 (or zero-inflated money) column named like an outcome, an
outcome's id (an order id), a timestamp, a user id. Each warning says how to
declare the column or drop it. `ColumnProfile` holds what the rule needs of a
column's values, merged chunk by chunk when a file is streamed.

`check_leakage` refuses a feature that nearly determines a reward on the
training rows. Per feature and reward (and, for a non-negative continuous
reward, also its indicator "reward > 0"):

- AUC (binary rewards): the single-feature rank AUC, max(AUC, 1 - AUC), of the
  feature's value (numeric) or of its out-of-fold smoothed per-level mean
  (categorical: a level's rate is learnt on the other folds, so an id with one
  row per level scores 0.5, not 1);
- R² (every reward): the share of variance explained, 1 - SSE / SST, by a
  leave-one-out moving average of the reward over the NEIGHBOURS rows nearest in
  the feature's value order (for a categorical feature, its out-of-fold encoding);
  it catches non-monotone and continuous dependence;
- pure share (binary rewards): the share of the rarer outcome lying in a pure
  region, a tail of the feature's values (or of its levels' out-of-fold rates)
  of at least MIN_PURE_ROWS rows of which at least PURITY have that outcome. An
  outcome such as revenue is 0 unless the user clicked, so it puts a sizeable
  share of the clicks where a click is certain; no context known before the push
  does that.

Everything is vectorised over blocks of features: one sort per numeric block,
shared by all rewards.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pushrl.envs.common.errors import LoggedDataError
from pushrl.envs.data.validation import ResolvedColumns

if TYPE_CHECKING:  # LoggedData computes its look-alike warnings with this module
    from pushrl.envs.data.logged_data import LoggedData

# Thresholds: on the embedded samples and the synthetic logs the largest single-feature AUC is about 0.67, R² about
# 0.01 and the pure share 0; a reward copy with 2% of rows flipped has AUC 0.98, an outcome's id AUC 1.0, revenue
# as an input of a click model a pure share of P(conversion | click), 0.28 in the synthetic shop.
AUC_THRESHOLD = 0.95
R2_THRESHOLD = 0.8
PURE_SHARE_THRESHOLD = 0.05
PURITY = 0.99
MIN_PURE_ROWS = 30
K_FOLDS = 5
SMOOTHING = 20.0
NEIGHBOURS = 10  # each side of a row in value order
BLOCK = 16  # features sorted at once

# name hints (lower-case tokens of the column name; a hint ending in "*" is a prefix)
PROBABILITY_NAMES = ("prob*", "propens*", "pscore*", "likelihood*", "logit*")
SCORE_NAMES = ("score*", "p", "ps", "pred*")  # only with values in [0, 1], not all whole
OUTCOME_NAMES = ("click*", "conv*", "purchas*", "buy*", "bought", "order*", "revenue*", "spend*", "spent", "visit*",
                 "open*", "unsub*", "churn*", "redeem*", "sale*", "reward*", "respon*", "checkout*", "install*",
                 "signup*", "booking*", "booked", "target", "label", "outcome*")
MONEY_NAMES = ("revenue*", "spend*", "spent", "sale*", "gmv", "profit*", "amount*")
TIME_NAMES = ("time", "timestamp*", "ts", "date", "datetime", "dt", "epoch")
ID_NAMES = ("id", "uid", "uuid", "guid", "userid", "customerid", "clientid")
OUTCOME_ID_NAMES = (*ID_NAMES, "number", "num", "nr", "no", "ref", "reference", "key")  # order_number, sale_ref
USER_NAMES = ("user*", "customer*", "client*", "member*", "visitor*", "account*", "device*", "cookie*", "session*",
              "shopper*", "buyer*")
TRUTHY = frozenset({"0", "1", "0.0", "1.0", "true", "false", "yes", "no", "y", "n", "t", "f"})
MAX_LEVELS = 2  # a categorical profile keeps its distinct values while there are at most this many


# ---------------------------------------------------------------------------------------------------------------
# look-alike columns
# ---------------------------------------------------------------------------------------------------------------
def name_tokens(name: str) -> tuple[str, ...]:
    """'loggingProb' -> ('logging', 'prob'); 'user-item_affinity_0' -> ('user', 'item', 'affinity', '0')."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return tuple(re.findall(r"[a-z]+|[0-9]+", spaced.lower()))


def _matches(tokens: Iterable[str], hints: Iterable[str]) -> bool:
    tokens = tuple(tokens)
    for hint in hints:
        if hint.endswith("*"):
            if any(t.startswith(hint[:-1]) for t in tokens):
                return True
        elif hint in tokens:
            return True
    return False


@dataclass(frozen=True)
class ColumnProfile:
    """What the look-alike rule needs of one feature column's values (mergeable across chunks).

    Attributes:
        numeric: a numeric feature (else categorical).
        rows: rows seen.
        low, high: value range (numeric).
        integer: every value is a whole number (numeric).
        zeros: rows equal to 0 (numeric).
        levels: the distinct values while there are at most MAX_LEVELS (categorical); None beyond.
    """

    numeric: bool
    rows: int = 0
    low: float = math.inf
    high: float = -math.inf
    integer: bool = True
    zeros: int = 0
    levels: frozenset[str] | None = frozenset()

    @classmethod
    def of(cls, values: pd.Series | np.ndarray, numeric: bool) -> ColumnProfile:
        if numeric:
            x = np.asarray(values, dtype=np.float64)
            if len(x) == 0:
                return cls(True)
            return cls(True, len(x), float(x.min()), float(x.max()), bool(np.all(x == np.round(x))),
                       int(np.count_nonzero(x == 0)))
        values = np.asarray(values, dtype=object)
        if len(pd.unique(values[:1000])) > MAX_LEVELS:  # most categories say so at once: no full scan
            return cls(False, len(values), levels=None)
        uniq = pd.unique(values)
        levels = frozenset(map(str, uniq)) if len(uniq) <= MAX_LEVELS else None
        return cls(False, len(values), levels=levels)

    def merged(self, other: ColumnProfile) -> ColumnProfile:
        levels = None if self.levels is None or other.levels is None else self.levels | other.levels
        if levels is not None and len(levels) > MAX_LEVELS:
            levels = None
        return replace(self, rows=self.rows + other.rows, low=min(self.low, other.low), high=max(self.high, other.high),
                       integer=self.integer and other.integer, zeros=self.zeros + other.zeros, levels=levels)

    @property
    def binary(self) -> bool:
        """Only 0/1 values (numeric), or two-valued yes/no, true/false, 0/1 categories."""
        if self.numeric:
            return self.rows > 0 and self.integer and self.low >= 0 and self.high <= 1
        return self.levels is not None and len(self.levels) > 0 and {v.lower() for v in self.levels} <= TRUTHY

    @property
    def unit_fraction(self) -> bool:
        """Numeric, within [0, 1] and not all whole numbers: a probability's shape."""
        return self.numeric and self.rows > 0 and self.low >= 0 and self.high <= 1 and not self.integer


def profile_columns(frame: pd.DataFrame, columns: ResolvedColumns) -> dict[str, ColumnProfile]:
    """A profile of every feature column of a (canonical) frame."""
    out = {c: ColumnProfile.of(frame[c], True) for c in columns.numeric_features}
    out.update({c: ColumnProfile.of(frame[c], False) for c in columns.categorical_features})
    return out


def merge_profiles(a: Mapping[str, ColumnProfile], b: Mapping[str, ColumnProfile]) -> dict[str, ColumnProfile]:
    return {c: a[c].merged(b[c]) if c in a else b[c] for c in b} | {c: p for c, p in a.items() if c not in b}


def _drop(col: str) -> str:
    return f"drop it with data.exclude=[{col}]"


def _look_alike(col: str, p: ColumnProfile, columns: ResolvedColumns) -> str | None:
    """The warning for one feature, or None."""
    tokens = name_tokens(col)
    outcome = _matches(tokens, OUTCOME_NAMES)
    if p.numeric and (_matches(tokens, PROBABILITY_NAMES) or (p.unit_fraction and _matches(tokens, SCORE_NAMES))):
        return (f"column '{col}' looks like a probability or score (values {p.low:.3g}..{p.high:.3g}) but is a context "
                f"feature: if it is the logging policy's probability declare it with data.propensity={col}; "
                f"if it is a model's prediction or an outcome, {_drop(col)}")
    if outcome and _matches(tokens, OUTCOME_ID_NAMES):
        return (f"column '{col}' is named like an outcome's id (it exists only once the outcome happened) but is a "
                f"context feature: {_drop(col)}")
    if outcome and p.binary:
        return (f"column '{col}' is 0/1 and named like an outcome but is a context feature: declare it with "
                f"data.rewards=[..., {col}] (or data.optional_rewards) or {_drop(col)}; "
                "keep it only if it is known before the push")
    if _matches(tokens, MONEY_NAMES) and p.numeric and p.low >= 0 and p.zeros * 2 >= p.rows > 0:
        return (f"column '{col}' is named like money and is 0 on {p.zeros / p.rows:.0%} of rows, like an outcome, but "
                f"is a context feature: declare it with data.rewards=[..., {col}] or {_drop(col)}; "
                "keep it only if it is measured before the push")
    if _matches(tokens, TIME_NAMES) or (len(tokens) > 1 and tokens[-1] == "at"):
        declare = "" if columns.has_timestamp else f"declare it with data.timestamp={col} (a time split) or "
        return f"column '{col}' is named like a timestamp but is a context feature: {declare}{_drop(col)}"
    user_id = _matches(tokens, ID_NAMES) and (_matches(tokens, USER_NAMES) or len(tokens) == 1)
    if user_id or tokens in (("user",), ("customer",)):
        declare = "" if columns.has_user_id else f"declare it with data.user_id={col} or "
        return f"column '{col}' is named like a user id but is a context feature: {declare}{_drop(col)}"
    return None


def look_alike_warnings(profiles: Mapping[str, ColumnProfile], columns: ResolvedColumns) -> list[str]:
    """One warning per feature that looks like a role, in feature order."""
    found = (_look_alike(c, profiles[c], columns) for c in (*columns.numeric_features, *columns.categorical_features)
             if c in profiles)
    return [w for w in found if w]


def suspicious_columns(frame: pd.DataFrame, columns: ResolvedColumns) -> list[str]:
    """Warnings about the features of a canonical frame that look like a role (a probability or score, an outcome,
    an outcome's id, a timestamp, a user id), each saying how to declare or drop the column."""
    return look_alike_warnings(profile_columns(frame, columns), columns)


# ---------------------------------------------------------------------------------------------------------------
# leakage
# ---------------------------------------------------------------------------------------------------------------
class LeakageError(LoggedDataError):
    """A context feature nearly determines a reward. Attributes: column (the feature), reward, measure, value."""

    def __init__(self, message: str, feature: str, reward: str, measure: str, value: float) -> None:
        super().__init__(message)
        self.column, self.reward, self.measure, self.value = feature, reward, measure, value


@dataclass(frozen=True)
class _Target:
    reward: str
    y: np.ndarray  # (n,) float64
    binary: bool
    indicator: bool = False  # the 0/1 "reward > 0" of a continuous reward

    @property
    def label(self) -> str:
        return f"{self.reward} > 0" if self.indicator else self.reward

    def outcome(self, value: int) -> str:
        if self.indicator:
            return f"{self.reward} > 0" if value else f"{self.reward} = 0"
        return f"{self.reward} = {value}"


def _targets(frame: pd.DataFrame, rewards: Iterable[str]) -> list[_Target]:
    out = []
    for r in rewards:
        y = frame[r].to_numpy(dtype=np.float64)
        if len(y) == 0 or y.min() == y.max():
            continue  # a constant reward: nothing to determine
        if np.isin(y, (0.0, 1.0)).all():
            out.append(_Target(r, y, True))
            continue
        out.append(_Target(r, y, False))
        if y.min() >= 0 and y.min() == 0:
            out.append(_Target(r, (y > 0).astype(np.float64), True, indicator=True))
    return out


@dataclass(frozen=True)
class _Sorted:
    """A block of feature columns, each sorted, with its tie groups. Arrays are (F, n): one row per feature."""

    order: np.ndarray  # (F, n) row index at each sorted position
    values: np.ndarray  # (F, n) sorted values
    first: np.ndarray  # (F, n) bool: first position of a tie group
    last: np.ndarray  # (F, n) bool: last position of a tie group
    rank: np.ndarray  # (F, n) average 1-based rank of the tie group

    @classmethod
    def of(cls, z: np.ndarray) -> _Sorted:
        """z: (F, n) feature values."""
        n = z.shape[1]
        order = np.argsort(z, axis=1)
        values = np.take_along_axis(z, order, axis=1)
        first = np.ones(values.shape, dtype=bool)
        first[:, 1:] = values[:, 1:] != values[:, :-1]
        last = np.ones(values.shape, dtype=bool)
        last[:, :-1] = first[:, 1:]
        at = np.arange(n)
        start = np.maximum.accumulate(np.where(first, at, 0), axis=1)
        end = np.minimum.accumulate(np.where(last, at, n - 1)[:, ::-1], axis=1)[:, ::-1]
        return cls(order, values, first, last, (start + end) / 2.0 + 1.0)


def _auc(s: _Sorted, ys: np.ndarray) -> np.ndarray:
    """max(AUC, 1 - AUC) per feature, ties counted half (Mann-Whitney). ys: (F, n) 0/1 in sorted order."""
    n1 = ys[0].sum()
    n0 = ys.shape[1] - n1
    auc = ((s.rank * ys).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)
    return np.maximum(auc, 1 - auc)


def _r2(ys: np.ndarray, y: np.ndarray) -> np.ndarray:
    """1 - SSE / SST of the leave-one-out mean over the NEIGHBOURS positions each side in sorted order."""
    f, n = ys.shape
    cs = np.zeros((f, n + 1))
    np.cumsum(ys, axis=1, out=cs[:, 1:])
    at = np.arange(n)
    lo, hi = np.maximum(at - NEIGHBOURS, 0), np.minimum(at + NEIGHBOURS, n - 1)
    pred = (cs[:, hi + 1] - cs[:, lo] - ys) / np.maximum(hi - lo, 1)
    sst = float(((y - y.mean()) ** 2).sum())
    return 1.0 - ((ys - pred) ** 2).sum(axis=1) / sst


@dataclass(frozen=True)
class _Pure:
    share: np.ndarray  # (F,) share of the minority outcome in the largest pure tail
    rows: np.ndarray  # (F,) rows of that tail
    rate: np.ndarray  # (F,) minority rate in it
    value: np.ndarray  # (F,) the tail's threshold value
    top: np.ndarray  # (F,) bool: upper tail (value >= threshold), else lower
    at: np.ndarray  # (F,) sorted position of the threshold
    minority: int


def _pure(s: _Sorted, ys: np.ndarray) -> _Pure:
    """The largest tail of each feature in which at least PURITY of the rows have the rarer outcome."""
    f, n = ys.shape
    minority = int(ys[0].sum() * 2 <= n)
    ym = ys if minority else 1.0 - ys
    total = ym[0].sum()
    cum = np.cumsum(ym, axis=1)
    count = np.arange(1, n + 1, dtype=np.float64)
    low = np.where(s.last & (count >= MIN_PURE_ROWS) & (cum >= PURITY * count), cum, 0.0)
    top_count = n - count + 1
    top_pos = total - cum + ym
    high = np.where(s.first & (top_count >= MIN_PURE_ROWS) & (top_pos >= PURITY * top_count), top_pos, 0.0)
    i_low, i_high = low.argmax(axis=1), high.argmax(axis=1)
    feats = np.arange(f)
    best_low, best_high = low[feats, i_low], high[feats, i_high]
    top = best_high > best_low
    at = np.where(top, i_high, i_low)
    pos = np.maximum(best_low, best_high)
    rows = np.where(top, n - at, at + 1)
    return _Pure(pos / total, rows, pos / rows, s.values[feats, at], top, at, minority)


def _oof_encoding(codes: np.ndarray, n_levels: int, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Each row's level mean of y learnt on the other folds, smoothed towards the overall mean."""
    key = folds * n_levels + codes
    s = np.bincount(key, weights=y, minlength=K_FOLDS * n_levels).reshape(K_FOLDS, n_levels)
    c = np.bincount(key, minlength=K_FOLDS * n_levels).reshape(K_FOLDS, n_levels)
    oof_s = s.sum(axis=0)[codes] - s[folds, codes]
    oof_c = c.sum(axis=0)[codes] - c[folds, codes]
    return (oof_s + SMOOTHING * y.mean()) / (oof_c + SMOOTHING)


def _rows_of(frame: pd.DataFrame, feature: str, kind: str, p: _Pure, j: int, order: np.ndarray) -> str:
    """Where the pure tail is, in the user's terms. order: (F, n) sorted row indices."""
    if kind == "numeric":
        return f"where {feature} {'>=' if p.top[j] else '<='} {p.value[j]:.6g}"
    tail = order[j, p.at[j]:] if p.top[j] else order[j, : p.at[j] + 1]
    levels = pd.unique(frame[feature].to_numpy()[tail])
    shown = ", ".join(map(repr, levels[:3].tolist())) + (f" and {len(levels) - 3} more" if len(levels) > 3 else "")
    return f"with {feature} in {shown}"


def _block_rows(frame: pd.DataFrame, names: list[str], kind: str, s: _Sorted, t: _Target) -> list[dict]:
    ys = t.y[s.order]
    r2 = _r2(ys, t.y)
    auc = _auc(s, ys) if t.binary else np.full(len(names), np.nan)
    pure = _pure(s, ys) if t.binary else None
    out = []
    for j, name in enumerate(names):
        row = {"feature": name, "kind": kind, "reward": t.reward, "target": t.label, "auc": float(auc[j]),
               "r2": float(r2[j]), "pure_share": 0.0, "pure_evidence": ""}
        if pure is not None and pure.share[j] > 0:
            row["pure_share"] = float(pure.share[j])
            row["pure_evidence"] = (f"{t.outcome(pure.minority)} on {pure.rate[j]:.1%} of the {int(pure.rows[j]):,} "
                                    f"rows {_rows_of(frame, name, kind, pure, j, s.order)}, "
                                    f"{pure.share[j]:.0%} of all rows with {t.outcome(pure.minority)}")
        out.append(row)
    return out


COLUMNS = ("feature", "kind", "reward", "target", "auc", "r2", "pure_share", "pure_evidence")


def leakage_statistics(data: LoggedData, rows: np.ndarray | None = None) -> pd.DataFrame:
    """One row per (feature, reward target): auc (binary targets; NaN otherwise), r2, pure_share and its evidence.

    A non-negative continuous reward is measured as itself and as its indicator `target = '<reward> > 0'`."""
    frame = data.frame if rows is None else data.frame.iloc[np.asarray(rows)].reset_index(drop=True)
    targets = _targets(frame, data.reward_names)
    if len(frame) < 3 or not targets or not data.feature_names:
        return pd.DataFrame(columns=list(COLUMNS))
    out: list[dict] = []
    numeric = list(data.columns.numeric_features)
    for b in range(0, len(numeric), BLOCK):
        names = numeric[b: b + BLOCK]
        s = _Sorted.of(frame[names].to_numpy(dtype=np.float64).T.copy())
        for t in targets:
            out += _block_rows(frame, names, "numeric", s, t)
    categorical = list(data.columns.categorical_features)
    if categorical:
        folds = np.random.default_rng(0).integers(0, K_FOLDS, len(frame))
        codes = [pd.factorize(frame[c].to_numpy())[0] for c in categorical]
        for b in range(0, len(categorical), BLOCK):
            names, block = categorical[b: b + BLOCK], codes[b: b + BLOCK]
            for t in targets:
                z = np.stack([_oof_encoding(k, int(k.max()) + 1, t.y, folds) for k in block])
                out += _block_rows(frame, names, "categorical", _Sorted.of(z), t)
    return pd.DataFrame(out, columns=list(COLUMNS))


def _severity(value: float, threshold: float) -> float:
    """How far past its threshold a statistic is, on one scale: 0 at the threshold, 1 at certainty."""
    return (value - threshold) / max(1.0 - threshold, 1e-12)


def _findings(table: pd.DataFrame, auc: float, r2: float, pure_share: float) -> list[tuple[float, dict, str, str]]:
    """(severity, row, measure, evidence) of every statistic at or over its threshold, worst first."""
    found = []
    for row in table.to_dict(orient="records"):
        on = f" for {row['target']}" if row["target"] != row["reward"] else ""
        if row["auc"] >= auc:
            found.append((_severity(row["auc"], auc), row, "auc", f"AUC {row['auc']:.3f}{on}"))
        if row["r2"] >= r2:
            found.append((_severity(row["r2"], r2), row, "r2", f"share of variance explained {row['r2']:.3f}{on}"))
        if row["pure_share"] >= pure_share:
            found.append((_severity(row["pure_share"], pure_share), row, "pure_share", row["pure_evidence"]))
    return sorted(found, key=lambda f: -f[0])  # stable: on a tie AUC, then R², then the pure share


def check_leakage(
    data: LoggedData,
    rows: np.ndarray | None = None,
    threshold: float = AUC_THRESHOLD,
    r2_threshold: float = R2_THRESHOLD,
    pure_share: float = PURE_SHARE_THRESHOLD,
) -> pd.DataFrame:
    """Refuse a context feature that nearly determines a reward on these rows (LeakageError naming it, the reward
    and the evidence); otherwise return `leakage_statistics`.

    Refused when, for a feature and a reward, AUC >= `threshold` (binary), R² >= `r2_threshold`, or the share of
    the rarer outcome in a pure tail >= `pure_share`. Pass the training rows (`split.train`, or `rows`)."""
    table = leakage_statistics(data, rows)
    found = _findings(table, threshold, r2_threshold, pure_share)
    if not found:
        return table
    _, row, measure, evidence = found[0]
    col = row["feature"]
    others = sorted({(r["feature"], r["reward"]) for _, r, _, _ in found[1:]} - {(col, row["reward"])})
    also = "; also " + ", ".join(f"'{f}' for '{r}'" for f, r in others[:4]) + (" ..." if len(others) > 4 else "") \
        if others else ""
    message = (f"feature '{col}' nearly determines reward '{row['reward']}' on the training rows ({evidence}): "
               f"it is an outcome, not a context; drop it with data.exclude=[{col}] or declare it a reward{also}")
    raise LeakageError(message, col, row["reward"], measure, float(row[measure]))
