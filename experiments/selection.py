"""Which OPE estimator to trust on a log like this one? A synthetic study with ground truth.

Synthetic logs of the same size, action count, positions and (uniform) logging
as the real log; evaluation policies at three distances from the logging
policy (softmax over the true click rates at a high, medium and low
temperature); DM/DR get the same cross-fitted per-(action, position) mean
reward model that `pushrl evaluate` uses. Estimators are ranked by MSE per
distance; the recommendation is the one with the lowest mean relative MSE
(MSE / true value²) across distances. Wiring over pushrl.policies.ope.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pushrl.envs.probabilities import softmax
from pushrl.envs.synthetic import SyntheticConfig, generate_log
from pushrl.policies.evaluation import EstimatorSettings
from pushrl.policies.ope import OPEInputs, cross_fit_mean_rewards, select_estimator
from pushrl.policies.policy import to_action_dist

DISTANCES = {"near (temperature 1.0)": 1.0, "moderate (temperature 0.1)": 0.1, "far (temperature 0.02)": 0.02}


def selection_study(n_rounds: int, n_actions: int, n_positions: int, settings: EstimatorSettings,
                    n_seeds: int = 40, seed: int = 0) -> tuple[pd.DataFrame, str]:
    """(table: distance x estimator with bias², variance, MSE; recommended estimator name)."""
    n_rounds = int(min(max(n_rounds, 500), 20_000))
    tables = []
    for label, temperature in DISTANCES.items():
        def simulate(s: int, temperature: float = temperature) -> tuple[OPEInputs, float]:
            data, truth = generate_log(SyntheticConfig(n_rows=n_rounds, n_users=max(n_rounds // 10, 50),
                                                       n_actions=n_actions, n_positions=n_positions,
                                                       seed=seed * 100_003 + s))
            q = truth.expected_rewards_for(data)
            z = q[:, :, 0] / (temperature * max(float(q.std()), 1e-9))
            pi = softmax(z)
            dist = to_action_dist(pi, n_positions)
            q_hat = cross_fit_mean_rewards(data.reward(), data.action, data.position, n_actions, n_positions,
                                           n_folds=5, seed=s)
            inputs = OPEInputs(dist, data.reward(), data.action, data.pscore, data.position, q_hat, n_actions)
            return inputs, truth.policy_value(data, dist)

        res = select_estimator(simulate, settings.build(), seeds=n_seeds)
        t = res.table.copy()
        t["relative_mse"] = t["mse"] / np.maximum(t["mean_true_value"] ** 2, 1e-18)
        t.insert(0, "distance", label)
        tables.append(t.reset_index().rename(columns={"index": "estimator"}))
    table = pd.concat(tables, ignore_index=True)
    recommended = str(table.groupby("estimator")["relative_mse"].mean().idxmin())
    return table, recommended


def selection_markdown(table: pd.DataFrame, recommended: str, n_rounds: int, n_seeds: int) -> str:
    pivot = table.pivot(index="estimator", columns="distance", values="relative_mse")[list(DISTANCES)]
    lines = [f"Relative MSE (MSE / true value²) over {n_seeds} synthetic logs of {n_rounds:,} rows shaped like this one "
             "(lower is better):", "", "| estimator | " + " | ".join(pivot.columns) + " |", "|---|" + "---|" * len(pivot.columns)]
    for name, row in pivot.iterrows():
        mark = " **(recommended)**" if name == recommended else ""
        lines.append(f"| {name}{mark} | " + " | ".join(f"{v:.3g}" for v in row.to_numpy()) + " |")
    return "\n".join(lines)
