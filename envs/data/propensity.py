"""Estimate missing propensities, only when asked: P(action | context) from the log itself.

Model: a multinomial logistic regression of the logged action on the encoded
context (`ContextEncoder`: standardised numbers, one-hot categories; fitted on
all rows, which uses no labels), minimising

    Σ_i -log softmax(x_i W + b)_{a_i} + (l2 / 2) ‖W‖²_F      (b not penalised)

with L-BFGS (numpy), i.e. scikit-learn's `LogisticRegression(C=1/l2)`.

Cross-fitting: rows go to K seeded folds; row i's probabilities come from the
model fitted on the other K - 1 folds (each fold's fit warm-starts from the
previous fold's solution; the objective is convex, so this changes the speed,
not the optimum). Calibration (`calibration="temperature"`): fold k's logits
are divided by a temperature T_k fitted (Newton on 1/T, maximum likelihood) on
the out-of-fold logits of the *other* folds, so no row calibrates itself; at
most `calibration_rows` rows (seeded sample) are used per fit.

Quality: expected calibration error pooled over every (row, action) pair,
ECE = Σ_bins (n_b / N) |mean(1[a_i = a]) - mean(p̂)|, with bins at quantiles of
p̂ (`binning="quantile"`, the default: with many actions most p̂ are small and
equal-width bins would put nearly all pairs in one bin) or equal-width.

Clipping and trimming: the estimated propensity of the logged action is raised
to at least `clip`; rows whose estimate is below `trim` are dropped from the
returned log. Both are counted in the note that the returned LoggedData carries
("propensities estimated (...)"), so every downstream report can say so.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pushrl.envs.common.atomic import write_with
from pushrl.envs.common.errors import LoggedDataError
from pushrl.envs.common.probabilities import softmax
from pushrl.envs.data.features import ContextEncoder
from pushrl.envs.data.logged_data import LoggedData

CALIBRATIONS = ("temperature", "none")
BINNINGS = ("quantile", "uniform")
ECE_WARNING = 0.02
CHUNK_CELLS = 2_000_000  # rows x actions per block: bounds the memory of one loss evaluation


@dataclass(frozen=True)
class PropensityConfig:
    """How propensities are estimated.

    Attributes:
        n_folds: K for cross-fitting (>= 2).
        l2: L2 penalty on the weights (scikit-learn's C = 1 / l2).
        calibration: "temperature" (per-fold temperature fitted on the other folds) or "none".
        clip: the logged action's estimated propensity is raised to at least this.
        trim: rows whose estimated propensity is below this are dropped (0: none).
        seed: folds and calibration samples.
        max_iter, tol: L-BFGS iterations and gradient tolerance.
        n_bins, binning: reliability bins ("quantile" or "uniform").
        calibration_rows: rows used to fit each temperature (seeded sample).
    """

    n_folds: int = 5
    l2: float = 1.0
    calibration: str = "temperature"
    clip: float = 0.0
    trim: float = 0.0
    seed: int = 0
    max_iter: int = 500
    tol: float = 1e-6
    n_bins: int = 15
    binning: str = "quantile"
    calibration_rows: int = 200_000

    def __post_init__(self) -> None:
        for name, lo in (("n_folds", 2), ("max_iter", 1), ("n_bins", 1), ("calibration_rows", 100)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValueError(f"PropensityConfig.{name} must be an int >= {lo}, got {v!r}")
        if not self.l2 >= 0 or not np.isfinite(self.l2):
            raise ValueError(f"PropensityConfig.l2 must be a finite number >= 0, got {self.l2!r}")
        if not self.tol > 0:
            raise ValueError(f"PropensityConfig.tol must be > 0, got {self.tol!r}")
        for name in ("clip", "trim"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"PropensityConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"PropensityConfig.calibration must be one of {CALIBRATIONS}, got {self.calibration!r}")
        if self.binning not in BINNINGS:
            raise ValueError(f"PropensityConfig.binning must be one of {BINNINGS}, got {self.binning!r}")


# -- multinomial logistic regression ---------------------------------------------------
@dataclass(frozen=True, eq=False)
class MultinomialLogit:
    """A fitted model: logits = x @ coef + intercept. coef (d, A), intercept (A,)."""

    coef: np.ndarray
    intercept: np.ndarray
    n_iter: int
    converged: bool

    def logits(self, x: np.ndarray) -> np.ndarray:
        """(n, A) logits of encoded contexts x (n, d)."""
        return np.asarray(x, dtype=np.float64) @ self.coef + self.intercept

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, A) probabilities, rows sum to 1."""
        return softmax(self.logits(x))


def _chunk_rows(n_classes: int) -> int:
    return max(1024, CHUNK_CELLS // max(n_classes, 1))


def _loss_grad(theta: np.ndarray, x: np.ndarray, y: np.ndarray, n_classes: int, l2: float) -> tuple[float, np.ndarray]:
    """Objective / n and its gradient, in row blocks of bounded memory."""
    n, d = x.shape
    w = theta[: d * n_classes].reshape(d, n_classes)
    b = theta[d * n_classes:]
    loss, gw, gb = 0.0, np.zeros_like(w), np.zeros(n_classes)
    step = _chunk_rows(n_classes)
    for lo in range(0, n, step):  # class-major (A, m) blocks: reductions over classes are then elementwise
        xc, yc = x[lo:lo + step], y[lo:lo + step]
        zt = w.T @ xc.T
        zt += b[:, None]
        zt -= zt.max(axis=0)
        rows = np.arange(len(yc))
        zy = zt[yc, rows]
        np.exp(zt, out=zt)
        s = zt.sum(axis=0)
        loss += float(np.log(s).sum() - zy.sum())
        zt /= s
        zt[yc, rows] -= 1.0
        gw += (zt @ xc).T
        gb += zt.sum(axis=1)
    loss = (loss + 0.5 * l2 * float(np.sum(w * w))) / n
    gw = (gw + l2 * w) / n
    return loss, np.concatenate([gw.ravel(), gb / n])


def fit_multinomial_logit(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    l2: float = 1.0,
    max_iter: int = 500,
    tol: float = 1e-6,
    init: MultinomialLogit | None = None,
) -> MultinomialLogit:
    """L2-penalised multinomial logistic regression of y (n,) in [0, n_classes) on x (n, d)."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"x must be (n, d) and y (n,), got {x.shape} and {y.shape}")
    if y.size == 0 or y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"y must be non-empty class indices in [0, {n_classes}), got range "
                         f"[{y.min() if y.size else None}, {y.max() if y.size else None}]")
    d = x.shape[1]
    if init is not None:
        theta0 = np.concatenate([init.coef.ravel(), init.intercept])
    else:
        prior = np.bincount(y, minlength=n_classes) + 1.0
        theta0 = np.concatenate([np.zeros(d * n_classes), np.log(prior / prior.sum())])
    fun = lambda t: _loss_grad(t, x, y, n_classes, float(l2))  # noqa: E731
    theta, n_iter, converged = minimize_lbfgs(fun, theta0, max_iter, tol)
    return MultinomialLogit(theta[: d * n_classes].reshape(d, n_classes).copy(), theta[d * n_classes:].copy(),
                            n_iter, converged)


def minimize_lbfgs(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    theta0: np.ndarray,
    max_iter: int = 500,
    tol: float = 1e-6,
    memory: int = 10,
) -> tuple[np.ndarray, int, bool]:
    """L-BFGS (two-loop recursion, Armijo backtracking) for a smooth convex `fun -> (value, gradient)`.

    Stops when max |gradient| <= tol or the value stops changing (relative 1e-13).
    Returns (argmin, iterations, converged). Plain numpy: scipy's L-BFGS-B calls
    LAPACK on tiny matrices every iteration, which is slow under a threaded BLAS.
    """
    theta = np.array(theta0, dtype=np.float64)
    f, g = fun(theta)
    history: deque[tuple[np.ndarray, np.ndarray, float]] = deque(maxlen=memory)
    for it in range(max_iter):
        if np.max(np.abs(g)) <= tol:
            return theta, it, True
        q, alphas = g.copy(), []
        for s, yv, rho in reversed(history):
            alpha = rho * float(s @ q)
            alphas.append(alpha)
            q -= alpha * yv
        if history:
            s, yv, _ = history[-1]
            q *= float(s @ yv) / float(yv @ yv)
        else:
            q /= max(1.0, float(np.linalg.norm(g)))
        for (s, yv, rho), alpha in zip(history, reversed(alphas), strict=True):
            q += s * (alpha - rho * float(yv @ q))
        direction = -q
        slope = float(g @ direction)
        if slope >= 0:  # not a descent direction: restart from the gradient
            history.clear()
            direction = -g / max(1.0, float(np.linalg.norm(g)))
            slope = float(g @ direction)
        step = 1.0
        while True:
            new = theta + step * direction
            f_new, g_new = fun(new)
            if f_new <= f + 1e-4 * step * slope:
                break
            step *= 0.5
            if step < 1e-12:
                return theta, it, False
        s, yv = new - theta, g_new - g
        sy = float(s @ yv)
        if sy > 1e-12 * float(yv @ yv):
            history.append((s, yv, 1.0 / sy))
        done = abs(f - f_new) <= 1e-13 * max(abs(f), abs(f_new), 1.0)
        theta, f, g = new, f_new, g_new
        if done:
            return theta, it + 1, True
    return theta, max_iter, bool(np.max(np.abs(g)) <= tol)


def fit_temperature(logits: np.ndarray, y: np.ndarray, max_iter: int = 50) -> float:
    """Temperature T maximising the likelihood of softmax(logits / T): safeguarded Newton on 1/T."""
    rows = np.arange(len(y))
    zy = logits[rows, y]

    def nll_derivs(beta: float) -> tuple[float, float, float]:
        m = (logits * beta).max(axis=1, keepdims=True)
        p = np.exp(logits * beta - m)
        z = p.sum(axis=1)
        p /= z[:, None]
        ez = (p * logits).sum(axis=1)
        var = (p * logits * logits).sum(axis=1) - ez * ez
        lse = np.log(z) + m[:, 0]
        return float(np.mean(lse - beta * zy)), float(np.mean(ez - zy)), float(np.mean(var))

    beta = 1.0
    f, g, h = nll_derivs(beta)
    for _ in range(max_iter):
        step = g / h if h > 1e-12 else np.sign(g) * 0.5 * beta
        for _ in range(30):  # halve until the likelihood improves and 1/T stays positive
            new = beta - step
            if new > 1e-3:
                f_new, g_new, h_new = nll_derivs(new)
                if f_new <= f + 1e-15:
                    break
            step /= 2
        else:
            break
        converged = abs(new - beta) < 1e-10 * max(1.0, beta)
        beta, f, g, h = new, f_new, g_new, h_new
        if converged:
            break
    return 1.0 / beta


# -- calibration quality ---------------------------------------------------------------
def reliability_table(
    probabilities: np.ndarray, action: np.ndarray, n_bins: int = 15, binning: str = "quantile", seed: int = 0
) -> tuple[pd.DataFrame, float]:
    """Reliability bins over every (row, action) pair and the pooled ECE.

    Returns a table (one row per non-empty bin: lower, upper, count,
    mean_predicted, observed_rate) and ECE = Σ (count / N) |observed - predicted|.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n, a = probabilities.shape
    if binning not in BINNINGS:
        raise ValueError(f"binning must be one of {BINNINGS}, got {binning!r}")
    if binning == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
        sample = probabilities[rng.choice(n, size=min(n, max(1, 1_000_000 // a)), replace=False)].ravel()
        edges = np.unique(np.concatenate([[0.0], np.quantile(sample, np.linspace(0, 1, n_bins + 1)[1:-1]), [1.0]]))
    inner = edges[1:-1]
    k = len(edges) - 1
    count, sum_p, hits = np.zeros(k), np.zeros(k), np.zeros(k)
    step = _chunk_rows(a)
    for lo in range(0, n, step):
        pc = probabilities[lo:lo + step]
        bins = np.searchsorted(inner, pc, side="right")
        count += np.bincount(bins.ravel(), minlength=k)
        sum_p += np.bincount(bins.ravel(), weights=pc.ravel(), minlength=k)
        hits += np.bincount(bins[np.arange(len(pc)), action[lo:lo + step]], minlength=k)
    keep = count > 0
    table = pd.DataFrame({
        "lower": edges[:-1][keep], "upper": edges[1:][keep], "count": count[keep].astype(np.int64),
        "mean_predicted": sum_p[keep] / count[keep], "observed_rate": hits[keep] / count[keep],
    })
    ece = float(np.abs(hits - sum_p).sum() / count.sum())
    return table, ece


def write_reliability_png(table: pd.DataFrame, path: str | Path, title: str = "propensity reliability") -> Path:
    """Reliability plot (predicted vs observed, log axes) written atomically as PNG (Agg, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5))
    ax = FigureCanvasAgg(fig).figure.add_subplot(1, 1, 1)
    lo = max(float(min(table["mean_predicted"].min(), table["observed_rate"].replace(0, np.nan).min())), 1e-4)
    ax.plot([lo, 1], [lo, 1], color="grey", linestyle="--", label="perfect calibration")
    ax.plot(table["mean_predicted"], table["observed_rate"].clip(lower=lo), marker="o", label="estimated propensities")
    ax.set(xscale="log", yscale="log", xlabel="mean estimated P(action | context)", ylabel="observed", title=title)
    ax.legend(loc="upper left")
    return write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))


# -- cross-fitting ---------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CrossFit:
    """Out-of-fold calibrated P̂(action | context) (n, A), rows sum to 1; folds (n,); per-fold
    temperatures (1.0 without calibration) and L-BFGS iterations; the encoder and settings used."""

    probabilities: np.ndarray
    folds: np.ndarray
    temperatures: tuple[float, ...]
    n_iter: tuple[int, ...]
    encoder: ContextEncoder
    config: PropensityConfig

    def describe(self) -> str:
        c = self.config
        text = f"cross-fitted multinomial logistic regression, {c.n_folds} folds, seed {c.seed}, L2 {c.l2:g}"
        if c.calibration == "temperature":
            text += f", temperature scaling T in [{min(self.temperatures):.3g}, {max(self.temperatures):.3g}]"
        return text


def encode_contexts(data: LoggedData) -> tuple[np.ndarray, ContextEncoder]:
    """(n, d) encoded contexts of every row and the encoder (fitted on all rows: no labels used)."""
    enc = ContextEncoder.fit(data.frame, data.columns.numeric_features, data.columns.categorical_features)
    return enc.transform(data.frame), enc


def fold_assignment(n: int, n_folds: int, seed: int) -> np.ndarray:
    """(n,) seeded fold index of each row, fold sizes differ by at most one."""
    if n < n_folds:
        raise ValueError(f"cross-fitting needs at least n_folds = {n_folds} rows, got {n}")
    perm = np.random.default_rng(np.random.SeedSequence([seed, 7])).permutation(n)
    folds = np.empty(n, dtype=np.int64)
    folds[perm] = np.arange(n) % n_folds
    return folds


def cross_fit_probabilities(data: LoggedData, config: PropensityConfig | None = None) -> CrossFit:
    """Out-of-fold calibrated P̂(action | context) for every (row, action); ignores logged propensities."""
    config = config or PropensityConfig()
    x, enc = encode_contexts(data)
    y, a = data.action, data.n_actions
    folds = fold_assignment(len(y), config.n_folds, config.seed)
    logits = np.empty((len(y), a))
    model, iters = None, []
    for k in range(config.n_folds):
        train, test = folds != k, folds == k
        model = fit_multinomial_logit(x[train], y[train], a, config.l2, config.max_iter, config.tol, init=model)
        logits[test] = model.logits(x[test])
        iters.append(model.n_iter)
    temps = [1.0] * config.n_folds
    if config.calibration == "temperature":
        rng = np.random.default_rng(np.random.SeedSequence([config.seed, 9]))
        for k in range(config.n_folds):
            other = np.flatnonzero(folds != k)
            if other.size > config.calibration_rows:
                other = np.sort(rng.choice(other, size=config.calibration_rows, replace=False))
            temps[k] = fit_temperature(logits[other], y[other])
        logits /= np.asarray(temps)[folds][:, None]
    softmax(logits, out=logits)
    return CrossFit(logits, folds, tuple(temps), tuple(iters), enc, config)


# -- the user-facing estimate ------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PropensityEstimate:
    """Estimated propensities and their quality.

    Attributes:
        probabilities: (n, A) out-of-fold calibrated P̂(action | context), unclipped.
        pscore: (n,) estimated propensity of the logged action, clipped at config.clip.
        ece: pooled expected calibration error (see module docstring).
        reliability: the reliability table behind it.
        n_clipped: rows raised to config.clip.
        kept: (n,) False for rows trimmed (estimate < config.trim).
        data: the kept rows with `propensity` = pscore and the note below in `notes`.
        note: "propensities estimated (...)".
        fit: the cross-fit (folds, temperatures, encoder).
        warnings: facts a user must be told.
    """

    probabilities: np.ndarray
    pscore: np.ndarray
    ece: float
    reliability: pd.DataFrame
    n_clipped: int
    kept: np.ndarray
    data: LoggedData
    note: str
    fit: CrossFit
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "note": self.note, "ece": self.ece, "n_clipped": self.n_clipped, "n_trimmed": int((~self.kept).sum()),
            "temperatures": list(self.fit.temperatures), "n_iter": list(self.fit.n_iter),
            "pscore": {"min": float(self.pscore.min()), "mean": float(self.pscore.mean()), "max": float(self.pscore.max())},
            "reliability": self.reliability.to_dict(orient="records"), "warnings": list(self.warnings),
        }


def estimate_propensities(
    data: LoggedData, config: PropensityConfig | None = None, *, replace_logged: bool = False
) -> PropensityEstimate:
    """Estimate P(logged action | context) for a log without propensities.

    Refuses a log that already has propensities (unless `replace_logged`) and a
    deterministic log (one action per repeated context, or all propensities 1.0):
    there the estimate would be 0/1 and IPS of any other policy is not identified.
    """
    from pushrl.envs.data.regime import classify_regime

    config = config or PropensityConfig()
    if data.pscore is not None and not replace_logged:
        raise ValueError(f"log '{data.name}' already has logged propensities; estimating would discard them "
                         "(pass replace_logged=True to do it anyway)")
    regime = classify_regime(data)
    if regime.regime == "deterministic":
        raise LoggedDataError(
            f"logging is deterministic ({regime.evidence}): propensities were not estimated, "
            "because they would be 0 or 1 and IPS of any other policy is not identified; use the direct method (DM)",
            column="action",
            expected="a stochastic logging policy (several actions logged for the same context)",
            source=data.name,
        )
    fit = cross_fit_probabilities(data, config)
    probs, action = fit.probabilities, data.action
    raw = probs[np.arange(len(action)), action]
    pscore, n_clipped, kept = np.maximum(raw, config.clip), int((raw < config.clip).sum()), raw >= config.trim
    reliability, ece = reliability_table(probs, action, config.n_bins, config.binning, config.seed)
    parts = [fit.describe()]
    if config.clip > 0:
        parts.append(f"clipped at {config.clip:g}: {n_clipped:,} rows")
    if config.trim > 0:
        parts.append(f"trimmed below {config.trim:g}: {int((~kept).sum()):,} rows dropped")
    parts.append(f"out-of-fold ECE {ece:.4f}")
    note = f"propensities estimated ({'; '.join(parts)})"
    warnings = []
    if np.mean(raw > 0.99) > 0.9:
        warnings.append("the estimated logging policy is nearly deterministic (P̂ > 0.99 on over 90% of rows): "
                        "IPS will rest on very few rows")
    if ece > ECE_WARNING:
        warnings.append(f"estimated propensities are poorly calibrated (ECE {ece:.3f} > {ECE_WARNING}): the "
                        "logging policy may not be a softmax of linear scores (e.g. epsilon-greedy); IPS may be biased")
    if not kept.any():
        raise ValueError(f"trim={config.trim} removes every row (largest estimated propensity {raw.max():.4g})")
    frame = data.frame.assign(propensity=pscore)
    estimated = replace(data, frame=frame, columns=replace(data.columns, has_propensity=True)).with_notes(note)
    if not kept.all():
        estimated = estimated.subset(np.flatnonzero(kept))
    return PropensityEstimate(probs, pscore, ece, reliability, n_clipped, kept, estimated, note, fit, tuple(warnings))
