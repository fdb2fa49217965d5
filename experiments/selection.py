"""The estimator-selection section of the report (rendering; the study is
`pushrl.policies.ope.selection.selection_study`)."""

from __future__ import annotations

import pandas as pd

from pushrl.policies.ope.selection import DISTANCES


def selection_markdown(table: pd.DataFrame, recommended: str, n_rounds: int, n_seeds: int) -> str:
    """Relative MSE per estimator and distance, the recommended one marked."""
    pivot = table.pivot(index="estimator", columns="distance", values="relative_mse")[list(DISTANCES)]
    lines = [f"Relative MSE (MSE / true value²) over {n_seeds} synthetic logs of {n_rounds:,} rows shaped like this one "
             "(lower is better):", "", "| estimator | " + " | ".join(pivot.columns) + " |", "|---|" + "---|" * len(pivot.columns)]
    for name, row in pivot.iterrows():
        mark = " **(recommended)**" if name == recommended else ""
        lines.append(f"| {name}{mark} | " + " | ".join(f"{v:.3g}" for v in row.to_numpy()) + " |")
    return "\n".join(lines)
