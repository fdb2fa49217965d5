"""`pushrl data describe`: validate a log and summarise it, streaming chunk by chunk.

The logging regime is classified from the propensities: absent (no column),
deterministic (all 1.0), uniform (every propensity 1 / n_actions), or
stochastic. The effective sample size reported is that of the importance
weights for evaluating the uniform-random policy, w = (1/A) / propensity:
(Σw)² / Σw², equal to n for a uniform log and small when logging concentrated
on few actions. Context features that look like a role (a probability, an
outcome, an id, a timestamp) are warned about by name
(`pushrl.envs.data.leakage.look_alike_warnings`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pushrl.envs.data.catalogue import Catalogue
from pushrl.envs.data.leakage import (
    ColumnProfile,
    look_alike_warnings,
    merge_profiles,
    profile_columns,
)
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.schema import LogSchema
from pushrl.envs.data.validation import ResolvedColumns

RARE_EVENTS = 100
LOW_ESS_SHARE = 0.1


@dataclass
class Description:
    """Summary of a validated log (JSON-serialisable via `to_dict`)."""

    source: str
    rows: int
    users: int | None
    actions_in_catalogue: int
    actions_logged: int
    positions: dict[int, int]
    rewards: dict[str, float]
    reward_events: dict[str, float]
    per_action: pd.DataFrame
    propensity: dict[str, float] | None
    logging_regime: str
    ess: float | None
    time_range: tuple[str, str] | None
    features: dict[str, list[str]]
    warnings: list[str] = field(default_factory=list)
    support: pd.DataFrame | None = None  # per action: share of contexts with logging probability > support_tau
    support_tau: float | None = None
    support_source: str | None = None
    full_support_share: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        records = self.per_action.reset_index().to_dict(orient="records")
        # a promotion never logged has no rate: null in JSON, not NaN
        d["per_action"] = [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
                           for r in records]
        d["ess"] = None if self.ess is not None and not np.isfinite(self.ess) else self.ess
        d["positions"] = {str(k): v for k, v in self.positions.items()}
        if self.support is not None:
            d["support"] = self.support.reset_index().to_dict(orient="records")
        return d

    def to_text(self) -> str:
        lines = [f"log: {self.source}", f"rows: {self.rows:,}"]
        lines.append(f"users: {self.users:,}" if self.users is not None else "users: (no user_id column)")
        lines.append(f"actions: {self.actions_logged} logged of {self.actions_in_catalogue} in the catalogue")
        lines.append("positions: " + ", ".join(f"{k}: {v:,} rows" for k, v in sorted(self.positions.items())))
        lines.append("rewards (mean over rows): " + ", ".join(f"{k} {v:.5g}" for k, v in self.rewards.items()))
        if self.propensity is None:
            lines.append("propensity: absent (no propensity column)")
        else:
            p = self.propensity
            lines.append(f"propensity: min {p['min']:.6g}, max {p['max']:.6g}, mean {p['mean']:.6g}")
        lines.append(f"logging regime: {self.logging_regime}")
        if self.ess is not None:
            lines.append(f"effective sample size (uniform target): {self.ess:,.1f} ({self.ess / self.rows:.1%} of rows)")
        if self.time_range:
            lines.append(f"time range: {self.time_range[0]} .. {self.time_range[1]}")
        else:
            lines.append("time range: (no timestamps: splits will be random, stratified by action)")
        lines.append("features (model inputs; choose them with data.features / data.exclude): "
                     + ", ".join(f"{len(self.features[k])} {k}{_names_of(self.features[k])}" for k in ("numeric", "categorical")))
        lines.append("per action (first 10 by rows):")
        lines.append(self.per_action.sort_values("rows", ascending=False).head(10).to_string())
        if self.support is not None:
            lines.append(f"support (logging probability > tau = {self.support_tau:g} per context), {self.support_source}; "
                         f"contexts with every action supported: {self.full_support_share:.1%}; "
                         "least supported 10:")
            lines.append(self.support.sort_values("supported_share").head(10)
                         .to_string(float_format=lambda v: f"{v:.4g}"))
        if self.warnings:
            lines.append("warnings:")
            lines += [f"  - {w}" for w in self.warnings]
        else:
            lines.append("warnings: none")
        return "\n".join(lines)


def _names_of(columns: list[str], shown: int = 12) -> str:
    """' (a, b, c and 3 more)', or '' for none."""
    if not columns:
        return ""
    more = f" and {len(columns) - shown} more" if len(columns) > shown else ""
    return f" ({', '.join(columns[:shown])}{more})"


class _Accumulator:
    """Streaming sufficient statistics of canonical chunks."""

    def __init__(self, catalogue: Catalogue, resolved: ResolvedColumns) -> None:
        a = catalogue.n_actions
        self.catalogue, self.resolved = catalogue, resolved
        self.rows = 0
        self.users: set | None = set() if resolved.has_user_id else None
        self.action_rows = np.zeros(a, dtype=np.int64)
        self.reward_sums = {r: np.zeros(a) for r in resolved.rewards}
        self.positions: dict[int, int] = {}
        self.p_min, self.p_max, self.p_sum = np.inf, -np.inf, 0.0
        self.all_one, self.all_uniform = True, True
        self.sw = self.sw2 = 0.0
        self.t_min = self.t_max = None
        self.profiles: dict[str, ColumnProfile] = {}

    def add(self, chunk: pd.DataFrame) -> None:
        a = self.catalogue.n_actions
        act = chunk["action_index"].to_numpy()
        self.rows += len(chunk)
        self.profiles = merge_profiles(self.profiles, profile_columns(chunk, self.resolved))
        self.action_rows += np.bincount(act, minlength=a)
        for r in self.resolved.rewards:
            self.reward_sums[r] += np.bincount(act, weights=chunk[r].to_numpy(), minlength=a)
        for k, v in chunk["position"].value_counts().items():
            self.positions[int(k)] = self.positions.get(int(k), 0) + int(v)
        if self.users is not None:
            self.users.update(pd.unique(chunk["user_id"]).tolist())
        if self.resolved.has_propensity:
            p = chunk["propensity"].to_numpy()
            self.p_min, self.p_max = min(self.p_min, p.min()), max(self.p_max, p.max())
            self.p_sum += p.sum()
            self.all_one &= bool(np.all(p == 1.0))
            self.all_uniform &= bool(np.allclose(p, 1.0 / a, rtol=1e-6, atol=0))
            w = (1.0 / a) / p
            self.sw += w.sum()
            self.sw2 += (w * w).sum()
        if self.resolved.has_timestamp:
            ts = chunk["timestamp"]
            lo, hi = ts.min(), ts.max()
            self.t_min = lo if self.t_min is None else min(self.t_min, lo)
            self.t_max = hi if self.t_max is None else max(self.t_max, hi)

    def result(self, source: str) -> Description:
        n = self.rows
        ids = self.catalogue.ids
        per_action = pd.DataFrame({"rows": self.action_rows}, index=pd.Index(ids, name="action"))
        per_action["share"] = self.action_rows / max(n, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            for r, s in self.reward_sums.items():
                per_action[f"{r}_rate"] = np.where(self.action_rows > 0, s / np.maximum(self.action_rows, 1), np.nan)
        rewards = {r: float(s.sum() / n) for r, s in self.reward_sums.items()}
        events = {r: float(s.sum()) for r, s in self.reward_sums.items()}
        warnings: list[str] = []
        never = int((self.action_rows == 0).sum())
        if never:
            warnings.append(f"{never} catalogue promotions never appear in the log (no support for OPE)")
        for r, ev in events.items():
            if 0 < ev < RARE_EVENTS:
                warnings.append(f"reward '{r}' is rare: {ev:.0f} events in {n:,} rows; estimates will have wide intervals")
            if ev == 0:
                warnings.append(f"reward '{r}' is never positive in this log")
        prop = None
        ess = None
        if self.resolved.has_propensity:
            prop = {"min": float(self.p_min), "max": float(self.p_max), "mean": float(self.p_sum / n)}
            regime = "deterministic" if self.all_one else "uniform" if self.all_uniform else "stochastic"
            ess = float(self.sw**2 / self.sw2)
            if regime == "deterministic":
                warnings.append("logging looks deterministic (every propensity is 1.0): IPS-family OPE of other policies is not identified")
            elif ess < LOW_ESS_SHARE * n:
                warnings.append(f"low effective sample size {ess:,.0f} ({ess / n:.1%} of rows): logging concentrated on few actions")
        else:
            regime = "absent"
            warnings.append("no propensity column: IPS-family OPE needs propensities (estimate them explicitly, or use DM)")
        warnings += look_alike_warnings(self.profiles, self.resolved)
        if not self.resolved.has_timestamp:
            warnings.append("no timestamps: train/validation/test will be a seeded random split stratified by action, not a time split")
        time_range = (str(self.t_min), str(self.t_max)) if self.t_min is not None else None
        return Description(
            source=source,
            rows=n,
            users=len(self.users) if self.users is not None else None,
            actions_in_catalogue=self.catalogue.n_actions,
            actions_logged=int((self.action_rows > 0).sum()),
            positions=dict(sorted(self.positions.items())),
            rewards=rewards,
            reward_events=events,
            per_action=per_action,
            propensity=prop,
            logging_regime=regime,
            ess=ess,
            time_range=time_range,
            features={"numeric": list(self.resolved.numeric_features), "categorical": list(self.resolved.categorical_features)},
            warnings=warnings,
        )


def describe_chunks(chunks: Iterable[tuple[pd.DataFrame, ResolvedColumns, Catalogue]], source: str) -> Description:
    """Summarise validated canonical chunks (as yielded by `iter_log_chunks`)."""
    acc: _Accumulator | None = None
    for chunk, resolved, catalogue in chunks:
        if acc is None:
            acc = _Accumulator(catalogue, resolved)
        acc.add(chunk)
    if acc is None:
        raise ValueError(f"{source}: no rows to describe")
    return acc.result(source)


def describe_data(data: LoggedData, support: bool = True) -> Description:
    """Summarise an in-memory LoggedData, with the full regime check (one action per context, contradictions)
    and, with `support`, the support table (`pushrl.envs.data.regime.detect_regime`: exact for uniform and
    deterministic logging, a cross-fitted propensity model otherwise)."""
    from pushrl.envs.data.regime import detect_regime

    desc = describe_chunks([(data.frame, data.columns, data.catalogue)], data.name)
    regime = detect_regime(data, support=support)  # raises LoggedDataError on all-1.0 propensities, several actions per context
    if regime.support is not None:
        desc.support, desc.support_tau = regime.support, regime.tau
        desc.support_source, desc.full_support_share = regime.support_source, regime.full_support_share
    if regime.regime != desc.logging_regime:
        desc.warnings.append(f"logging regime from contexts: {regime.regime} ({regime.evidence})")
        desc.logging_regime = regime.regime
    desc.warnings += [w for w in regime.warnings if w not in desc.warnings]
    desc.warnings += [w for w in data.warnings if w not in desc.warnings]
    desc.warnings += [n for n in data.notes if "split" in n]
    return desc


def describe_file(
    path: str | os.PathLike[str],
    schema: LogSchema | None = None,
    catalogue: Catalogue | None = None,
    chunksize: int = 1_000_000,
) -> Description:
    """Validate and summarise a log file without loading it whole."""
    from pushrl.envs.data.loaders import iter_log_chunks

    return describe_chunks(iter_log_chunks(path, schema, catalogue, chunksize), str(path))
