"""The uplift section's report text, plots and headline metrics, from an `UpliftAnalysis` (rendering only)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pushrl.agents.uplift_analysis import VALIDATION_SHARE, QiniCurve, UpliftAnalysis
from pushrl.experiments.formatting import fmt, pct
from pushrl.experiments.plots import save_figure
from pushrl.policies.uplift import estimators_of, ips_identified, lift, logged_pscore

MAX_SHARE_COLUMNS = 6  # the report's share column lists every action up to this many, else no push + top push
_YES = {True: "**yes**", False: "**no**"}


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def notes(a: UpliftAnalysis) -> list[str]:
    """The caveats every section repeats: IPS not identified, no T-learner."""
    out = [] if a.identified else [f"IPS is not identified on this log ({a.why_not}): values are DM (the response "
                                   "model's, model-only); the Qini curves, the cross-fitted IPS comparison and the "
                                   "quality bar are skipped."]
    if a.t_learner_missing:
        out.append(f"No T-learner: action(s) {a.t_learner_missing} have no training rows (a T-learner needs rows of "
                   "every action).")
    return out


def _outcome_bar(c: dict[str, Any], outcome_obj: str) -> list[str]:
    return [f"**{outcome_obj.capitalize()}** — best: `{c['best']}`, IPS {fmt(c['ips'])} [95% CI {fmt(c['ci_low'])}, "
            f"{fmt(c['ci_high'])}]; logging policy {fmt(c['logging'])}; best always-push "
            f"({c['best_always_push_action']}) {fmt(c['best_always_push'])}.",
            f"- CI lower bound above the logging policy's value: {_YES[c['ci_low_above_logging']]} "
            f"({fmt(c['ci_low'])} vs {fmt(c['logging'])})",
            f"- point estimate >= the best always-push: {_YES[c['at_least_best_always_push']]} ({fmt(c['ips'])} vs "
            f"{fmt(c['best_always_push'])})",
            f"- bar {_met(c['met'])} on the test split.", ""]


def _value_bar(p: dict[str, Any], value_obj: str, no_push_label: str) -> list[str]:
    costs = ", the default costs" if p["default_costs"] else ", NOT the default costs"
    what = (f"margin {p['margin']:.2f} × {p['money']} − {p['push_cost']:.2f} per push{costs}"
            if value_obj == "profit" else f"{p['push_cost']:.2f} per push")
    return [f"**{value_obj.capitalize()}** ({what}) — best: `{p['best']}`, IPS {fmt(p['ips'])} [95% CI "
            f"{fmt(p['ci_low'])}, {fmt(p['ci_high'])}]; best always-push ({p['best_always_push_action']}) "
            f"{fmt(p['best_always_push'])}; sending nothing ({no_push_label}) {fmt(p['no_push'])}; "
            f"logging {fmt(p['logging'])}.",
            f"- beats the best always-push: {_YES[p['beats_best_always_push']]}; beats sending nothing: "
            f"{_YES[p['beats_no_push']]}",
            f"- bar {_met(p['met'])} on the test split (point estimates; the CI says how sure).", ""]


def bar_markdown(a: UpliftAnalysis) -> str:
    """The quality-bar section."""
    bar, outcome_obj, value_obj = a.quality_bar, a.outcome_objective, a.value_objective
    how = ("random split stratified by action; the log has no timestamps" if a.split.method == "random-stratified"
           else "the latest rows of the log")
    md = [f"Held-out test split: {a.split.test.n_rounds:,} rows ({how}). No-push action: `{a.arms.no_push_id}`."]
    md += notes(a)
    if not bar:
        return "\n".join([*md, "", "Quality bar not assessed: it is stated on IPS, which this log does not identify."])
    md += ["\"Best\" = the learned policy (the pipeline's agents and the uplift baselines) with the highest IPS "
           "value on these same rows, so its estimate is optimistic (picked on the data that scores it). \"Best "
           "always-push\" = the push whose always-policy has the highest SNIPS value on these rows.", ""]
    md += _outcome_bar(bar[outcome_obj], outcome_obj)
    if value_obj is not None:
        md += _value_bar(bar[value_obj], value_obj, a.arms.no_push_label)
    ccf = bar[outcome_obj]["cross_fitted"]
    md += [f"Cross-fitted check on the whole log ({ccf['rows']:,} rows, {a.n_folds} folds; each fold's policy "
           "learned on the other folds, so no row scores a policy that saw it):",
           f"- {outcome_obj}, `{ccf['policy']}`: IPS {fmt(ccf['ips'])} [{fmt(ccf['ci_low'])}, {fmt(ccf['ci_high'])}] "
           f"vs logging {fmt(ccf['logging'])} (CI above: {_YES[ccf['ci_low_above_logging']]}), best always-push "
           f"{fmt(ccf['best_always_push'])} (>=: {_YES[ccf['at_least_best_always_push']]}): {_met(ccf['met'])}"]
    if value_obj is not None:
        pcf = bar[value_obj]["cross_fitted"]
        md.append(f"- {value_obj}, `{pcf['policy']}`: IPS {fmt(pcf['ips'])} [{fmt(pcf['ci_low'])}, "
                  f"{fmt(pcf['ci_high'])}] vs best always-push {fmt(pcf['best_always_push'])} "
                  f"({_YES[pcf['beats_best_always_push']]}), sending nothing {fmt(pcf['no_push'])} "
                  f"({_YES[pcf['beats_no_push']]}): {_met(pcf['met'])}")
    return "\n".join(md)


def _share_cells(a: UpliftAnalysis) -> tuple[str, Callable[[np.ndarray], str]]:
    """The share column's header and a formatter of one policy's (A,) shares."""
    ids = a.arms.ids.tolist()
    order = [a.arms.no_push, *a.arms.pushes]
    if len(ids) <= MAX_SHARE_COLUMNS:
        return ("shares " + " / ".join(str(ids[i]) for i in order),
                lambda s: "/".join(f"{s[i]:.0%}" for i in order))

    def top(s: np.ndarray) -> str:
        i = max(a.arms.pushes, key=lambda j: s[j])
        return f"{s[a.arms.no_push]:.0%} / {ids[i]} {s[i]:.0%}"

    return "share of no push / top push", top


def ope_markdown(a: UpliftAnalysis, key: str) -> str:
    """The OPE section: every policy x every objective on the test split."""
    estimators = estimators_of(a.evals)
    main = "snips" if a.identified else "dm"
    how = "with the logged propensities" if a.identified else "by the response model (DM)"
    md = [f"Every policy on every objective, on the {a.split.test.n_rounds:,} held-out test rows, valued {how}. Values "
          f"per customer with 95% bootstrap CIs; lifts (relative, {main.upper()}) over the "
          "logging policy, the best always-push policy (named per objective) and sending nothing "
          f"({a.arms.no_push_label}). `t_learner` and `uplift_pays` are re-derived for each objective (per-action "
          f"response models / the pooled response model); the pipeline's agents were trained for "
          f"`{a.pipeline_objective.name}`. Every estimator and lift: `{key}/uplift_ope.csv`.", ""]
    if not a.identified:
        md += [notes(a)[0], ""]
    header, share = _share_cells(a)
    for o, by_policy in a.evals.items():
        lv = next(iter(by_policy.values())).logging
        md += [f"**{o}** (logging policy: {fmt(lv.value)} [{fmt(lv.ci_low)}, {fmt(lv.ci_high)}]; best always-push: "
               f"{a.best_always_push[o]})", "",
               "| policy | " + " | ".join(f"{k.upper()} [95% CI]" for k in estimators)
               + f" | lift vs logging / best push / no push | {header} |",
               "|---|" + "---|" * (len(estimators) + 2)]
        ref = by_policy[a.best_always_push[o]].estimates[main].value
        none = by_policy[a.arms.no_push_label].estimates[main].value
        for name, e in by_policy.items():
            cells = [f"{fmt(e.estimates[k].value)} [{fmt(e.estimates[k].ci_low)}, {fmt(e.estimates[k].ci_high)}]"
                     for k in estimators]
            v = e.estimates[main].value
            md.append(f"| {name} | " + " | ".join(cells) + f" | {pct(e.lift(main))} / {pct(lift(v, ref))} / "
                      f"{pct(lift(v, none))} | {share(a.shares[o][name])} |")
        md.append("")
    return "\n".join(md)


def qini_markdown(a: UpliftAnalysis, key: str) -> str:
    """The Qini section."""
    if not a.identified:
        return ("Not computed: a Qini curve compares pushed and not-pushed customers, which a log whose propensities "
                "are all 1.0 never logs side by side (IPS is not identified).")
    p = logged_pscore(a.split.test)
    how = (" Rows are weighted by their inverse logged propensity (normalised to mean 1), as if the log had been "
           "randomised uniformly." if not np.all(p == p[0]) else "")
    md = [f"Any push (treated: every action but `{a.arms.no_push_id}`) vs no push on the test split; score = "
          "predicted outcome of the best push minus that of no push; coefficient = area between the Qini curve and "
          "random targeting per customer (positive: better than random), with a 95% bootstrap CI (resampled "
          "customers). For scale: the incremental outcome per customer with everyone targeted is in the last "
          f"column.{how}", "",
          "| outcome | score | Qini coefficient [95% CI] | incremental per customer, all targeted |", "|---|---|---|---|"]
    md += [f"| {r['reward']} | {r['score']} | {r['coefficient']:+.4g} [{r['ci_low']:+.4g}, {r['ci_high']:+.4g}] | "
           f"{fmt(r['overall_gain_per_customer'])} |" for r in a.qini.table.to_dict("records")]
    md += ["", f"![Qini]({key}/qini.png)"]
    return "\n".join(md)


def _fidelity_note(a: UpliftAnalysis) -> str:
    best = a.best_learned[a.pipeline_objective.name]
    if a.fidelity_policy == best:
        return ""
    return (f"`{best}` (the best learned policy) cannot be re-learned per fold here; the fidelity check uses the best "
            f"one that can, `{a.fidelity_policy}`.")


def fidelity_markdown(a: UpliftAnalysis, key: str) -> str:
    """The cross-fitted fidelity section (with the section's run time)."""
    run_time = "Section run time: " + ", ".join(f"{k} {v:.1f} s" for k, v in a.timings.items()) + "."
    if not a.identified:
        return ("Skipped: the cross-fitted check compares the simulator with IPS per fold, and IPS is not "
                f"identified on this log ({ips_identified(a.data)[1]}).\n\n{run_time}")
    pooled = a.fidelity[a.fidelity["scope"] == "pooled"]
    md = [f"{a.n_folds}-fold cross-fitting on the whole log ({a.data.n_rounds:,} rows): per fold a response model "
          f"with the pipeline's settings (at most {a.fidelity_epochs} epochs; {VALIDATION_SHARE:.0%} of the other "
          "folds for early stopping) fitted on the other folds is the simulator; the always-X policies and the best "
          f"learned policy (`{a.fidelity_policy}`, trained for `{a.fidelity_trained_for}` and re-learned on the "
          "other folds) are valued by it on the held-out fold and compared with the fold's IPS estimate (logged "
          "propensities; 95% CI, normal approximation). Pooled: each row valued by the model that did not see it, "
          "over all rows.", ""]
    if _fidelity_note(a):
        md += [_fidelity_note(a), ""]
    md += ["| objective | policy | simulator | IPS [95% CI] | inside CI (pooled) | folds inside CI |",
           "|---|---|---|---|---|---|"]
    for r in pooled.to_dict("records"):
        md.append(f"| {r['objective']} | {r['policy']} | {fmt(r['simulated'])} | {fmt(r['ips'])} "
                  f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}] | {'yes' if r['inside_ci'] else '**no**'} | "
                  f"{r['folds_inside']} |")
    n_in = int(pooled["inside_ci"].sum())
    md += ["", f"Pooled: {n_in}/{len(pooled)} inside the CI. Per fold: `{key}/uplift_fidelity.csv`.", "",
           f"![fidelity]({key}/uplift_fidelity.png)", "", run_time]
    return "\n".join(md)


