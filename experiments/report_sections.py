"""Report text of the `pushrl run` pipeline's own sections (rendering only: the numbers come from the stages)."""

from __future__ import annotations

import pandas as pd

from pushrl.experiments.formatting import fmt, fmt_ci
from pushrl.experiments.outputs import RunFolder
from pushrl.experiments.run_context import DatasetRun, estimate
from pushrl.policies.ship import LOGGING


def _ci(i) -> str:
    return fmt_ci(i.value, i.ci_low, i.ci_high)


def ship_section(ctx: DatasetRun) -> None:
    """Which policy to ship and why: every policy with the objective and every declared reward, with CIs."""
    key, rec, sim, evals = ctx.key, ctx.recommended, ctx.simulator, ctx.evaluations
    decision = ctx.decision
    md = [f"**Ship: `{ctx.chosen}`** — {decision.why}.", ""]
    if "artifact" in ctx.artifacts:
        md.append(f"Artifact: `{ctx.artifacts['artifact']}` (serve it: `pushrl serve {ctx.artifacts['artifact']}`).")
    elif ctx.chosen == LOGGING:
        md.append("Nothing new to ship: keep serving your current (logging) policy.")
    if "candidate_artifact" in ctx.artifacts:
        md.append(f"Best learned candidate (not shipped; try it in shadow mode or an A/B test): "
                  f"`{ctx.artifacts['candidate_artifact']}`.")
    md += ["", *shipping_cautions(ctx), *(f"- {n}" for n in ctx.notes), *([""] if ctx.notes else [])]
    unidentified = [n for n, ok in ctx.identified.items() if not ok]
    if unidentified:
        why = next(iter(ctx.why_not_identified.values()))
        md += [f"**Not identified** for {len(unidentified)} polic(ies) ({', '.join(unidentified[:8])}): {why} "
               "Their values below are **model-only** (DM and the simulator rest on the response model), and none "
               "of them can ship.", ""]
    if ctx.chosen != LOGGING:
        lift = evals[ctx.chosen].lift(rec)
        md += [f"Lift over the logging policy ({rec}): {lift:+.1%}.", ""]
    others = [r for r in ctx.reward_evaluations if r != ctx.objective.name]
    head = (f"| policy | simulator value [95% CI] | OPE {rec} [95% CI] | lift | "
            + " | ".join(f"{r} ({rec}) [95% CI]" for r in others) + (" | " if others else "")
            + "ESS | most pushed | notes |")
    md += [head, "|" + "---|" * (7 + len(others))]
    logging_eval = next(iter(evals.values()))
    if LOGGING not in evals:
        s = sim.loc[LOGGING]
        cells = [_ci(next(iter(ctx.reward_evaluations[r].values())).logging) for r in others]
        md.append(f"| logging (on-policy) | {fmt(s.simulator_value)} [{fmt(s.ci_low)}, {fmt(s.ci_high)}] | "
                  f"{_ci(logging_eval.logging)} | +0.0% | " + "".join(f"{c} | " for c in cells)
                  + f"{logging_eval.n_rounds:,} | as logged | the logged value itself |")
    notes = degenerate_notes(ctx)
    for name, e in evals.items():
        s = sim.loc[name]
        r = estimate(e, rec)
        label = name if ctx.identified.get(name, True) else f"{name} (model-only)"
        cells = [_ci(estimate(ctx.reward_evaluations[t][name], rec)) for t in others]
        note = "; ".join(filter(None, [notes.get(name, ""), _guardrail_note(decision, name)]))
        md.append(f"| {label} | {fmt(s.simulator_value)} [{fmt(s.ci_low)}, {fmt(s.ci_high)}] | {_ci(r)} | "
                  f"{e.lift(rec) if rec in e.estimates else float('nan'):+.1%} | " + "".join(f"{c} | " for c in cells)
                  + f"{e.diagnostics.effective_sample_size:,.0f} | {s.top_action} ({s.top_action_share:.0%}) | {note} |")
    lv = logging_eval.logging
    interval = (" The simulator's and DM's intervals include the response model's own uncertainty (bootstrap refits) "
                "and, where the effect is identified, its held-out bias check: they span the DR interval too."
                if ctx.refits is not None else "")
    md += ["", f"Logging policy's on-policy value on the test split: {_ci(lv)} ({ctx.split.test.n_rounds:,} rows, "
           f"objective `{ctx.objective.name}` = {ctx.objective.describe()}).{interval} Every declared reward is shown "
           "beside the objective; "
           f"`objective.guardrails` bounds how far any of them may fall. All seven estimators per policy and reward: "
           f"`{key}/ope.csv`; one `evaluation.json` per policy in `{key}/evaluations/`.", "", f"![OPE]({key}/ope.png)"]
    ctx.run.add_section(f"{key}: which policy to ship", "\n".join(md))


