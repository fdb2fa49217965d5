"""Value versus send budget ("send at most B pushes") on a log with a no-push action, by the simulator
and by OPE (wiring and rendering; the table is `pushrl.policies.budget.budget_table`).

For each customer of the held-out split, the response model predicts the objective of each
action; each push costs one unit of budget, the no-push action nothing. For B pushes the exact
allocator (`pushrl.policies.budget`) picks who gets which push; that deterministic policy is
valued by the simulator (the model's own predictions) and by SNIPS on the logged rows with their
logged propensities. A log whose propensities are all 1.0 (deterministic logging) does not
identify SNIPS: the table then has the simulator's values only and says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pushrl.envs.common.atomic import write_text
from pushrl.experiments.formatting import fmt, fmt_ci
from pushrl.policies.budget import budget_table, snips_identified


def _cell(r) -> str:
    return fmt_ci(r.snips, r.ci_low, r.ci_high) if np.isfinite(r.snips) else "n/a"


def budget_section(run, key: str, q: np.ndarray, no_push: int, reward: np.ndarray, action: np.ndarray,
                   pscore: np.ndarray, objective: str, seed: int, *, data_name: str = "log",
                   no_push_id: object | None = None) -> dict:
    """The report section and its metrics {budget share: {simulator, snips}}; files under `run.path(key)`.

    no_push_id: the no-push action's id, named in the report (None: not named).
    """
    from pushrl.experiments import plots

    table = budget_table(q, no_push, reward, action, pscore, seed, data_name=data_name)
    write_text(run.path(key, "budget.csv"), table.to_csv(index=False))
    plots.budget_plot(table, Path(run.path(key, "budget.png")), f"{key}: {objective} per customer vs push budget")
    label = f" `{no_push_id}`" if no_push_id is not None else ""
    md = [f"Send at most B pushes (each push one unit of budget, the no-push action{label} free) to the "
          f"{len(reward):,} held-out customers, choosing who gets which push by the response model's predicted "
          f"{objective} (exact allocation); valued by the simulator and by SNIPS on the logged rows with their "
          "logged propensities (95% CI)."]
    if not snips_identified(pscore):
        md.append("Every logged propensity is 1.0 (deterministic logging): SNIPS is not identified, so only the "
                  "simulator's (model-only) values are shown.")
    md += ["", "| budget (share of customers) | pushes sent | simulator | SNIPS [95% CI] |", "|---|---|---|---|"]
    md += [f"| {r.budget_share:.0%} | {r.pushes:,} | {fmt(r.simulator)} | {_cell(r)} |" for r in table.itertuples()]
    md += ["", f"![value vs budget]({key}/budget.png)"]
    run.add_section(f"{key}: value versus send budget", "\n".join(md))
    return {f"{r.budget_share:.2f}": {"simulator": r.simulator, "snips": r.snips} for r in table.itertuples()}
