"""Held-out report of a response model against two baselines fitted on the same training split.

Baselines (both fitted on `split.train` only, never on validation or test):

- `EmpiricalRate`: each promotion's click rate, its log-odds shrunk toward the
  global training rate by the same Gaussian prior the response model puts on
  its promotion bias (precision `l2`; `l2=0` gives the raw rate, clipped).
- `LogisticRegression`: intercept + encoded context (ContextEncoder fitted on
  train, every numeric feature including recent pushes, clipped to
  [-clip, clip] like the model's input) + one-hot promotion + one-hot position,
  L2 penalty `l2 / 2 |w|^2` on the summed loss (sklearn's C = 1 / l2),
  fitted to convergence by damped Newton steps (numpy).

The table also carries the constant training base rate as a reference row and,
for each row, a paired bootstrap 95% interval of (its log loss - the model's).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pushrl.envs.common.atomic import write_text, write_with
from pushrl.envs.common.probabilities import EPS, logit, sigmoid
from pushrl.envs.data.features import ContextEncoder
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.split import Split
from pushrl.envs.model.metrics import auc, log_loss, reliability
from pushrl.envs.model.response_model import ResponseModel


class EmpiricalRate:
    """Per-promotion rate with log-odds b_a = argmin sum_i BCE(o + b_a) + l2/2 b_a^2, o = global log-odds."""

    def __init__(self, l2: float = 10.0, reward: str | None = None) -> None:
        if not l2 >= 0:
            raise ValueError(f"EmpiricalRate.l2: expected a number >= 0, got {l2!r}")
        self.l2 = float(l2)
        self.reward = reward
        self.rates: np.ndarray | None = None

    def fit(self, data: LoggedData) -> EmpiricalRate:
        y = data.reward(self.reward)
        n = np.bincount(data.action, minlength=data.n_actions).astype(np.float64)
        c = np.bincount(data.action, weights=y, minlength=data.n_actions)
        o = logit(float(y.mean()))
        if self.l2 == 0:
            self.rates = np.clip(np.where(n > 0, c / np.maximum(n, 1), y.mean()), EPS, 1 - EPS)
            return self
        b = np.zeros(data.n_actions)
        for _ in range(100):  # Newton on the convex 1-D problems, all promotions at once
            p = sigmoid(o + b)
            step = (n * p - c + self.l2 * b) / (n * p * (1 - p) + self.l2)
            b -= step
            if np.max(np.abs(step)) < 1e-12:
                break
        self.rates = sigmoid(o + b)
        return self

    def predict_log(self, data: LoggedData) -> np.ndarray:
        if self.rates is None:
            raise ValueError("EmpiricalRate.predict_log called before fit")
        return self.rates[data.action]


class LogisticRegression:
    """L2-penalised logistic regression (unpenalised intercept) fitted by damped Newton steps."""

    def __init__(self, l2: float = 10.0, clip: float = 5.0, max_iter: int = 100, tol: float = 1e-10,
                 reward: str | None = None) -> None:
        if not l2 >= 0:
            raise ValueError(f"LogisticRegression.l2: expected a number >= 0, got {l2!r}")
        self.l2, self.clip, self.max_iter, self.tol, self.reward = float(l2), clip, max_iter, tol, reward
        self.encoder: ContextEncoder | None = None
        self.coef: np.ndarray | None = None  # (p,) without intercept
        self.intercept = 0.0
        self.n_iter = 0

    def design(self, data: LoggedData) -> np.ndarray:
        """(n, d + A + n_positions) encoded context, one-hot promotion, one-hot position."""
        if self.encoder is None:
            raise ValueError("LogisticRegression.design called before fit")
        x = np.clip(self.encoder.transform(data.frame), -self.clip, self.clip)
        a = np.eye(data.n_actions)[data.action]
        p = np.eye(data.n_positions)[data.position]
        return np.hstack([x, a, p])

    def fit(self, data: LoggedData) -> LogisticRegression:
        self.encoder = ContextEncoder.fit(data.frame, data.columns.numeric_features, data.columns.categorical_features)
        return self.fit_arrays(self.design(data), data.reward(self.reward))

    def fit_arrays(self, x: np.ndarray, y: np.ndarray) -> LogisticRegression:
        """Minimise sum_i BCE(b0 + x_i w) + l2/2 |w|^2 (x: (n, p), y: (n,) in {0, 1})."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        xi = np.hstack([np.ones((len(x), 1)), x])
        beta = np.zeros(xi.shape[1])
        beta[0] = logit(float(y.mean()))
        pen = np.full(xi.shape[1], self.l2)
        pen[0] = 0.0

        def objective(b: np.ndarray) -> float:
            z = xi @ b
            return float(np.sum(np.logaddexp(0, z) - y * z) + 0.5 * np.sum(pen * b * b))

        f = objective(beta)
        for it in range(1, self.max_iter + 1):
            p = sigmoid(xi @ beta)
            grad = xi.T @ (p - y) + pen * beta
            hess = (xi * (p * (1 - p))[:, None]).T @ xi + np.diag(pen) + 1e-10 * np.eye(len(beta))
            step = np.linalg.solve(hess, grad)
            t = 1.0
            while t > 1e-8:  # backtracking keeps each step a descent step
                f_new = objective(beta - t * step)
                if f_new <= f + 1e-12 * abs(f):
                    break
                t *= 0.5
            beta, f = beta - t * step, f_new
            self.n_iter = it
            if np.max(np.abs(t * step)) < self.tol:
                break
        self.intercept, self.coef = float(beta[0]), beta[1:]
        return self

    def predict_arrays(self, x: np.ndarray) -> np.ndarray:
        if self.coef is None:
            raise ValueError("LogisticRegression.predict called before fit")
        return sigmoid(self.intercept + np.asarray(x, dtype=np.float64) @ self.coef)

    def predict_log(self, data: LoggedData) -> np.ndarray:
        return self.predict_arrays(self.design(data))


