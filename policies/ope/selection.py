"""Which estimator to trust? Pick by simulated mean squared error.

Given `simulate(seed) -> (OPEInputs, true_value)`, a simulator that mimics the
real log (same logging policy, action count, sample size, a plausible reward
model) and knows the true value of the evaluation policy, every candidate
estimator is run on many simulated logs. With e_s = V_hat_s - V_s on seed s
(S seeds):

    bias = mean_s e_s,   variance = mean_s (e_s - bias)^2,   mse = mean_s e_s^2 = bias^2 + variance

(population variance, so the decomposition is exact). The recommendation is
the estimator with the lowest MSE.

`selection_study` runs this on synthetic logs shaped like a real one (same
size, action count, positions; uniform logging), for evaluation policies at
three distances from the logging policy (softmax over the true click rates at
a high, medium and low temperature); DM/DR get the same cross-fitted
per-(action, position) mean reward model that `pushrl evaluate` uses. Its
recommendation is the estimator with the lowest mean relative MSE
(MSE / true value^2) across distances.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pushrl.envs.common.probabilities import softmax
from pushrl.envs.data.synthetic import SyntheticConfig, generate_log
from pushrl.policies.ope.crossfit import cross_fit_mean_rewards
from pushrl.policies.ope.estimators import ESTIMATORS, BaseEstimator
from pushrl.policies.ope.validation import OPEInputs
from pushrl.policies.policy import to_action_dist

Simulate = Callable[[int], tuple[OPEInputs, float]]

TABLE_COLUMNS = [
    "mean_estimate",
    "mean_true_value",
    "bias",
    "bias_squared",
    "variance",
    "mse",
    "rmse",
    "n_seeds",
]


@dataclass(frozen=True)
class SelectionResult:
    """`table`: one row per estimator (index = name), sorted by mse; `recommended`: its first row."""

    table: pd.DataFrame
    recommended: str


def _default_estimators(inputs: OPEInputs) -> dict[str, BaseEstimator]:
    """Every registered estimator (default hyperparameters) whose arrays the simulation provides."""
    out = {}
    for name, cls in ESTIMATORS.items():
        if all(getattr(inputs, needed) is not None for needed in cls.needs):
            out[name] = cls()
    return out


def select_estimator(
    simulate: Simulate,
    estimators: Mapping[str, BaseEstimator] | None = None,
    seeds: Sequence[int] | int = 100,
) -> SelectionResult:
    """Run every estimator on `simulate(seed)` for each seed; table of bias^2, variance and MSE.

    estimators: name -> estimator; None means every registered estimator with
    default hyperparameters whose inputs the first simulation provides.
    seeds: the seeds, or a count n meaning range(n).
    """
    if isinstance(seeds, int | np.integer) and not isinstance(seeds, bool):
        seeds = range(int(seeds))
    seeds = list(seeds)
    if len(seeds) < 2:
        raise ValueError(
            f"seeds must hold at least 2 seeds to estimate a variance, got {len(seeds)}"
        )
    estimates: dict[str, list[float]] = {}
    truths = []
    for seed in seeds:
        inputs, true_value = simulate(seed)
        if not isinstance(inputs, OPEInputs):
            raise ValueError(
                f"simulate({seed}) must return (OPEInputs, true_value), got ({type(inputs).__name__}, ...)"
            )
        if estimators is None:
            estimators = _default_estimators(inputs)
            if not estimators:
                raise ValueError("simulate() provides the inputs of no registered estimator")
        truths.append(float(true_value))
        for name, estimator in estimators.items():
            estimates.setdefault(name, []).append(estimator.row_terms(inputs).value())
    truth = np.asarray(truths)
    rows = {}
    for name, values in estimates.items():
        values = np.asarray(values)
        error = values - truth
        bias = float(np.mean(error))
        variance = float(np.mean((error - bias) ** 2))
        mse = float(np.mean(error**2))
        rows[name] = [
            float(np.mean(values)),
            float(np.mean(truth)),
            bias,
            bias**2,
            variance,
            mse,
            mse**0.5,
            len(seeds),
        ]
    table = pd.DataFrame.from_dict(rows, orient="index", columns=TABLE_COLUMNS)
    table.index.name = "estimator"
    table = table.sort_values("mse", kind="stable")
    return SelectionResult(table=table, recommended=str(table.index[0]))


DISTANCES = {"near (temperature 1.0)": 1.0, "moderate (temperature 0.1)": 0.1, "far (temperature 0.02)": 0.02}
"""Evaluation policies of `selection_study`: label -> softmax temperature (relative to the click rates' std)."""


def _shaped_simulation(n_rounds: int, n_actions: int, n_positions: int, temperature: float, seed: int) -> Simulate:
    def simulate(s: int) -> tuple[OPEInputs, float]:
        data, truth = generate_log(SyntheticConfig(n_rows=n_rounds, n_users=max(n_rounds // 10, 50),
                                                   n_actions=n_actions, n_positions=n_positions,
                                                   seed=seed * 100_003 + s))
        q = truth.expected_rewards_for(data)
        z = q[:, :, 0] / (temperature * max(float(q.std()), 1e-9))
        dist = to_action_dist(softmax(z), n_positions)
        q_hat = cross_fit_mean_rewards(data.reward(), data.action, data.position, n_actions, n_positions,
                                       n_folds=5, seed=s)
        inputs = OPEInputs(dist, data.reward(), data.action, data.pscore, data.position, q_hat, n_actions)
        return inputs, truth.policy_value(data, dist)

    return simulate


def selection_study(n_rounds: int, n_actions: int, n_positions: int, estimators: Mapping[str, BaseEstimator],
                    n_seeds: int = 40, seed: int = 0) -> SelectionResult:
    """Which of `estimators` to trust on a log of this shape (module docstring).

    `n_rounds` is clipped to [500, 20000]. Returns the table (one row per distance x estimator: the
    `select_estimator` columns plus `relative_mse`; columns `estimator`, `distance` first) and the
    estimator with the lowest mean relative MSE.
    """
    n_rounds = int(min(max(n_rounds, 500), 20_000))
    tables = []
    for label, temperature in DISTANCES.items():
        simulate = _shaped_simulation(n_rounds, n_actions, n_positions, temperature, seed)
        res = select_estimator(simulate, dict(estimators), seeds=n_seeds)
        t = res.table.copy()
        t["relative_mse"] = t["mse"] / np.maximum(t["mean_true_value"] ** 2, 1e-18)
        t.insert(0, "distance", label)
        tables.append(t.reset_index().rename(columns={"index": "estimator"}))
    table = pd.concat(tables, ignore_index=True)
    return SelectionResult(table=table, recommended=str(table.groupby("estimator")["relative_mse"].mean().idxmin()))
