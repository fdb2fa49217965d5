"""The report's answer to "how big an A/B test confirms this, and how long?" (wiring over pushrl.policies.abtest).

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

from pushrl.policies.abtest import BernoulliSampler, analyze, plan_proportion_test, simulate_many
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
    md = [f"Candidate: `{evaluation.policy}`; control: the logging policy (value {control:.5g}). "
          f"OPE lift ({estimator}): {lift:+.1%} [95% CI {lift_lo:+.1%}, {lift_hi:+.1%}]."]
    if not binary:
        md.append("The objective is continuous; the plan below uses the two-proportion test only for binary "
                  "objectives, so use `pushrl abtest plan --mean M --sd S` for this one.")
        return OnlineTest("\n".join(md), {})
    if not (0 < control < 1):
        md.append("The control rate is 0 or 1 on the test split: no test can be planned from it.")
        return OnlineTest("\n".join(md), {})
    planned_lift = lift if np.isfinite(lift) and lift > 0 else ab.default_lift
    if planned_lift != lift:
        md.append(f"OPE shows no positive lift, so the plan is for the smallest lift worth shipping, "
                  f"`abtest.default_lift` = {planned_lift:+.0%}.")
    planned_lift = min(planned_lift, 0.999 / control - 1)
    plan = plan_proportion_test(control, planned_lift, alpha=ab.alpha, power=ab.power, allocation=ab.allocation,
                                traffic_per_day=ab.traffic_per_day)
    n_c, n_t = plan.users_per_arm
    md.append(f"To detect {planned_lift:+.1%} with power {ab.power:.0%} at alpha {ab.alpha}: **{n_c:,} users in control "
              f"and {n_t:,} in treatment**, i.e. **{plan.days} day{'s' if plan.days != 1 else ''}** at {ab.traffic_per_day:,} users/day "
              f"({ab.allocation:.0%} to the candidate).")
    days = np.arange(1, max(2 * int(plan.days or 1), 14) + 1)
    plots.power_curve(days, plan.power_curve(days), ab.power, plot_path, title)
    sim_rates = (float(np.clip(logging_sim, 1e-9, 1 - 1e-9)), float(np.clip(candidate_sim, 1e-9, 1 - 1e-9)))
    sampler = BernoulliSampler(sim_rates)
    many = simulate_many(sampler, n_c, n_t, n_experiments=ab.n_experiments, alpha=ab.alpha, seed=int(cfg.seed))
    rng = np.random.default_rng(int(cfg.seed))
    one = analyze(rng.random(n_c) < sim_rates[0], rng.random(n_t) < sim_rates[1], alpha=ab.alpha)
    md.append(f"Simulated in the simulator (control rate {sim_rates[0]:.5g}, candidate {sim_rates[1]:.5g}): over "
              f"{ab.n_experiments:,} seeded experiments of that size the test rejects in {many.reject.mean():.1%} of them; "
              f"one experiment: lift {one.lift:+.1%} [95% CI {one.lift_ci[0]:+.1%}, {one.lift_ci[1]:+.1%}], "
              f"p = {one.p_value:.3g}.")
    md.append(f"\n![power against duration]({plot_path.parent.name}/{plot_path.name})")
    metrics = {"users_control": n_c, "users_treatment": n_t, "days": plan.days, "planned_lift": planned_lift,
               "simulated_rejection_rate": float(many.reject.mean()), "simulated_lift": one.lift,
               "simulated_p_value": one.p_value}
    return OnlineTest("\n\n".join(md), metrics)
