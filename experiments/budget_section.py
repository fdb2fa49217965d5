"""Value versus send budget on Hillstrom ("send at most B e-mails"), by the simulator and by OPE (wiring).

For each customer of the held-out split, the response model predicts the objective of each
action; each e-mail costs one unit of budget, "No E-Mail" nothing. For B e-mails the exact
allocator (`pushrl.policies.budget`) picks who gets which e-mail; that deterministic policy is
valued by the simulator (the model's own predictions) and by IPS/SNIPS on the logged rows.
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


def budget_table(q: np.ndarray, no_push: int, reward: np.ndarray, action: np.ndarray, pscore: np.ndarray,
                 seed: int, n_bootstrap: int = 200) -> pd.DataFrame:
    """One row per budget (share of customers who may get an e-mail): allocation, simulator and OPE values."""
    n, a = q.shape
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
        ev = evaluate_policy(policy=f"budget {frac:.0%}", data="hillstrom", split="test",
                             action_dist=to_action_dist(probs, 1), reward=reward, action=action, pscore=pscore,
                             position=np.zeros(n, dtype=np.int64), estimated_rewards=to_action_dist(q, 1),
                             recommended="snips", n_bootstrap=n_bootstrap, seed=seed)
        s = ev.estimates["snips"]
        rows.append({"budget_share": frac, "emails": int((chosen != no_push).sum()),
                     "simulator": float(q[np.arange(n), chosen].mean()), "snips": s.value, "ci_low": s.ci_low,
                     "ci_high": s.ci_high})
    return pd.DataFrame(rows)


def budget_section(run, key: str, q: np.ndarray, no_push: int, reward: np.ndarray, action: np.ndarray,
                   pscore: np.ndarray, objective: str, seed: int) -> dict:
    from pushrl.experiments import plots

    table = budget_table(q, no_push, reward, action, pscore, seed)
    write_text(run.path(key, "budget.csv"), table.to_csv(index=False))
    plots.budget_plot(table, Path(run.path(key, "budget.png")), f"{key}: {objective} per customer vs e-mail budget")
    md = [f"Send at most B e-mails (each e-mail one unit, No E-Mail free) to the {len(reward):,} held-out customers, "
          f"choosing who gets which e-mail by the response model's predicted {objective} (exact allocation); "
          "valued by the simulator and by SNIPS on the logged rows (95% CI).", "",
          "| budget (share of customers) | e-mails sent | simulator | SNIPS [95% CI] |", "|---|---|---|---|"]
    md += [f"| {r.budget_share:.0%} | {r.emails:,} | {r.simulator:.5g} | {r.snips:.5g} [{r.ci_low:.5g}, {r.ci_high:.5g}] |"
           for r in table.itertuples()]
    md += ["", f"![value vs budget]({key}/budget.png)"]
    run.add_section(f"{key}: value versus send budget", "\n".join(md))
    return {f"{r.budget_share:.2f}": {"simulator": r.simulator, "snips": r.snips} for r in table.itertuples()}
