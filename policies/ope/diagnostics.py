"""Can these logs support an estimate of this policy? Importance-weight diagnostics.

Quantities (n = n_rounds, w_i = pi_e(a_i | x_i, k_i) / pscore_i, unclipped):

- effective sample size ESS = (sum_i w_i)^2 / sum_i w_i^2: about how many
  logged rows the weighted estimate is worth (n when pi_e = pi_b);
- max weight max_i w_i;
- low-support mass: the share of the evaluation policy's probability on
  actions the logger plays with probability below `tau`,

      M = mean_i sum_a pi_e(a | x_i, k_i) 1[pi_b(a | x_i, k_i) < tau].

  Exact when the logging action distribution pi_b (n, A, L) is given.
  Otherwise it is estimated from the logged rows only, as
  mean_i w_i 1[pscore_i < tau], which is unbiased for the same quantity
  restricted to actions with pi_b > 0: actions the logger never plays are
  invisible in the log, so the estimate is then a lower bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pushrl.policies.ope.validation import OPEInputs, check_action_dist


@dataclass(frozen=True)
class SupportDiagnostics:
    """Support of the evaluation policy in the logs; `warnings` is empty when support looks fine."""

    n_rounds: int
    effective_sample_size: float
    ess_fraction: float
    max_weight: float
    tau: float
    low_support_mass: float
    low_support_mass_is_exact: bool
    warnings: list[str] = field(default_factory=list)


def _check_fraction(name: str, value: float) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1
    if not ok:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def support_diagnostics(
    *,
    action_dist: np.ndarray | None = None,
    action: np.ndarray | None = None,
    pscore: np.ndarray | None = None,
    position: np.ndarray | None = None,
    inputs: OPEInputs | None = None,
    logging_action_dist: np.ndarray | None = None,
    tau: float = 0.01,
    min_ess_fraction: float = 0.05,
    max_low_support_mass: float = 0.05,
) -> SupportDiagnostics:
    """Diagnose the importance weights of `action_dist` on a log (shapes as in `estimators`).

    inputs: already validated OPEInputs instead of the four arrays (no second validation; their
        cached importance weights are reused).
    logging_action_dist: (n, A, L) pi_b, optional; makes the low-support mass exact.
    tau: a logging propensity below this counts as low support.
    min_ess_fraction: warn when ESS < min_ess_fraction * n.
    max_low_support_mass: warn when the low-support mass exceeds this.
    """
    _check_fraction("tau", tau)
    _check_fraction("min_ess_fraction", min_ess_fraction)
    _check_fraction("max_low_support_mass", max_low_support_mass)
    if inputs is None:
        inputs = OPEInputs(action_dist=action_dist, action=action, pscore=pscore, position=position)
    elif action_dist is not None or action is not None or pscore is not None or position is not None:
        raise ValueError("give either inputs or the arrays (action_dist, action, pscore, position), not both")
    inputs.require("support_diagnostics", "action", "pscore")
    n = inputs.n_rounds
    w = inputs.importance_weight
    total = float(np.sum(w))
    squares = float(np.sum(w * w))
    ess = total * total / squares if squares > 0 else 0.0
    if logging_action_dist is not None:
        logging = check_action_dist(logging_action_dist, "logging_action_dist")
        if logging.shape != inputs.action_dist.shape:
            raise ValueError(
                f"logging_action_dist has shape {logging.shape}, expected {inputs.action_dist.shape} "
                "(the shape of action_dist)"
            )
        rows = np.arange(n)
        pi_b = logging[rows, :, inputs.position]
        pi_e = inputs.action_dist[rows, :, inputs.position]
        mass = float(np.mean(np.sum(np.where(pi_b < tau, pi_e, 0.0), axis=1)))
    else:
        mass = float(np.mean(np.where(inputs.pscore < tau, w, 0.0)))
    warnings = []
    if ess < min_ess_fraction * n:
        warnings.append(
            f"effective sample size {ess:.1f} is {ess / n:.2%} of the {n} logged rows (below "
            f"{min_ess_fraction:.0%}): the evaluation policy is far from the logging policy, so "
            "IPS-type estimates rest on a few rows; prefer DR/SNDR, clipping, or more exploration"
        )
    if mass > max_low_support_mass:
        how = "exact" if logging_action_dist is not None else "estimated from logged rows"
        warnings.append(
            f"{mass:.1%} of the evaluation policy's probability ({how}) is on actions the logger "
            f"plays with probability < {tau:g} (threshold {max_low_support_mass:.0%}): poor support; "
            "estimates there extrapolate from few rows or from the reward model"
        )
    return SupportDiagnostics(
        n_rounds=n,
        effective_sample_size=ess,
        ess_fraction=ess / n,
        max_weight=float(np.max(w)),
        tau=float(tau),
        low_support_mass=mass,
        low_support_mass_is_exact=logging_action_dist is not None,
        warnings=warnings,
    )