def paired_bootstrap_ci(y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, n_boot: int = 1000, seed: int = 0,
                        level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of log_loss(p_a) - log_loss(p_b) over rows resampled with replacement."""
    rng = np.random.default_rng(seed)
    pa, pb = np.clip(p_a, 1e-12, 1 - 1e-12), np.clip(p_b, 1e-12, 1 - 1e-12)
    diff = -(y * np.log(pa) + (1 - y) * np.log1p(-pa)) + (y * np.log(pb) + (1 - y) * np.log1p(-pb))
    stats = np.empty(n_boot)
    for i in range(n_boot):
        stats[i] = diff[rng.integers(0, len(y), len(y))].mean()
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class ModelReport:
    """Held-out metrics: `table` (one row per predictor), the reliability plot and notes."""

    table: pd.DataFrame
    plot_path: Path
    notes: tuple[str, ...]

    def to_markdown(self, digits: int = 5) -> str:
        cols = ["predictor", *self.table.columns]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for name, row in self.table.iterrows():
            cells = [f"{v:.{digits}g}" if isinstance(v, float) else str(v) for v in row.to_numpy()]
            lines.append("| " + " | ".join([str(name), *cells]) + " |")
        return "\n".join(lines + [""] + [f"- {n}" for n in self.notes]) + "\n"


def _plot(curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], path: Path, title: str) -> Path:
    import matplotlib.pyplot as plt  # the backend is the caller's (experiments/plots.py sets Agg)

    fig, ax = plt.subplots(figsize=(5.5, 5))
    top = max(max(float(m.max()), float(o.max())) for m, o, _ in curves.values()) * 1.05 or 1.0
    ax.plot([0, top], [0, top], color="grey", lw=1, ls="--", label="perfect calibration")
    for name, (mean_p, obs, _) in curves.items():
        ax.plot(mean_p, obs, marker="o", ms=4, lw=1, label=name)
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="mean predicted", ylabel="observed rate", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        return write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)


def model_report(model: ResponseModel, split: Split, out_dir: str | Path, n_bins: int = 10, strategy: str = "equal_mass",
                 baseline_l2: float | None = None, n_boot: int = 1000, seed: int = 0,
                 reward: str | None = None) -> ModelReport:
    """Evaluate `model.predict_log` on `split.test` against baselines fitted on `split.train`, for one binary
    `reward` (default: the model's first). The first reward writes `reliability.png` and `model_report.md`,
    any other `reliability_<reward>.png` and `model_report_<reward>.md` (atomically) into `out_dir`.

    `baseline_l2` defaults to the model's own prior precision (`model.config.l2`).
    """
    first = reward is None or reward == model.reward_names[0]
    reward = model.reward_names[0] if reward is None else reward
    if reward not in model.reward_names:
        raise ValueError(f"reward {reward!r} is not one of the model's rewards {list(model.reward_names)}")
    l2 = float(model.config.l2 if baseline_l2 is None else baseline_l2)
    clip = float(getattr(model.config, "context_clip", 5.0))
    test, train = split.test, split.train
    y = test.reward(reward)
    preds = {
        "response model": model.predict_log(test)[reward],
        "empirical rate": EmpiricalRate(l2, reward).fit(train).predict_log(test),
        "logistic regression": LogisticRegression(l2, clip, reward=reward).fit(train).predict_log(test),
        "base rate (reference)": np.full(len(y), float(train.reward(reward).mean())),
    }
    rows, curves = {}, {}
    model_ll = log_loss(y, preds["response model"])
    for name, p in preds.items():
        rel = reliability(y, p, n_bins, strategy)
        lo, hi = paired_bootstrap_ci(y, p, preds["response model"], n_boot, seed)
        ll = log_loss(y, p)
        rows[name] = {
            "log_loss": ll,
            "auc": auc(y, p),
            "ece": rel.ece,
            "brier": float(np.mean((p - y) ** 2)),
            "mean_pred": float(np.mean(p)),
            "ll_minus_model": ll - model_ll,
            "ci95_low": lo,
            "ci95_high": hi,
        }
        curves[name] = (rel.mean_predicted, rel.observed_rate, rel.count)
    table = pd.DataFrame.from_dict(rows, orient="index")
    notes = (
        f"log {test.name}: {len(y)} test rows, {int(y.sum())} positive {reward!r} (rate {y.mean():.5f}); "
        f"train {train.n_rounds} rows, {int(train.reward(reward).sum())} positive; split: {split.method}",
        f"ECE over {n_bins} {strategy.replace('_', '-')} bins; AUC from average ranks (NaN if one class)",
        f"baselines fitted on train only with the model's prior precision l2={l2:g} "
        "(empirical rate: shrinkage of each promotion's log-odds toward the global rate; "
        f"logistic regression: L2 on every weight but the intercept, context clipped to +-{clip:g})",
        f"ll_minus_model: row log loss minus the model's; ci95: paired bootstrap ({n_boot} resamples, seed {seed})",
    )
    out = Path(out_dir)
    suffix = "" if first else f"_{reward}"
    plot = _plot(curves, out / f"reliability{suffix}.png",
                 f"{reward}: reliability on {test.name} ({strategy.replace('_', '-')})")
    report = ModelReport(table, plot, notes)
    write_text(out / f"model_report{suffix}.md", report.to_markdown())
    return report


def amount_report(model: ResponseModel, split: Split, reward: str) -> dict[str, float]:
    """Held-out check of a non-negative amount (money) head: mean predicted vs observed, and the model's
    Poisson deviance and RMSE against the training mean's (lower is better)."""
    y, p = split.test.reward(reward), model.predict_log(split.test)[reward]
    base = np.full(len(y), float(split.train.reward(reward).mean()))

    def deviance(q: np.ndarray) -> float:
        q = np.maximum(q, 1e-12)
        return float(2 * np.mean(np.where(y > 0, y * np.log(np.maximum(y, 1e-300) / q), 0.0) - (y - q)))

    return {"mean_observed": float(y.mean()), "mean_pred": float(p.mean()), "deviance": deviance(p),
            "deviance_base": deviance(base), "rmse": float(np.sqrt(np.mean((p - y) ** 2))),
            "rmse_base": float(np.sqrt(np.mean((base - y) ** 2)))}


def main(argv: list[str] | None = None) -> None:
    """`python -m pushrl.envs.model.model_report {obd-all,obd-men,obd-women,synthetic} OUT_DIR [--ips] [--seed N]`."""
    import argparse

    import torch

    from pushrl.envs.data.obd import load_obd
    from pushrl.envs.data.split import split_log
    from pushrl.envs.data.synthetic import SyntheticConfig, generate_log
    from pushrl.envs.model.response_model import ResponseModelConfig

    parser = argparse.ArgumentParser(prog="python -m pushrl.envs.model.model_report", description=main.__doc__)
    parser.add_argument("log", choices=["obd-all", "obd-men", "obd-women", "synthetic"])
    parser.add_argument("out_dir")
    parser.add_argument("--ips", action="store_true", help="fit with ips_weighted=True")
    parser.add_argument("--seed", type=int, default=0, help="model seed")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.log == "synthetic":
        data, _ = generate_log(SyntheticConfig(n_rows=50_000, n_users=5_000, n_actions=10, n_positions=3, seed=3))
    else:
        data = load_obd(args.log.split("-")[1])
    split = split_log(data)
    model = ResponseModel.fit(split.train, split.validation, ResponseModelConfig(ips_weighted=args.ips, seed=args.seed))
    report = model_report(model, split, args.out_dir)
    kept = [h["epoch"] for h in model.history[model.reward_names[0]] if h["kept"]]
    print(report.to_markdown() + f"- click head: epochs kept {kept}; plot {report.plot_path}")


if __name__ == "__main__":
    main()
