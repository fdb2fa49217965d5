"""`pushrl abtest plan|simulate`: plan the online A/B test of a candidate policy, then simulate it.

    pushrl abtest plan --control-rate 0.04 --lift 0.1 --traffic-per-day 20000 [--days 14]
    pushrl abtest plan --mean 25 --sd 40 --lift 0.05 --traffic-per-day 5000
    pushrl abtest simulate --control-rate 0.04 --lift 0.1 --traffic-per-day 20000 --looks 5

`plan` prints users per arm, days needed and the minimum detectable effect
(relative lift) after --days (default: the days needed). `simulate` runs
--experiments A/A and A/B tests at the planned size (or after --days) and
reports the false-positive rate, the power and, with --looks > 1, the
group-sequential design's average sample size at stop; its maximum size is the
planned one times the design's inflation factor, so the planned power holds.
Also runs as `python -m pushrl.policies.abtest.cli ...`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from pushrl.policies.abtest.plan import ALTERNATIVES, TestPlan, plan_mean_test, plan_proportion_test
from pushrl.policies.abtest.sequential import GroupSequentialDesign
from pushrl.policies.abtest.simulate import BernoulliSampler, NormalSampler, simulate_many


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pushrl abtest", description="Plan and simulate an online A/B test.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("plan", "users per arm, days needed, MDE"), ("simulate", "false positives, power, stopping")):
        p = sub.add_parser(name, help=help_, description=help_)
        metric = p.add_mutually_exclusive_group(required=True)
        metric.add_argument("--control-rate", type=float, help="binary reward: control's rate (z-test)")
        metric.add_argument("--mean", type=float, help="continuous reward: control's mean (Welch t-test; needs --sd)")
        p.add_argument("--sd", type=float, help="control's standard deviation (with --mean)")
        p.add_argument("--treatment-sd", type=float, help="treatment's sd (default: --sd)")
        p.add_argument("--lift", type=float, required=True, help="relative lift to detect: 0.1 = +10%%")
        p.add_argument("--alpha", type=float, default=0.05)
        p.add_argument("--power", type=float, default=0.8)
        p.add_argument("--allocation", type=float, default=0.5, help="share of traffic to treatment (default 0.5)")
        p.add_argument("--traffic-per-day", type=float, help="users entering the test per day, both arms")
        p.add_argument("--days", type=float, help="plan: duration for the MDE; simulate: duration to simulate")
        p.add_argument("--alternative", choices=ALTERNATIVES, default="two-sided")
        p.add_argument("--method", choices=("normal", "arcsine"), default="normal", help="proportion power formula")
        p.add_argument("--json", action="store_true", help="print JSON instead of text")
        if name == "simulate":
            p.add_argument("--experiments", type=int, default=1000)
            p.add_argument("--looks", type=int, default=1, help="group-sequential looks (1 = fixed horizon)")
            p.add_argument("--seed", type=int, default=0)
    return parser


def _plan(args: argparse.Namespace) -> TestPlan:
    common: dict[str, Any] = dict(alpha=args.alpha, power=args.power, allocation=args.allocation,
                                  traffic_per_day=args.traffic_per_day, alternative=args.alternative)
    if args.control_rate is not None:
        days = args.days if args.command == "plan" else None
        return plan_proportion_test(args.control_rate, args.lift, days=days, method=args.method, **common)
    if args.sd is None:
        raise ValueError("--mean needs --sd (control's standard deviation)")
    days = args.days if args.command == "plan" else None
    return plan_mean_test(args.mean, args.sd, args.lift, treatment_sd=args.treatment_sd, days=days, **common)


def _simulate(args: argparse.Namespace, plan: TestPlan) -> dict[str, Any]:
    i = plan.inputs
    if args.looks < 1 or args.experiments < 1:
        raise ValueError(f"--looks and --experiments must be >= 1, got {args.looks} and {args.experiments}")
    if args.days is not None:
        n_c, n_t = (int(math.floor(x)) for x in i.arms(args.days))
    else:
        n_c, n_t = plan.users_per_arm
    out: dict[str, Any] = {"users_per_arm": [n_c, n_t]}
    if i.metric == "proportion":
        samplers = {"A/A": BernoulliSampler(i.control_value), "A/B": BernoulliSampler((i.control_value, i.treatment_value))}
    else:
        samplers = {"A/A": NormalSampler(i.control_value, i.control_sd),
                    "A/B": NormalSampler((i.control_value, i.treatment_value), (i.control_sd, i.treatment_sd))}
    runs = [("fixed", 1, n_c, n_t)]
    if args.looks > 1:
        design = GroupSequentialDesign(args.looks, i.alpha, i.alternative)  # type: ignore[arg-type]
        inflation = design.inflation_factor(i.power)
        out["inflation_factor"] = inflation
        runs.append(("sequential", args.looks, math.ceil(n_c * inflation), math.ceil(n_t * inflation)))
    for label, looks, nc, nt in runs:
        for kind, sampler in samplers.items():
            res = simulate_many(sampler, nc, nt, n_experiments=args.experiments, alpha=i.alpha,
                                alternative=i.alternative, n_looks=looks, seed=args.seed)  # type: ignore[arg-type]
            out[f"{label} {kind}"] = res
    return out


def abtest_main(argv: list[str] | None = None) -> int:
    """Entry point of `pushrl abtest`; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help or a usage error, already printed by argparse
        return int(exc.code or 0)
    try:
        plan = _plan(args)
        sims = _simulate(args, plan) if args.command == "simulate" else {}
    except ValueError as exc:
        print(f"pushrl abtest {args.command}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        doc: dict[str, Any] = {"plan": plan.to_dict()}
        for key, value in sims.items():
            doc[key] = value.to_dict() if hasattr(value, "to_dict") else value
        print(json.dumps(doc, indent=2, default=float))
        return 0
    print(plan.to_text())
    if sims:
        n_c, n_t = sims["users_per_arm"]
        print(f"\nsimulated at {n_c:,} control / {n_t:,} treatment users"
              + (f" ({args.days:g} days)" if args.days is not None else " (the plan)"))
        if "inflation_factor" in sims:
            print(f"sequential design: maximum size = plan x {sims['inflation_factor']:.4f} (inflation factor)")
        for key, res in sims.items():
            if hasattr(res, "to_text"):
                what = "false-positive rate" if key.endswith("A/A") else "power"
                print(f"\n[{key}] {what}: {res.rejection_rate:.4f}\n{res.to_text()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(abtest_main())