# plots --------------------------------------------------------------------------------------------
def qini_plot(curves: dict[tuple[str, str], QiniCurve], path: Path, title: str) -> None:
    """One panel per reward: each score's Qini curve and random targeting (nothing written without curves)."""
    import matplotlib.pyplot as plt  # the backend is set by pushrl.experiments.plots (imported above)

    rewards = list(dict.fromkeys(r for r, _ in curves))
    if not rewards:
        return
    fig, axes = plt.subplots(1, len(rewards), figsize=(4.8 * len(rewards), 4.4), squeeze=False, layout="constrained")
    for ax, r in zip(axes[0], rewards, strict=True):
        end = None
        for (rr, label), c in curves.items():
            if rr != r:
                continue
            ax.plot(c.fraction_targeted, c.gain, label=f"{label}: {c.coefficient:+.4g}")
            end = c.gain[-1]
        if end is not None:
            ax.plot([0, 1], [0, end], color="grey", ls="--", label="random targeting")
        ax.set_title(f"{r}", fontsize=9)
        ax.set_xlabel("fraction targeted (highest score first)")
        ax.set_ylabel(f"incremental {r} (Qini)")
        ax.legend(fontsize=6, loc="upper left", framealpha=0.6)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


def fidelity_plot(table: pd.DataFrame, path: Path, title: str) -> None:
    """One panel per objective: each policy's IPS (95% CI) and its cross-fitted simulated value."""
    import matplotlib.pyplot as plt  # the backend is set by pushrl.experiments.plots (imported above)

    objs = list(dict.fromkeys(table["objective"]))
    fig, axes = plt.subplots(1, len(objs), figsize=(3.8 * len(objs), 3.2), squeeze=False, layout="constrained")
    for j, (ax, o) in enumerate(zip(axes[0], objs, strict=True)):
        t = table[table["objective"] == o].reset_index(drop=True)
        y = np.arange(len(t))
        ax.errorbar(t["ips"], y, xerr=[t["ips"] - t["ci_low"], t["ci_high"] - t["ips"]], fmt="o", color="black",
                    label="IPS (95% CI)")
        ax.scatter(t["simulated"], y, marker="x", color="tab:red", s=60, zorder=3, label="simulator (cross-fitted)")
        ax.set_yticks(y, t["policy"] if j == 0 else [""] * len(t), fontsize=7)
        ax.set_title(o, fontsize=9)
        ax.set_xlabel("value per customer")
        if j == 0:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)


