"""Value versus send budget ("send at most B pushes") on a log with a no-push action, by the simulator
and by OPE (wiring).

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
import pandas as pd

from pushrl.envs.atomic import write_text
from pushrl.policies.budget import allocate_budget, unit_costs
from pushrl.policies.evaluation import evaluate_policy
from pushrl.policies.policy import to_action_dist

FRACTIONS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)


def _identified(pscore: np.ndarray) -> bool:
    return not bool(np.all(np.asarray(pscore) == 1.0))


def budget_table(q: np.ndarray, no_push: int, reward: np.ndarray, action: np.ndarray, pscore: np.ndarray,
                 seed: int, n_bootstrap: int = 200, data_name: str = "log") -> pd.DataFrame:
    """One row per budget (share of customers who may get a push): allocation, simulator and OPE values.

    q: (n, A) predicted objective per action; no_push: the no-push action's index; reward, action,
    pscore: (n,) the logged rows. SNIPS and its CI are NaN when every propensity is 1.0.
    """
    n, a = q.shape
    if not 0 <= no_push < a:
        raise ValueError(f"no_push must be an action index in [0, {a}), got {no_push}")
    identified = _identified(pscore)
    costs = unit_costs(a, no_push)
    rows = []
    for frac in FRACTIONS:
        budget = frac * n
        if budget > 0:
            alloc = allocate_budget(q, costs, budget)
            chosen = alloc.actions
        else:
            chosen = np.full(n, no_push)
        probs = np.eye(a)[chosen]
        row = {"budget_share": frac, "pushes": int((chosen != no_push).sum()),
               "simulator": float(q[np.arange(n), chosen].mean()), "snips": np.nan, "ci_low": np.nan,
               "ci_high": np.nan}
        if identified:
            ev = evaluate_policy(policy=f"budget {frac:.0%}", data=data_name, split="test",
                                 action_dist=to_action_dist(probs, 1), reward=reward, action=action, pscore=pscore,
                                 position=np.zeros(n, dtype=np.int64), estimated_rewards=to_action_dist(q, 1),
                                 recommended="snips", n_bootstrap=n_bootstrap, seed=seed)
            s = ev.estimates["snips"]
            row |= {"snips": s.value, "ci_low": s.ci_low, "ci_high": s.ci_high}
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(r) -> str:
    if not np.isfinite(r.snips):
        return "n/a"
    return f"{r.snips:.5g} [{r.ci_low:.5g}, {r.ci_high:.5g}]"


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
    if not _identified(pscore):
        md.append("Every logged propensity is 1.0 (deterministic logging): SNIPS is not identified, so only the "
                  "simulator's (model-only) values are shown.")
    md += ["", "| budget (share of customers) | pushes sent | simulator | SNIPS [95% CI] |", "|---|---|---|---|"]
    md += [f"| {r.budget_share:.0%} | {r.pushes:,} | {r.simulator:.5g} | {_cell(r)} |" for r in table.itertuples()]
    md += ["", f"![value vs budget]({key}/budget.png)"]
    run.add_section(f"{key}: value versus send budget", "\n".join(md))
    return {f"{r.budget_share:.2f}": {"simulator": r.simulator, "snips": r.snips} for r in table.itertuples()}
