"""Trajectory OPE of the sequential agents on a repeat-user log (next to the simulator's value).

`trajectory_values(policies, obs, env_action, user, step, pscore, reward, q_hat)` scores each policy (a
function of the env observation, e.g. PPO, the bandits, the greedy and spacing rules, never_push; not the
stateful `OptimalTiming`) on the log's rows as env steps (`pushrl.envs.sim.log_observations`):
pi(a_i | s_i) = policy.action_probabilities(obs)[i, a_i] (0/1 for a deterministic policy), then

    pdis, wpdis                       always
    pddr, wdr                         with q_hat (n, A): Q_hat(s_i, a_i) = q_hat[i, a_i],
                                      V_hat(s_i) = Σ_a pi(a | s_i) q_hat[i, a]

(`pushrl.policies.ope.trajectory`; users are the bootstrap unit). One row per (agent, estimator): value,
ci_low, ci_high and ess (the effective number of users behind the final trajectory weights). `capped` (n,)
bool: rows where the env would refuse any push (cap_hit in a log the env wrote): there every policy's
effective action is push nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from pushrl.policies.ope.bootstrap import Seed
from pushrl.policies.ope.trajectory import (
    PerDecisionDoublyRobust,
    PerDecisionIS,
    TrajectoryEstimator,
    TrajectoryInputs,
    WeightedDoublyRobust,
    WeightedPerDecisionIS,
    trajectory_diagnostics,
    trajectory_intervals,
)
from pushrl.policies.policy import BasePolicy

COLUMNS = ("value", "ci_low", "ci_high", "ess")


def estimators(gamma: float = 1.0, model: bool = False) -> dict[str, TrajectoryEstimator]:
    """pdis and wpdis, plus pddr and wdr with a model (each with discount gamma)."""
    out: dict[str, TrajectoryEstimator] = {"pdis": PerDecisionIS(gamma), "wpdis": WeightedPerDecisionIS(gamma)}
    if model:
        out |= {"pddr": PerDecisionDoublyRobust(gamma), "wdr": WeightedDoublyRobust(gamma)}
    return out


def target_probabilities(policy: BasePolicy, obs: np.ndarray, n_actions: int,
                         capped: np.ndarray | None = None) -> np.ndarray:
    """(n, n_actions) the policy's env-action probabilities at the rebuilt observations (push nothing where capped)."""
    p = np.asarray(policy.action_probabilities(obs), dtype=np.float64)
    if p.shape != (len(obs), n_actions):
        raise ValueError(f"{type(policy).__name__}.action_probabilities gives shape {p.shape}, expected "
                         f"({len(obs)}, {n_actions}) env actions (n_allowed + 1)")
    if capped is not None:
        p = p.copy()
        p[capped] = 0.0
        p[capped, -1] = 1.0
    return p


def trajectory_values(policies: Mapping[str, BasePolicy], obs: np.ndarray, env_action: np.ndarray, user: np.ndarray,
                      step: np.ndarray, pscore: np.ndarray, reward: np.ndarray, q_hat: np.ndarray | None = None, *,
                      gamma: float = 1.0, n_bootstrap: int = 1000, alpha: float = 0.05, seed: Seed = 0,
                      capped: np.ndarray | None = None) -> pd.DataFrame:
    """Trajectory OPE of each policy (module docstring): DataFrame indexed by (agent, estimator), COLUMNS.

    obs (n, D), env_action (n,) int in [0, A), user (n,), step (n,) int rank within the user, pscore (n,) the
    logging propensity of the logged env action, reward (n,), q_hat (n, A) or None; A = n_allowed + 1.
    An estimate that is undefined (a self-normalised one where no user's first action has target mass) is NaN.
    """
    if not policies:
        raise ValueError("policies must name at least one policy, got an empty mapping")
    action = np.asarray(env_action)
    if action.ndim != 1 or not np.issubdtype(action.dtype, np.integer):
        raise ValueError(f"env_action must be a 1-D integer array, got {action.dtype} {action.shape}")
    n_actions = int(q_hat.shape[1]) if q_hat is not None else None
    chosen = estimators(gamma, q_hat is not None)
    rows = []
    for name, policy in policies.items():
        width = n_actions if n_actions is not None else int(policy.n_actions)
        dist = target_probabilities(policy, obs, width, None if capped is None else np.asarray(capped, dtype=bool))
        inputs = TrajectoryInputs.from_action_dist(user=user, step=step, action=action, pscore=pscore, reward=reward,
                                                   action_dist=dist, estimated_rewards=q_hat)
        ess = trajectory_diagnostics(inputs).effective_sample_size
        for est_name, est in chosen.items():
            try:
                ci = trajectory_intervals({est_name: est}, inputs, n_bootstrap=n_bootstrap, alpha=alpha, seed=seed)
                value, low, high = ci[est_name].value, ci[est_name].ci_low, ci[est_name].ci_high
            except ValueError as exc:
                if "undefined" not in str(exc):
                    raise
                value = low = high = float("nan")
            rows.append({"agent": name, "estimator": est_name, "value": value, "ci_low": low, "ci_high": high,
                         "ess": ess})
    return pd.DataFrame(rows).set_index(["agent", "estimator"])


def trajectory_metrics(table: pd.DataFrame) -> dict[str, dict[str, dict[str, float]]]:
    """{agent: {estimator: {value, ci_low, ci_high}}} (metrics.json under f"{key}/sequential/trajectory_ope")."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (agent, est), row in table.iterrows():
        out.setdefault(str(agent), {})[str(est)] = {c: float(row[c]) for c in ("value", "ci_low", "ci_high")}
    return out


def trajectory_skip_reason(data) -> str | None:
    """Why a log cannot value timing policies by trajectory OPE (None: it can): it needs user ids, timestamps,
    logged propensities and users with several decisions."""
    if data.user_id is None or data.timestamp is None:
        return "the log has no user_id and timestamp"
    if data.pscore is None:
        return "the log has no propensities"
    if not data.frame["user_id"].duplicated().any():
        return "no user has several decisions"
    return None


def log_trajectory_ope(data, log_contexts: np.ndarray, dynamics, objective, policies: Mapping[str, BasePolicy], *,
                       n_bootstrap: int = 500, alpha: float = 0.05, seed: Seed = 0) -> pd.DataFrame:
    """Trajectory OPE of `policies` on the whole log, each row an env step of its user (module docstring).

    The step reward is what the env pays: the objective of the logged row (`objective.logged`) minus the env's
    push cost and, on a logged unsubscribe, its penalty (λ's novelty is left out); Q_hat is the env's expected
    one-step reward of each action (`expected_step_reward`). Policies that keep state outside the observation
    (the optimum's decision table) cannot be scored on logged states and are left out by the caller.
    """
    from pushrl.envs.sim.log_observations import expected_step_reward, log_observations

    steps = log_observations(data, log_contexts, dynamics)
    c = dynamics.config
    pushed = steps.env_action < dynamics.n_allowed
    unsub = data.unsubscribe if getattr(data, "has_unsubscribe", False) else np.zeros(data.n_rounds)
    reward = objective.logged(data) - (c.push_cost + c.unsubscribe_penalty * unsub) * pushed
    return trajectory_values(policies, steps.obs, steps.env_action, steps.user, steps.step, data.pscore, reward,
                             expected_step_reward(dynamics, steps.obs), n_bootstrap=n_bootstrap, alpha=alpha,
                             seed=seed)