def shipping_cautions(ctx: DatasetRun) -> list[str]:
    """What shipping the chosen policy gives up: exploration for the next OPE round, the no-push holdout."""
    probs = ctx.probabilities.get(ctx.chosen)
    if ctx.chosen == LOGGING or probs is None:
        return []
    out = []
    shares = probs.mean(axis=0)
    top = int(shares.argmax())
    if shares[top] >= 0.99:
        out.append(f"- `{ctx.chosen}` pushes `{ctx.data.action_ids[top]}` to {shares[top]:.1%} of users.")
    if float((probs.max(axis=1) >= 0.999).mean()) > 0.99:
        out.append(f"- `{ctx.chosen}` is deterministic (propensity 1): the log it writes cannot evaluate any other "
                   "policy next round. Keep some exploration (serve an epsilon-greedy or softmax candidate, or a "
                   "random holdout share) or run candidates in shadow mode beside it.")
    if ctx.no_push is not None:
        k = ctx.data.action_ids.tolist().index(ctx.no_push)
        logged = float((ctx.split.test.action == k).mean())
        if logged > 0 and shares[k] < 0.01:
            out.append(f"- It (almost) never chooses `{ctx.no_push}`, which the log sent to {logged:.1%} of users: the "
                       "holdout that measures uplift over sending nothing is gone unless you keep one beside it.")
    return out + ([""] if out else [])


def degenerate_notes(ctx: DatasetRun) -> dict[str, str]:
    """Candidates that collapsed onto one action or duplicate a baseline (pushrl.policies.degenerate)."""
    from pushrl.agents.training import BASELINES
    from pushrl.policies.degenerate import degenerate_notes as notes

    baselines = [n for n in ctx.probabilities if n in BASELINES]
    return notes(ctx.probabilities, baselines, ctx.data.action_ids)


def _guardrail_note(decision, name: str) -> str:
    v = decision.verdicts.get(name)
    if v is None or not v.guardrails:
        return ""
    broken = [g for g, ok in v.guardrails.items() if not ok]
    return f"guardrail {', '.join(broken)} not shown to hold" if broken else "within guardrails"


def model_and_fidelity_sections(run: RunFolder, key: str, report, fid: pd.DataFrame, cold_start: list[str],
                                reward_reports: dict | None = None) -> None:
    """The report's simulator-fidelity and response-model sections (every command that fits a model)."""
    fid_md = ["| scope | rows | logged [95% CI] | simulated | inside CI |", "|---|---|---|---|---|"]
    for r in fid.to_dict("records"):
        fid_md.append(f"| {r['scope']} | {r['rows']:,} | {fmt(r['logged'])} [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}] | "
                      f"{fmt(r['simulated'])} | {'yes' if r['inside_ci'] else '**no**'} |")
    fid_md += ["", f"![fidelity]({key}/fidelity.png)"]
    run.add_section(f"{key}: simulator fidelity (logging policy replayed on held-out rows)", "\n".join(fid_md))
    model_md = [report.to_markdown(), "", f"![calibration]({key}/reliability.png)", *cold_start]
    for reward, rep in (reward_reports or {}).items():
        if isinstance(rep, dict):  # an amount: mean, deviance and RMSE against the training mean
            model_md += ["", f"**{reward}** (amount, log link): mean predicted {fmt(rep['mean_pred'])} vs observed "
                         f"{fmt(rep['mean_observed'])}; Poisson deviance {fmt(rep['deviance'])} (training mean: "
                         f"{fmt(rep['deviance_base'])}); RMSE {fmt(rep['rmse'])} ({fmt(rep['rmse_base'])})."]
        else:
            model_md += ["", f"**{reward}**:", "", rep.to_markdown(), "",
                         f"![calibration of {reward}]({key}/reliability_{reward}.png)"]
    run.add_section(f"{key}: response model (held-out test split)", "\n".join(model_md))


def learning_curves_section(run: RunFolder, key: str) -> None:
    extra = f"\n\n![regret]({key}/regret.png)" if (run.root / key / "regret.png").exists() else ""
    run.add_section(f"{key}: learning curves", f"![learning curves]({key}/learning_curves.png){extra}")


def cold_start_note(model) -> list[str]:
    """A report line naming the catalogue promotions the model never saw in training (scored from features)."""
    unseen = [a for a, s in zip(model.catalogue_ids, model.net.seen.tolist(), strict=True) if not s]
    if not unseen:
        return []
    how = ("its content path was trained with id dropout" if model.config.id_dropout > 0 else
           "set `model.id_dropout=0.5` to train that content path (promotion ids switched off on half the rows)")
    return ["", f"Cold start: {len(unseen)} catalogue promotion(s) have no training rows ({unseen[:10]}); the model "
            f"scores them from their features only, and OPE flags any policy mass on them; {how}."]
