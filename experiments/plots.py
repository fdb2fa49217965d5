"""Plots written next to the metrics (matplotlib, Agg, atomic)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pushrl.envs.common.atomic import write_with  # noqa: E402


def save_figure(fig, path: Path) -> Path:
    """Write the figure as a PNG atomically (temp file, then rename) and close it."""
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path


def fidelity_plot(table: pd.DataFrame, path: Path, title: str) -> Path:
    """Logged mean (95% CI) vs the simulator's replay, one panel (own x axis) per reward when the table has
    a `reward` column: rewards on different scales (a rate and an amount) each get their own axis."""
    groups = list(table.groupby("reward", sort=False)) if "reward" in table.columns else [("mean reward", table)]
    fig, axes = plt.subplots(len(groups), 1, figsize=(6, 1.2 + 0.45 * len(table) + 0.6 * len(groups)), squeeze=False)
    for ax, (reward, rows) in zip(axes[:, 0], groups, strict=True):
        y = np.arange(len(rows))
        ax.errorbar(rows["logged"], y, xerr=[rows["logged"] - rows["ci_low"], rows["ci_high"] - rows["logged"]],
                    fmt="o", color="black", label="logged (95% CI)")
        ax.scatter(rows["simulated"], y, marker="x", color="tab:red", s=60, label="simulator", zorder=3)
        ax.set_yticks(y, rows["scope"])
        ax.set_xlabel(f"mean {reward}")
    axes[0, 0].set_title(title, fontsize=9)
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def ope_plot(ope: pd.DataFrame, logging, estimator: str, path: Path, title: str) -> Path:
    rows = ope[ope["estimator"] == estimator].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(rows) + 1.5))
    y = np.arange(len(rows))
    ax.errorbar(rows["value"], y, xerr=[rows["value"] - rows["ci_low"], rows["ci_high"] - rows["value"]], fmt="o")
    ax.axvspan(logging.ci_low, logging.ci_high, color="grey", alpha=0.2, label="logging policy 95% CI")
    ax.axvline(logging.value, color="grey")
    ax.set_yticks(y, rows["policy"])
    ax.set_xlabel(f"estimated value ({estimator}, 95% bootstrap CI)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def learning_curves(curves: dict[str, np.ndarray], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for name, c in curves.items():
        c = np.asarray(c, dtype=float)
        w = max(1, len(c) // 20)
        smooth = np.convolve(c, np.ones(w) / w, mode="valid")
        ax.plot(np.arange(len(smooth)) + w, smooth, label=name)
    ax.set_xlabel("batch")
    ax.set_ylabel("mean reward (moving average)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def regret_curves(curves: dict[str, np.ndarray], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for name, c in curves.items():
        ax.plot(np.arange(1, len(c) + 1), c, label=name)
    ax.set_xlabel("round")
    ax.set_ylabel("cumulative expected regret")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def power_curve(days: np.ndarray, power: np.ndarray, target: float, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(days, power, marker="o", ms=3)
    ax.axhline(target, color="grey", ls="--", label=f"target power {target:.0%}")
    ax.set_xlabel("days of traffic")
    ax.set_ylabel("power")
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def synthetic_fidelity_plot(table: pd.DataFrame, logging_ci: tuple[float, float, float], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    y = np.arange(len(table))
    ax.scatter(table["true"], y, marker="o", color="black", label="truth", zorder=3)
    ax.scatter(table["simulated"], y, marker="x", color="tab:red", s=60, label="learned simulator", zorder=3)
    for yi, t in zip(y, table["true"], strict=True):
        ax.plot([0.9 * t, 1.1 * t], [yi, yi], color="grey", lw=4, alpha=0.3)
    m, lo, hi = logging_ci
    ax.axvspan(lo, hi, color="tab:blue", alpha=0.1, label="logged click rate 95% CI")
    ax.set_yticks(y, table["policy"])
    ax.set_xlabel("value (click rate); grey band: truth +-10%")
    ax.set_title("learned simulator vs the synthetic truth", fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def cold_start_plot(tables: dict[str, pd.DataFrame], path: Path) -> Path:
    """Never-logged promotions: true click rate, the feature-only score per model setting, the average-promotion guess."""
    first = next(iter(tables.values()))
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    y = np.arange(len(first))
    for yi, t in zip(y, first["true_rate"], strict=True):
        ax.plot([0.8 * t, 1.2 * t], [yi, yi], color="grey", lw=4, alpha=0.3)
    ax.scatter(first["true_rate"], y, marker="o", color="black", label="truth", zorder=3)
    ax.scatter(first["average_known"], y, marker="|", color="tab:grey", s=120, label="average known promotion", zorder=3)
    for (label, table), colour in zip(tables.items(), ("tab:blue", "tab:red"), strict=False):
        ax.scatter(table["predicted"], y, marker="x", color=colour, s=60, label=label, zorder=3)
    ax.set_yticks(y, [f"promotion {p}" for p in first["promotion"]])
    ax.set_xlabel("click rate on held-out rows; grey band: truth +-20%")
    ax.set_title("never-logged promotions scored from their features", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def weight_histogram(weights: np.ndarray, diagnostics, path: Path, title: str) -> Path:
    """Distribution of the importance weights pi(a|x) / pi_0(a|x) on the logged rows (overlap diagnostic)."""
    w = np.asarray(weights, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    positive = w[w > 0]
    if len(positive):
        bins = np.logspace(np.log10(positive.min()), np.log10(max(positive.max(), positive.min() * 1.01)), 40)
        ax.hist(positive, bins=bins, color="tab:blue", alpha=0.8)
        ax.set_xscale("log")
    ax.axvline(1.0, color="grey", ls="--")
    ax.set_xlabel("importance weight (log scale); rows with weight 0 not shown")
    ax.set_ylabel("logged rows")
    ax.set_title(f"{title}: {np.mean(w == 0):.0%} zero, max {diagnostics.max_weight:.3g}, "
                 f"ESS {diagnostics.effective_sample_size:,.0f} of {len(w):,}", fontsize=9)
    return save_figure(fig, path)


def budget_plot(table: pd.DataFrame, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.4))
    x = table["budget_share"] * 100
    ax.plot(x, table["simulator"], marker="o", label="simulator")
    ax.errorbar(x, table["snips"], yerr=[table["snips"] - table["ci_low"], table["ci_high"] - table["snips"]],
                fmt="s", capsize=3, label="OPE (SNIPS, 95% CI)")
    ax.set_xlabel("budget: % of customers who may get a push")
    ax.set_ylabel("value per customer")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
