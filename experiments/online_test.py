"""The report's answer to "how big an A/B test confirms this, and how long?" (wiring and rendering over
`pushrl.policies.abtest.confirmation`).

Plan: control = the logging policy's on-policy value; lift to detect = the
candidate's OPE lift (recommended estimator, its CI shown), or `abtest.default_lift`
when OPE shows no positive lift. Simulate: candidate vs control with each arm's
rate taken from the simulator (the learned response model), many seeded
experiments at the planned size, reporting observed power, and one experiment's
lift with its CI and p-value.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from pushrl.experiments.formatting import fmt
from pushrl.policies.abtest.confirmation import confirmation_test
from pushrl.policies.evaluation import PolicyEvaluation


@dataclass
class OnlineTest:
    markdown: str
    metrics: dict


def online_test_section(cfg: DictConfig, evaluation: PolicyEvaluation, estimator: str, candidate_sim: float,
                        logging_sim: float, binary: bool, plot_path: Path, title: str) -> OnlineTest:
    """Plan the test of `evaluation.policy` against the logging policy, simulate it, plot power vs duration."""
    from pushrl.experiments import plots

    ab = cfg.abtest
    control = evaluation.logging.value
    est = evaluation.estimates[estimator]
    lift = evaluation.lift(estimator)
    lift_lo = (est.ci_low - control) / control if control else float("nan")
    lift_hi = (est.ci_high - control) / control if control else float("nan")
    md = [f"Candidate: `{evaluation.policy}`; control: the logging policy (value {fmt(control)}). "
          f"OPE lift ({estimator}): {lift:+.1%} [95% CI {lift_lo:+.1%}, {lift_hi:+.1%}]."]
    if not binary:
        md.append("The objective is continuous; the plan below uses the two-proportion test only for binary "
                  "objectives, so use `pushrl abtest plan --mean M --sd S` for this one.")
        return OnlineTest("\n".join(md), {})
    if not (0 < control < 1):
        md.append("The control rate is 0 or 1 on the test split: no test can be planned from it.")
        return OnlineTest("\n".join(md), {})
    t = confirmation_test(control, lift, candidate_sim, logging_sim, default_lift=ab.default_lift, alpha=ab.alpha,
                          power=ab.power, allocation=ab.allocation, traffic_per_day=ab.traffic_per_day,
                          n_experiments=ab.n_experiments, seed=int(cfg.seed))
    if t.default_used:
        md.append(f"OPE shows no positive lift, so the plan is for the smallest lift worth shipping, "
                  f"`abtest.default_lift` = {ab.default_lift:+.0%}.")
    plan, (n_c, n_t) = t.plan, t.plan.users_per_arm
    md.append(f"To detect {t.planned_lift:+.1%} with power {ab.power:.0%} at alpha {ab.alpha}: **{n_c:,} users in control "
              f"and {n_t:,} in treatment**, i.e. **{plan.days} day{'s' if plan.days != 1 else ''}** at {ab.traffic_per_day:,} users/day "
              f"({ab.allocation:.0%} to the candidate).")
    days = np.arange(1, max(2 * int(plan.days or 1), 14) + 1)
    plots.power_curve(days, plan.power_curve(days), ab.power, plot_path, title)
    one = t.one
    md.append(f"Simulated in the simulator (control rate {fmt(t.sim_rates[0])}, candidate {fmt(t.sim_rates[1])}): over "
              f"{ab.n_experiments:,} seeded experiments of that size the test rejects in {t.rejection_rate:.1%} of them; "
              f"one experiment: lift {one.lift:+.1%} [95% CI {one.lift_ci[0]:+.1%}, {one.lift_ci[1]:+.1%}], "
              f"p = {one.p_value:.3g}.")
    md.append(f"\n![power against duration]({plot_path.parent.name}/{plot_path.name})")
    metrics = {"users_control": n_c, "users_treatment": n_t, "days": plan.days, "planned_lift": t.planned_lift,
               "simulated_rejection_rate": t.rejection_rate, "simulated_lift": one.lift,
               "simulated_p_value": one.p_value}
    return OnlineTest("\n\n".join(md), metrics)
