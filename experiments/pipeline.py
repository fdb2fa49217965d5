"""`pushrl run`: data -> response model -> simulator -> agents -> simulator value + OPE -> choice.

`run_dataset` is a sequence of named stages over one `DatasetRun` context (fit, fidelity, train,
evaluate, ship, export, report, abtest, sequential, budget, uplift). Wiring only: every computation
is a library call into pushrl.envs / pushrl.policies / pushrl.agents; report text is in
`pushrl.experiments.report_sections`.

Any logging regime goes through: uniform-random logs keep their exact logging distribution as a
baseline policy; logs with stochastic logged (or `data.propensity=estimate`) propensities use them for
OPE and the offline training weights, and value the logging policy on-policy; where a candidate's
effect is not identified (deterministic logging, or no support where it puts mass) the run ships
nothing new and reports DM and the simulator, labelled model-only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from pushrl.agents.export_policies import export_policy
from pushrl.agents.training import (
    SHARED,
    ResponseBandit,
    catalogue_features,
    save_agents,
    train_agents,
    with_intercept,
)
from pushrl.envs.common.atomic import write_json, write_text
from pushrl.envs.common.stats import mean_ci
from pushrl.envs.data.catalogue import coarsest_category
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.model.fidelity import replay_fidelity
from pushrl.envs.model.model_report import amount_report, model_report
from pushrl.envs.model.model_uncertainty import fit_refits
from pushrl.envs.model.resume import fit_or_resume
from pushrl.envs.model.slots import refit_slot_predictions, slot_predictions
from pushrl.envs.objectives import Objective, make_objective
from pushrl.experiments import plots, report_sections
from pushrl.experiments.builders import estimator_settings, response_model_config
from pushrl.experiments.online_test import online_test_section
from pushrl.experiments.outputs import RunFolder
from pushrl.experiments.run_context import (
    DatasetResult,
    DatasetRun,
    LoadedLog,
    dataset_run,
    estimate,
)
from pushrl.experiments.selection import selection_markdown
from pushrl.policies.baselines import logging_replay
from pushrl.policies.evaluation import EstimatorSettings, evaluate_policy
from pushrl.policies.ope.bootstrap import Interval
from pushrl.policies.ope.model_interval import simulator_value_interval
from pushrl.policies.ope.selection import selection_study
from pushrl.policies.policy import to_action_dist
from pushrl.policies.ship import LOGGING, decide

STAGES = ("fit", "refits", "fidelity", "train", "evaluate", "ship", "export", "report", "abtest", "sequential", "budget", "uplift")


def _interval(i: Interval) -> dict[str, float]:
    return {"value": i.value, "ci_low": i.ci_low, "ci_high": i.ci_high}


def stage_fit(ctx: DatasetRun) -> None:
    """Fit the response model on the training split (or reuse the one saved for the same config and rows)."""
    cfg = ctx.cfg
    ctx.say(f"[bold]{ctx.key}[/bold]: fitting the response model on {ctx.split.train.n_rounds:,} rows ...")
    ctx.model = fit_or_resume(response_model_config(cfg), ctx.split, ctx.out_dir / "response_model", ctx.say)
    ctx.report = model_report(ctx.model, ctx.split, ctx.out_dir, seed=cfg.seed)
    ctx.run.add_metrics(f"{ctx.key}/model", ctx.report.table.to_dict(orient="index"))
    for r, kind in list(ctx.model.reward_kinds.items())[1:]:  # every further declared reward gets its check too
        if kind == "binary":
            rep = model_report(ctx.model, ctx.split, ctx.out_dir, seed=cfg.seed, reward=r)
            ctx.reward_reports[r] = rep
            ctx.run.add_metrics(f"{ctx.key}/model_rewards/{r}", rep.table.to_dict(orient="index"))
        else:
            ctx.reward_reports[r] = amount_report(ctx.model, ctx.split, r)
            ctx.run.add_metrics(f"{ctx.key}/model_rewards/{r}", ctx.reward_reports[r])
    ctx.x_test, ctx.recent_test = ctx.model.encode(ctx.split.test)
    ctx.pred_test = ctx.model.predict(ctx.x_test, ctx.recent_test, ctx.split.test.position)


def stage_refits(ctx: DatasetRun) -> None:
    """Bootstrap refits of the response model (by user where the log has users): the model's own
    uncertainty in the DM and simulator intervals (pushrl.policies.ope.model_interval)."""
    k = int(ctx.cfg.eval.model_refits)
    if k == 0:
        return
    ctx.say(f"[bold]{ctx.key}[/bold]: {k} bootstrap refits of the response model (DM and simulator intervals) ...")
    ctx.refits = fit_refits(ctx.split.train, ctx.split.validation, response_model_config(ctx.cfg, progress=False), k,
                            seed=int(ctx.cfg.seed))


def stage_fidelity(ctx: DatasetRun) -> None:
    """The logging policy replayed in the simulator vs the held-out logs, per declared reward."""
    m, test = ctx.model, ctx.split.test
    replay = logging_replay(test.action, ctx.data.n_actions, ctx.uniform_logging)
    fid = pd.concat([
        replay_fidelity(m, ctx.x_test, ctx.recent_test, test.position, replay, test.reward(r), r,
                        alpha=ctx.cfg.eval.alpha, predictions=ctx.pred_test).assign(reward=r)
        for r in m.reward_names], ignore_index=True)
    fid["scope"] = fid["reward"] + ": " + fid["scope"]
    write_text(ctx.out_dir / "fidelity.csv", fid.to_csv(index=False))
    plots.fidelity_plot(fid, ctx.out_dir / "fidelity.png", f"{ctx.key}: logging policy replayed in the simulator")
    ctx.run.add_metrics(f"{ctx.key}/fidelity", {r["scope"].replace(": ", "/"): {
        "logged": r["logged"], "simulated": r["simulated"], "inside_ci": bool(r["inside_ci"])} for r in fid.to_dict("records")})
    ctx.fidelity = fid


def stage_train(ctx: DatasetRun) -> None:
    """Baselines on the training log; bandits offline (IPS on the logged propensities), then online."""
    cfg, data, split, model, objective = ctx.cfg, ctx.data, ctx.split, ctx.model, ctx.objective
    x_train, recent_train = model.encode(split.train)
    ctx.x_train = x_train
    ctx.f_train, ctx.f_test = with_intercept(x_train), with_intercept(ctx.x_test)
    pool_pos = split.train.position
    f_train = ctx.f_train

    def expected_train(rows: np.ndarray) -> np.ndarray:
        pred = model.predict(f_train[rows, :-1], recent_train[rows], pool_pos[rows])
        return objective.expected(pred, data.action_ids)

    simulator_name = "the learned response model"
    if ctx.truth is not None and cfg.train.simulator == "truth":
        # synthetic logs: bandits learn against the known truth, so regret is against the real oracle
        x_true, seg_true, recent_true, _ = ctx.truth.row_inputs(split.train)

        def expected_train(rows: np.ndarray) -> np.ndarray:  # noqa: F811
            pred = ctx.truth.expected_all(x_true[rows], seg_true[rows], recent_true[rows], pool_pos[rows])
            return objective.expected(pred, data.action_ids)

        simulator_name = "the synthetic ground truth"
    specs = {k: dict(v or {}) for k, v in OmegaConf.to_container(cfg.agents, resolve=True).items()}
    if ctx.uniform_logging is None:
        # the logging policy is not context-free here: it is valued on-policy from the log, not replayed
        specs.pop(LOGGING, None)
    z_actions, ctx.catalogue_spec = catalogue_features(model, data.catalogue)
    if z_actions.shape[1] < 2:  # no promotion features: the shared-feature bandits have nothing to score with
        skipped = [n for n in specs if n in SHARED]
        for n in skipped:
            specs.pop(n)
        if skipped:
            ctx.notes.append(f"{', '.join(skipped)} skipped: they score promotions from catalogue features, and this "
                             "log has no catalogue with features (give one with data.catalogue=<file>)")
            ctx.say(f"  {ctx.notes[-1]}")
    ctx.say(f"[bold]{ctx.key}[/bold]: training {len(specs)} agents (objective: {objective.name}) ...")
    uniform = np.full(data.n_actions, 1.0 / data.n_actions)
    ctx.agents = train_agents(
        specs, n_actions=data.n_actions, train_features=f_train, train_action=split.train.action,
        train_reward=objective.logged(split.train), train_pscore=split.train.pscore,
        logging_probabilities=ctx.uniform_logging if ctx.uniform_logging is not None else uniform,
        simulator=ResponseBandit(f_train, expected_train), online_rounds=cfg.train.online_rounds,
        batch_size=cfg.train.batch_size, seed=cfg.seed, progress=lambda m: ctx.say(m), action_features=z_actions,
    )
    save_agents(ctx.agents, ctx.out_dir / "agents", data.n_actions, f_train.shape[1], ctx.catalogue_spec)
    curves = {n: a.online_rewards for n, a in ctx.agents.items() if a.online_rewards is not None}
    ctx.has_curves = bool(curves)
    if curves:
        plots.learning_curves(curves, ctx.out_dir / "learning_curves.png",
                              f"{ctx.key}: reward per batch while learning in the simulator")
    regrets = {n: np.cumsum(a.regret) for n, a in ctx.agents.items() if a.regret is not None and np.isfinite(a.regret).all()}
    if regrets:
        plots.regret_curves(regrets, ctx.out_dir / "regret.png",
                            f"{ctx.key}: cumulative regret against the oracle ({simulator_name})")
        write_text(ctx.out_dir / "regret.csv",
                   pd.DataFrame({n: r[:: max(1, len(r) // 200)] for n, r in regrets.items()}).to_csv())


def _simulator_interval(ctx: DatasetRun, name: str, probs: np.ndarray, q_obj: np.ndarray,
                        q_refits: np.ndarray | None) -> tuple[float, float, float]:
    """The simulator's value of a policy on the test contexts (pushrl.policies.ope.model_interval); the held-out
    DR check of the model's bias enters where the policy's effect is identified."""
    test = ctx.split.test
    checked = test.pscore is not None and ctx.identified.get(name, True)
    logged = dict(reward=ctx.objective.logged(test), action=test.action, pscore=test.pscore) if checked else {}
    return simulator_value_interval(probs, q_obj, q_refits, ctx.cfg.eval.alpha, nonnegative=ctx.objective.is_plain,
                                    **logged)


def stage_evaluate(ctx: DatasetRun) -> None:
    """Simulator value and OPE on the held-out test split, for the objective and for every declared reward."""
    cfg, data, test, objective = ctx.cfg, ctx.data, ctx.split.test, ctx.objective
    settings = estimator_settings(cfg)
    ctx.probabilities = {name: agent.served.action_probabilities(ctx.f_test) for name, agent in ctx.agents.items()}
    for name, probs in ctx.probabilities.items():
        ident = ctx.identification(probs)
        ctx.identified[name] = ident.identified
        if not ident.identified:
            ctx.why_not_identified[name] = ident.why
    any_identified = any(ctx.identified.values()) if ctx.identified else True
    ctx.recommended = choose_estimator(cfg, test, settings, ctx.run, ctx.key) if any_identified else "dm"
    targets: dict[str, Objective] = {objective.name: objective}
    for r in data.reward_names:
        targets.setdefault(r, make_objective(r, data.action_ids))
    q_obj = objective.expected(ctx.pred_test, data.action_ids)
    # once for every target (the objective and each declared reward)
    slot_preds = slot_predictions(ctx.model, ctx.x_test, ctx.recent_test, data.n_positions, logged=ctx.pred_test)
    refit_preds = refit_slot_predictions(ctx.refits, test, data.n_positions)
    q_obj_refits = None if refit_preds is None else np.stack([objective.expected(p, data.action_ids)
                                                              for p in refit_preds[0]])
    if data.n_positions > 1 and refit_preds is not None:  # the simulator values each row at its logged slot
        q_obj_refits = np.stack([objective.expected(p, data.action_ids) for p in ctx.refits.predict(test)])
    sim_rows = []
    replay = (q_obj * logging_replay(test.action, data.n_actions, ctx.uniform_logging)).sum(axis=1)
    if LOGGING not in ctx.probabilities:
        lo_m, lo_lo, lo_hi = mean_ci(replay, cfg.eval.alpha, binary=False)
        sim_rows.append({"policy": LOGGING, "simulator_value": lo_m, "ci_low": lo_lo, "ci_high": lo_hi,
                         "top_action": "(as logged)", "top_action_share": float("nan")})
    for name, probs in ctx.probabilities.items():
        m, lo, hi = _simulator_interval(ctx, name, probs, q_obj, q_obj_refits)
        shares = probs.mean(axis=0)
        sim_rows.append({"policy": name, "simulator_value": m, "ci_low": lo, "ci_high": hi,
                         "top_action": str(data.action_ids[int(shares.argmax())]), "top_action_share": float(shares.max())})
    ctx.simulator = pd.DataFrame(sim_rows).set_index("policy")
    for target, obj in targets.items():
        q_hat = obj.expected_by_slot(slot_preds, data.action_ids)
        q_hat_refits = None if refit_preds is None else obj.expected_by_refit(refit_preds, data.action_ids)
        reward = obj.logged(test)
        evals = {}
        for name, probs in ctx.probabilities.items():
            evals[name] = evaluate_policy(
                policy=name, data=data.name, split="test", action_dist=to_action_dist(probs, data.n_positions),
                reward=reward, action=test.action, pscore=test.pscore, position=test.position,
                estimated_rewards=q_hat, recommended=ctx.recommended, settings=settings,
                n_bootstrap=cfg.eval.n_bootstrap, alpha=cfg.eval.alpha, seed=cfg.seed,
                identified=ctx.identified[name], estimated_rewards_refits=q_hat_refits)
            if name in ctx.why_not_identified:
                evals[name].notes.append(ctx.why_not_identified[name])
        ctx.reward_evaluations[target] = evals
    ctx.evaluations = ctx.reward_evaluations[objective.name]
    ope = pd.DataFrame([r | {"target": t} for t, evals in ctx.reward_evaluations.items()
                        for e in evals.values() for r in e.table_rows()])
    write_text(ctx.out_dir / "ope.csv", ope.to_csv(index=False))
    write_text(ctx.out_dir / "simulator.csv", ctx.simulator.to_csv())
    for name, e in ctx.evaluations.items():
        write_json(ctx.out_dir / "evaluations" / f"{name}.json", e.to_json())
    first = next(iter(ctx.evaluations.values()))
    plots.ope_plot(ope[ope["target"] == objective.name], first.logging, ctx.recommended, ctx.out_dir / "ope.png",
                   f"{ctx.key}: OPE on held-out rows ({objective.name})")


def stage_ship(ctx: DatasetRun) -> None:
    """The ship rule (pushrl.policies.ship) with the configured guardrails."""
    candidates = [n for n in ctx.evaluations if n != LOGGING]
    ctx.decision = decide(ctx.evaluations, ctx.reward_evaluations, ctx.recommended, candidates, ctx.guardrails,
                          ctx.identified)


def stage_export(ctx: DatasetRun) -> None:
    """Export the shipped policy (`artifact/`) and the best learned candidate beside it (`candidate_artifact/`)."""
    cfg, data = ctx.cfg, ctx.data
    exports = {}
    if ctx.chosen != LOGGING or LOGGING in ctx.agents:
        exports["artifact"] = ctx.chosen
    best = ctx.best_learned
    if best and best != ctx.chosen:
        exports["candidate_artifact"] = best
    for folder, name in exports.items():
        e = ctx.evaluations[name]
        ctx.say(f"[bold]{ctx.key}[/bold]: exporting {name} to {ctx.out_dir / folder}")
        ctx.artifacts[folder] = export_policy(
            ctx.agents[name].served, name, ctx.model.encoder, data.action_ids, ctx.out_dir / folder,
            no_push_action=ctx.no_push, catalogue=ctx.catalogue_spec if name in SHARED else None,
            metadata={"data_fingerprint": data.fingerprint(),
                      "training_config": {"seed": int(cfg.seed), "hparams": ctx.agents[name].hparams,
                                          "objective": ctx.objective.name},
                      "metrics": {f"ope_{k}": e.estimates[k].value for k in e.estimates}
                      | {"simulator_value": float(ctx.simulator.loc[name, "simulator_value"])}},
        )


def stage_report(ctx: DatasetRun) -> None:
    """Metrics and the report sections of the choice, the model, fidelity and learning curves."""
    logging_value = next(iter(ctx.evaluations.values())).logging.value
    ctx.run.add_metrics(ctx.key, {
        "objective": ctx.objective.name, "chosen": ctx.chosen, "simulator": ctx.simulator["simulator_value"].to_dict(),
        "ope": {n: {k: e.estimates[k].value for k in e.estimates} for n, e in ctx.evaluations.items()},
        "logging_value": logging_value,
        "rewards": {r: {n: _interval(estimate(e, ctx.recommended)) for n, e in evals.items()}
                    | {LOGGING: {"value": next(iter(evals.values())).logging.value}}
                    for r, evals in ctx.reward_evaluations.items() if r != ctx.objective.name},
        "identified": dict(ctx.identified)})
    report_sections.ship_section(ctx)
    report_sections.model_and_fidelity_sections(ctx.run, ctx.key, ctx.report, ctx.fidelity, report_sections.cold_start_note(ctx.model),
                                                ctx.reward_reports)
    if ctx.has_curves:
        report_sections.learning_curves_section(ctx.run, ctx.key)


def stage_abtest(ctx: DatasetRun) -> None:
    """The online test that would confirm the candidate (the chosen policy, or the best learned one)."""
    candidate = ctx.chosen if ctx.chosen != LOGGING else ctx.best_learned
    if candidate is None:
        return
    sim = ctx.simulator
    binary = ctx.objective.is_plain and bool(np.isin(ctx.split.test.reward(ctx.objective.reward), (0.0, 1.0)).all())
    test = online_test_section(ctx.cfg, ctx.evaluations[candidate], ctx.evaluations[candidate].recommended,
                               float(sim.loc[candidate, "simulator_value"]),
                               float(sim.loc[LOGGING, "simulator_value"]) if LOGGING in sim.index
                               else float(ctx.evaluations[candidate].logging.value),
                               binary=binary, plot_path=ctx.out_dir / "power.png",
                               title=f"{ctx.key}: power of the A/B test of {candidate}")
    ctx.run.add_section(f"{ctx.key}: the online A/B test that would confirm `{candidate}`", test.markdown)
    ctx.run.add_metrics(f"{ctx.key}/abtest", test.metrics)


def stage_sequential(ctx: DatasetRun) -> None:
    """When to push: PPO vs bandits with fatigue and churn, and the accuracy-diversity front."""
    from pushrl.agents.trajectory_eval import trajectory_skip_reason
    from pushrl.experiments.sequential import sequential_section

    trajectory_log = {} if trajectory_skip_reason(ctx.data) else {  # the log's own users, for trajectory OPE
        "log": ctx.data, "log_contexts": ctx.model.encode(ctx.data)[0].astype(np.float64)}
    ctx.say(f"[bold]{ctx.key}[/bold]: sequential simulator (fatigue and churn on): PPO vs bandits, lambda sweep ...")
    seq = sequential_section(ctx.cfg.sequential, model=ctx.model, pool_contexts=ctx.x_train.astype(np.float64),
                             categories=coarsest_category(ctx.data.catalogue), action_ids=ctx.data.action_ids,
                             objective=ctx.objective, no_push_action=ctx.no_push, key=ctx.key, run=ctx.run,
                             seed=int(ctx.cfg.seed), say=ctx.say, **trajectory_log)
    # wall-clock seconds are in the report text; metrics.json holds only reproducible numbers
    dynamics = seq.pop("dynamics", None)
    ctx.run.add_metrics(f"{ctx.key}/sequential", {k: v for k, v in seq.items() if k != "seconds"})
    if dynamics is not None:
        ctx.run.add_metrics(f"{ctx.key}/dynamics", dynamics)


def stage_budget(ctx: DatasetRun) -> None:
    """Value versus send budget (a log with a no-push action)."""
    from pushrl.experiments.budget_section import budget_section

    q_test = ctx.objective.expected(ctx.pred_test, ctx.data.action_ids)
    ctx.run.add_metrics(f"{ctx.key}/budget", budget_section(
        ctx.run, ctx.key, q_test, ctx.data.action_ids.tolist().index(ctx.no_push), ctx.objective.logged(ctx.split.test),
        ctx.split.test.action, ctx.split.test.pscore, ctx.objective.name, int(ctx.cfg.seed),
        data_name=ctx.data.name, no_push_id=ctx.no_push))


def stage_uplift(ctx: DatasetRun) -> None:
    """Uplift over sending nothing: T-learner baselines, every reward, Qini, cross-fitted fidelity."""
    from pushrl.experiments.uplift_section import uplift_section

    ctx.say(f"[bold]{ctx.key}[/bold]: uplift baselines, Qini curves and cross-fitted fidelity ...")
    uplift_section(ctx.cfg, data=ctx.data, split=ctx.split, model=ctx.model, objective=ctx.objective,
                   no_push_action=ctx.no_push, policies={n: a.served for n, a in ctx.agents.items()},
                   features_test=ctx.f_test, key=ctx.key, run=ctx.run, seed=ctx.cfg.seed, say=ctx.say,
                   test_predictions=ctx.pred_test)


SKIPPABLE_STAGES = ("refits", "export", "abtest", "sequential", "budget", "uplift")
"""Stages no later stage needs: `skip=[...]` leaves them out (the others feed the choice and its report)."""


def stages_for(cfg: DictConfig, stop_after: str | None, has_no_push: bool) -> list[str]:
    """The stage names `pushrl run` (None), `fit` or `train` runs, in order, without those in `skip`."""
    skip = list(cfg.get("skip") or [])
    wrong = [s for s in skip if s not in SKIPPABLE_STAGES]
    if wrong:
        raise ValueError(f"skip={wrong} names stages that cannot be skipped (or do not exist); skippable stages: "
                         f"{list(SKIPPABLE_STAGES)}")
    if stop_after == "fit":
        return ["fit", "fidelity"]
    names = ["fit", "refits", "fidelity", "train", "evaluate", "ship"]
    if stop_after == "train":
        names.append("report")
    else:
        names += ["export", "report", "abtest"]
        if cfg.sequential.enabled:
            names.append("sequential")
        if has_no_push:
            names += ["budget", "uplift"]
    return [n for n in names if n not in skip]


STAGE_FUNCTIONS = {"fit": stage_fit, "refits": stage_refits, "fidelity": stage_fidelity, "train": stage_train, "evaluate": stage_evaluate,
                   "ship": stage_ship, "export": stage_export, "report": stage_report, "abtest": stage_abtest,
                   "sequential": stage_sequential, "budget": stage_budget, "uplift": stage_uplift}


def run_stages(ctx: DatasetRun, names: list[str]) -> DatasetRun:
    """Run the named stages (see STAGES) in order on `ctx`."""
    unknown = [n for n in names if n not in STAGE_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown pipeline stage(s) {unknown}; stages: {list(STAGES)}")
    for name in names:
        STAGE_FUNCTIONS[name](ctx)
    return ctx


def run_dataset(cfg: DictConfig, log: LoadedLog, default_objective: str, run: RunFolder, key: str, say,
                stop_after: str | None = None) -> DatasetResult | None:
    """The pipeline on one dataset; adds its report sections and metrics under `key`.

    stop_after: None (everything), "fit" (model report + fidelity), "train" (no export, no A/B section).
    """
    torch.set_num_threads(1)
    if stop_after != "fit" and log.data.pscore is None:
        raise ValueError(f"{log.data.name} has no propensity column: set data.propensity=<column> to the logging "
                         "policy's probability of the logged action, or data.propensity=estimate to estimate them")
    ctx = dataset_run(cfg, log, default_objective, run, key, say)
    names = stages_for(cfg, stop_after, ctx.no_push is not None)
    if stop_after is None and "export" not in names:
        ctx.notes.append("export skipped (`skip` names it): no artifact was written; rerun without it to export")
    run_stages(ctx, names)
    if stop_after == "fit":
        report_sections.model_and_fidelity_sections(run, key, ctx.report, ctx.fidelity,
                                                    report_sections.cold_start_note(ctx.model), ctx.reward_reports)
        return None
    return DatasetResult(key, ctx.objective.name, ctx.chosen, ctx.evaluations, ctx.simulator)


def choose_estimator(cfg: DictConfig, data: LoggedData, settings: EstimatorSettings, run: RunFolder, key: str) -> str:
    """`eval.recommended`, or with 'auto' the winner of a synthetic study shaped like `data` (report section)."""
    if cfg.eval.recommended != "auto":
        return cfg.eval.recommended
    study = selection_study(data.n_rounds, data.n_actions, data.n_positions, settings.build(),
                            n_seeds=cfg.eval.selection_seeds, seed=cfg.seed)
    table, rec = study.table, study.recommended
    write_text(run.path(key, "estimator_selection.csv"), table.to_csv(index=False))
    run.add_section(f"{key}: estimator selection (synthetic ground truth)",
                    selection_markdown(table, rec, data.n_rounds, cfg.eval.selection_seeds))
    return rec


def summary_rows(results: list[DatasetResult]) -> list[dict[str, Any]]:
    return [{"dataset": r.name, "objective": r.objective, "chosen": r.chosen} for r in results]
