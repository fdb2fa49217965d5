"""Which policy wrote this log? The logging regime and how well each action is supported.

Regimes (`LoggingRegime.regime`):
    deterministic  every logged propensity is 1.0, or, without a propensity
                   column, only one action was ever logged or every repeated
                   context got exactly one action (needs at least
                   `min_repeated_contexts` contexts seen twice or more: with
                   unique contexts "one action per context" proves nothing);
    uniform        every propensity equals 1 / n_actions (relative tolerance 1e-6);
    stochastic     propensities present, neither of the above;
    absent         no propensity column and no evidence of determinism.

A context is the tuple of a row's raw feature values (`LoggedData.features()`,
or the columns given), hashed to 64 bits with `pandas.util.hash_pandas_object`
(a collision among n contexts has probability about n² / 2⁶⁵). "All propensities
1.0 but several actions for one identical context" is a contradiction and is
refused with a LoggedDataError naming those rows.

Support table: for each action, the share of distinct contexts in which its
logging probability exceeds τ. The probability of (context, action) is the
mean over the context's rows of, in order of preference:
    given       the `probabilities` argument (e.g. the true logging policy);
    exact       uniform: 1 / n_actions; deterministic: 1 for the logged action, else 0;
    estimated   otherwise: the logged propensity where the log shows that
                (context, action) pair, else the cross-fitted, calibrated
                multinomial logistic estimate of `pushrl.envs.data.propensity`.
`support_source` says which, so a report never passes an estimate off as known.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from pushrl.envs.common.errors import LoggedDataError
from pushrl.envs.data.logged_data import LoggedData

REGIMES = ("absent", "deterministic", "uniform", "stochastic")
UNIFORM_RTOL = 1e-6
DEFAULT_TAU = 0.01
MIN_REPEATED_CONTEXTS = 20


@dataclass(frozen=True, eq=False)
class LoggingRegime:
    """What the log says about its logging policy.

    Attributes:
        regime: one of REGIMES.
        has_propensity: the log has a propensity column.
        n_rows, n_actions: log size and catalogue size.
        n_contexts: distinct contexts (hashed raw feature tuples).
        n_repeated_contexts: contexts seen in two or more rows.
        n_multi_action_contexts: contexts seen with two or more different actions.
        evidence: one sentence saying why this regime was chosen.
        tau: support threshold τ.
        support: per action (index: action id): logged_rows, supported_share
            (share of contexts with probability > τ), mean_probability,
            min_probability; None when not computed.
        support_source: "given", "exact (...)" or "estimated (...)"; None when not computed.
        full_support_share: share of contexts in which every action has probability > τ.
        warnings: facts a user must be told.
    """

    regime: str
    has_propensity: bool
    n_rows: int
    n_actions: int
    n_contexts: int
    n_repeated_contexts: int
    n_multi_action_contexts: int
    evidence: str
    tau: float = DEFAULT_TAU
    support: pd.DataFrame | None = None
    support_source: str | None = None
    full_support_share: float | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["warnings"] = list(self.warnings)
        if self.support is not None:
            d["support"] = self.support.reset_index().to_dict(orient="records")
        return d

    def to_text(self) -> str:
        lines = [
            f"logging regime: {self.regime} ({self.evidence})",
            f"propensity column: {'present' if self.has_propensity else 'absent'}",
            f"contexts: {self.n_contexts:,} distinct in {self.n_rows:,} rows; "
            f"{self.n_repeated_contexts:,} seen twice or more, "
            f"{self.n_multi_action_contexts:,} with several actions",
        ]
        if self.support is not None:
            lines.append(f"support (probability > tau = {self.tau:g}), {self.support_source}:")
            lines.append(f"  contexts with every action supported: {self.full_support_share:.1%}")
            lines.append(self.support.to_string(float_format=lambda v: f"{v:.4g}"))
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def context_ids(data: LoggedData, columns: tuple[str, ...] | None = None) -> tuple[np.ndarray, int]:
    """(n,) int64 context id per row (first-appearance order) and the number of contexts."""
    cols = list(columns if columns is not None else data.feature_names)
    missing = [c for c in cols if c not in data.frame.columns]
    if missing:
        raise ValueError(f"context columns {missing} are not in the log; it has {list(data.frame.columns)}")
    if not cols:
        return np.zeros(data.n_rounds, dtype=np.int64), 1
    keys = pd.util.hash_pandas_object(data.frame[cols], index=False).to_numpy()
    codes, uniques = pd.factorize(keys)
    return codes.astype(np.int64), len(uniques)


def _context_counts(ctx: np.ndarray, n_ctx: int, action: np.ndarray, n_actions: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows per context, distinct actions per context)."""
    rows = np.bincount(ctx, minlength=n_ctx)
    pairs = np.unique(ctx * n_actions + action)
    distinct = np.bincount(pairs // n_actions, minlength=n_ctx)
    return rows, distinct


def classify_regime(
    data: LoggedData,
    *,
    context_columns: tuple[str, ...] | None = None,
    min_repeated_contexts: int = MIN_REPEATED_CONTEXTS,
) -> LoggingRegime:
    """The regime without the support table (cheap: one hash and a few bincounts)."""
    if isinstance(min_repeated_contexts, bool) or not isinstance(min_repeated_contexts, int) or min_repeated_contexts < 1:
        raise ValueError(f"min_repeated_contexts must be an int >= 1, got {min_repeated_contexts!r}")
    ctx, n_ctx = context_ids(data, context_columns)
    action, n_actions = data.action, data.n_actions
    rows, distinct = _context_counts(ctx, n_ctx, action, n_actions)
    n_rep, n_multi = int((rows >= 2).sum()), int((distinct >= 2).sum())
    p = data.pscore
    warnings: list[str] = []
    n_logged = int(np.unique(action).size)
    if p is not None:
        if np.all(p == 1.0):
            if n_multi:
                bad = np.flatnonzero(distinct[ctx] >= 2)
                raise LoggedDataError(
                    f"every propensity is 1.0 (deterministic logging) but {n_multi} identical "
                    "contexts were logged with different actions",
                    column="propensity",
                    rows=bad,
                    expected="propensities < 1 for a stochastic logging policy, or one action per context",
                    source=data.name,
                )
            regime, evidence = "deterministic", "every logged propensity is 1.0"
        elif np.allclose(p, 1.0 / n_actions, rtol=UNIFORM_RTOL, atol=0):
            regime, evidence = "uniform", f"every propensity is 1/{n_actions}"
        else:
            regime = "stochastic"
            evidence = f"propensities range over [{p.min():.4g}, {p.max():.4g}]"
            ones = int((p == 1.0).sum())
            if ones:
                warnings.append(f"{ones:,} rows ({ones / len(p):.1%}) have propensity 1.0: other actions have no support there")
    else:
        if n_logged == 1:
            regime, evidence = "deterministic", "no propensity column and only one action was ever logged"
        elif n_rep >= min_repeated_contexts and n_multi == 0:
            regime = "deterministic"
            evidence = f"no propensity column, and each of the {n_rep:,} repeated contexts got exactly one action"
        else:
            regime = "absent"
            evidence = "no propensity column"
            if n_multi:
                evidence += f"; {n_multi:,} contexts got several actions, so logging was not deterministic"
            else:
                evidence += f"; only {n_rep} repeated contexts (< {min_repeated_contexts}): determinism cannot be tested"
            warnings.append("IPS-family OPE needs propensities: estimate them explicitly (pushrl.envs.data.propensity) or use DM")
    if regime == "deterministic":
        warnings.append("deterministic logging: IPS-family OPE of any other policy is not identified; use DM")
    if n_logged < n_actions:
        warnings.append(f"{n_actions - n_logged} of {n_actions} catalogue actions never appear in the log")
    return LoggingRegime(regime, p is not None, data.n_rounds, n_actions, n_ctx, n_rep, n_multi, evidence,
                         warnings=tuple(warnings))


def _context_means(ctx: np.ndarray, n_ctx: int, probabilities: np.ndarray) -> np.ndarray:
    """(n_contexts, n_actions) mean of the rows' probabilities per context."""
    counts = np.bincount(ctx, minlength=n_ctx).astype(np.float64)
    out = np.empty((n_ctx, probabilities.shape[1]))
    for a in range(probabilities.shape[1]):
        out[:, a] = np.bincount(ctx, weights=probabilities[:, a], minlength=n_ctx) / counts
    return out


def _observed_pairs(ctx: np.ndarray, action: np.ndarray, n_actions: int, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of `values` per observed (context, action) pair: (flat pair index, mean)."""
    key = ctx * n_actions + action
    uniq, inv = np.unique(key, return_inverse=True)
    sums = np.bincount(inv, weights=values)
    return uniq, sums / np.bincount(inv)


def support_table(
    context_probabilities: np.ndarray, action_ids: np.ndarray, logged_rows: np.ndarray, tau: float
) -> tuple[pd.DataFrame, float]:
    """Per-action support from (n_contexts, n_actions) probabilities; and the full-support share."""
    above = context_probabilities > tau
    table = pd.DataFrame(
        {
            "logged_rows": logged_rows,
            "supported_share": above.mean(axis=0),
            "mean_probability": context_probabilities.mean(axis=0),
            "min_probability": context_probabilities.min(axis=0),
        },
        index=pd.Index(action_ids, name="action"),
    )
    return table, float(above.all(axis=1).mean())


def detect_regime(
    data: LoggedData,
    *,
    tau: float = DEFAULT_TAU,
    probabilities: np.ndarray | None = None,
    support: bool = True,
    context_columns: tuple[str, ...] | None = None,
    min_repeated_contexts: int = MIN_REPEATED_CONTEXTS,
    estimate_config: Any = None,
) -> LoggingRegime:
    """Classify the logging regime and (unless `support=False`) build the support table.

    Args:
        data: the log.
        tau: support threshold τ in [0, 1): an action is supported in a context if its
            logging probability there is > τ.
        probabilities: (n_rounds, n_actions) known logging probabilities (optional).
        support: compute the support table (a stochastic or absent regime without
            `probabilities` fits the propensity model: seconds on a million rows).
        context_columns: raw columns defining a context (default: all features).
        min_repeated_contexts: repeated contexts needed before "one action per
            context" counts as deterministic (no propensity column only).
        estimate_config: a `pushrl.envs.data.propensity.PropensityConfig` for the estimate.
    """
    if not isinstance(tau, int | float) or isinstance(tau, bool) or not 0 <= tau < 1:
        raise ValueError(f"tau must be a number in [0, 1), got {tau!r}")
    base = classify_regime(data, context_columns=context_columns, min_repeated_contexts=min_repeated_contexts)
    if not support:
        return replace(base, tau=float(tau))
    n, a = data.n_rounds, data.n_actions
    ctx, n_ctx = context_ids(data, context_columns)
    action = data.action
    if probabilities is not None:
        probs = np.asarray(probabilities, dtype=np.float64)
        if probs.shape != (n, a) or not np.all(np.isfinite(probs)) or probs.min() < 0 or probs.max() > 1:
            raise ValueError(f"probabilities must be a finite (n_rounds, n_actions) = ({n}, {a}) array in [0, 1], "
                             f"got shape {probs.shape}")
        ctx_p, source = _context_means(ctx, n_ctx, probs), "given"
    elif base.regime == "uniform":
        ctx_p, source = np.full((n_ctx, a), 1.0 / a), "exact (uniform logging)"
    elif base.regime == "deterministic":
        ctx_p = np.zeros((n_ctx, a))
        ctx_p[ctx, action] = 1.0
        source = "exact (deterministic logging: the logged action has probability 1)"
    else:
        from pushrl.envs.data.propensity import PropensityConfig, cross_fit_probabilities

        config = estimate_config or PropensityConfig()
        fit = cross_fit_probabilities(data, config)
        ctx_p = _context_means(ctx, n_ctx, fit.probabilities)
        source = f"estimated ({fit.describe()})"
        if data.pscore is not None:
            pairs, mean_p = _observed_pairs(ctx, action, a, data.pscore)
            ctx_p.reshape(-1)[pairs] = mean_p
            source = "logged propensities where the (context, action) pair was logged, else " + source
    table, full = support_table(ctx_p, data.action_ids, np.bincount(action, minlength=a), float(tau))
    warnings = list(base.warnings)
    weak = table.index[table["supported_share"] < 0.5].tolist()
    if weak:
        shown = ", ".join(map(str, weak[:10])) + (" ..." if len(weak) > 10 else "")
        warnings.append(f"{len(weak)} actions have probability > {tau:g} in under half the contexts: {shown}")
    return replace(base, tau=float(tau), support=table, support_source=source, full_support_share=full,
                 warnings=tuple(warnings))

