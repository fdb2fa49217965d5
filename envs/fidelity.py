"""Is the simulator faithful? Two checks, both on rows no model was fitted on.

Real logs: replaying the logging policy in the simulator (the expected reward
under the logging policy's action probabilities, at each row's own context and
position) must land inside the 95% confidence interval of the logged mean
reward, overall and per position.

Synthetic logs: for several policies, the simulator's value (learned response)
must be within a relative tolerance of the true value (the known truth), and the
logging policy's simulated value inside the logged reward's 95% CI.

Values are one-step (one push per logged row), as OPE measures them, so the
simulator and OPE answer the same question.
"""

from __future__ import annotations

from collections.abc import Mapping
from statistics import NormalDist

import numpy as np
import pandas as pd

from pushrl.envs.response import ResponseFunction
from pushrl.envs.schema import BINARY_REWARDS


def mean_ci(values: np.ndarray, alpha: float = 0.05, binary: bool | None = None) -> tuple[float, float, float]:
    """Mean with a (1 − alpha) CI: Wilson score for 0/1 data, normal approximation otherwise."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    z = NormalDist().inv_cdf(1 - alpha / 2)
    m = float(v.mean())
    if binary is None:
        binary = bool(np.isin(v, (0.0, 1.0)).all())
    if binary:
        centre = (m + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(m * (1 - m) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return m, float(centre - half), float(centre + half)
    se = float(v.std(ddof=1) / np.sqrt(n)) if n > 1 else float("inf")
    return m, m - z * se, m + z * se


def simulated_value(
    response: ResponseFunction,
    contexts: np.ndarray,
    recent_pushes: np.ndarray,
    position: np.ndarray,
    probabilities: np.ndarray,
    reward: str,
) -> np.ndarray:
    """(n,) expected reward of each row under a policy's (n, A) probabilities."""
    q = response.predict(contexts, recent_pushes, position)[reward]
    return np.sum(probabilities * q, axis=1)


def replay_fidelity(
    response: ResponseFunction,
    contexts: np.ndarray,
    recent_pushes: np.ndarray,
    position: np.ndarray,
    logging_probabilities: np.ndarray,
    logged_reward: np.ndarray,
    reward: str,
    alpha: float = 0.05,
    predictions: Mapping[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Logged mean reward (with CI) vs the simulator's replay of the logging policy, overall and per position.

    predictions: `response.predict(contexts, recent_pushes, position)` if the caller already has it
    (then `response` is not asked again; one prediction serves every reward).
    """
    q = (predictions if predictions is not None else response.predict(contexts, recent_pushes, position))[reward]
    sim = np.sum(logging_probabilities * q, axis=1)
    rows = []
    scopes = [("overall", np.ones(len(position), bool))]
    if len(np.unique(position)) > 1:
        scopes += [(f"position {p}", position == p) for p in np.unique(position)]
    for name, mask in scopes:
        m, lo, hi = mean_ci(logged_reward[mask], alpha, binary=reward in BINARY_REWARDS)
        s = float(sim[mask].mean())
        rows.append({"scope": name, "rows": int(mask.sum()), "logged": m, "ci_low": lo, "ci_high": hi,
                     "simulated": s, "inside_ci": lo <= s <= hi})
    return pd.DataFrame(rows)


def synthetic_fidelity(
    learned_q: np.ndarray,
    true_q: np.ndarray,
    policies: Mapping[str, np.ndarray],
    tolerance: float = 0.10,
) -> pd.DataFrame:
    """Simulated (learned) vs true value of each policy's (n, A) probabilities on the same rows.

    learned_q / true_q: (n, A) expected reward of every action by the learned simulator and by the
    truth, each predicted once from its own encoding of the rows.
    """
    rows = []
    for name, probs in policies.items():
        sim = float(np.sum(probs * learned_q, axis=1).mean())
        true = float(np.sum(probs * true_q, axis=1).mean())
        rel = abs(sim - true) / abs(true) if true != 0 else float("inf")
        rows.append({"policy": name, "simulated": sim, "true": true, "relative_error": rel,
                     "within_tolerance": rel <= tolerance})
    return pd.DataFrame(rows)