# headline metrics ---------------------------------------------------------------------------------
def _plain(d: dict) -> dict:
    return {k: (_plain(v) if isinstance(v, dict) else (bool(v) if isinstance(v, np.bool_) else v)) for k, v in d.items()}


def headline(a: UpliftAnalysis) -> dict[str, Any]:
    """The section's headline metrics (`seconds`: wall-clock, kept out of metrics.json by the caller)."""
    estimators = estimators_of(a.evals)
    ope = {o: {n: {k: float(e.estimates[k].value) for k in estimators}
               | ({"ips_ci_low": float(e.estimates["ips"].ci_low), "ips_ci_high": float(e.estimates["ips"].ci_high)}
                  if a.identified else {})
               for n, e in by_policy.items()} for o, by_policy in a.evals.items()}
    logging = {o: float(next(iter(by_policy.values())).logging.value) for o, by_policy in a.evals.items()}
    q = {f"{r['reward']}/{r['score'].split(' ')[0]}": {k: float(r[k]) for k in ("coefficient", "ci_low", "ci_high")}
         for r in a.qini.table.to_dict("records")}
    f = {}
    if len(a.fidelity):
        pooled = a.fidelity[a.fidelity["scope"] == "pooled"]
        f = {f"{r['objective']}/{r['policy']}": {"simulated": float(r["simulated"]), "ips": float(r["ips"]),
                                                 "ci_low": float(r["ci_low"]), "ci_high": float(r["ci_high"]),
                                                 "inside_ci": bool(r["inside_ci"]), "folds_inside": r["folds_inside"]}
             for r in pooled.to_dict("records")}
    return {"no_push_action": str(a.arms.no_push_id), "identified": a.identified, "ope": ope, "logging_value": logging,
            "best_learned": dict(a.best_learned), "best_always_push": dict(a.best_always_push), "qini": q,
            "fidelity": f, "quality_bar": _plain(a.quality_bar),
            "seconds": {k: round(float(v), 2) for k, v in a.timings.items()}}
