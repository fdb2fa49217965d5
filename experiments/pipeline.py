"""`pushrl run`: data -> response model -> simulator -> agents -> simulator value + OPE -> choice.

One section of the report per dataset. Wiring only: every computation is a
library call into pushrl.envs / pushrl.policies / pushrl.agents.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from pushrl.agents.export_policies import export_policy
from pushrl.envs.atomic import write_json, write_text
from pushrl.envs.fidelity import mean_ci, replay_fidelity
from pushrl.envs.logged_data import LoggedData
from pushrl.envs.model_report import model_report
from pushrl.envs.objectives import Objective, make_objective
from pushrl.envs.response_model import ResponseModel, ResponseModelConfig
from pushrl.envs.schema import BINARY_REWARDS
from pushrl.envs.split import Split
from pushrl.experiments import plots
from pushrl.experiments.agents import (
    SHARED,
    ResponseBandit,
    catalogue_features,
    save_agents,
    train_agents,
    with_intercept,
)
from pushrl.experiments.hillstrom import hillstrom_section
from pushrl.experiments.online_test import online_test_section
from pushrl.experiments.outputs import RunFolder
from pushrl.experiments.selection import selection_markdown, selection_study
from pushrl.experiments.sequential import sequential_section
from pushrl.policies.evaluation import EstimatorSettings, PolicyEvaluation, evaluate_policy
from pushrl.policies.policy import to_action_dist


@dataclass
class DatasetResult:
    name: str
    objective: str
    chosen: str
    evaluations: dict[str, PolicyEvaluation]
    simulator: pd.DataFrame


def resolve_objective(cfg_objective: DictConfig, data: LoggedData, default: str) -> Objective:
    """The objective for this log ('auto' = the dataset's default); refuses rewards the log lacks."""
    name = cfg_objective.reward if cfg_objective.reward != "auto" else default
    base = "spend" if name == "profit" else name
    if base not in data.reward_names:
        raise ValueError(f"objective.reward={name!r} needs the reward column {base!r}; {data.name} has {list(data.reward_names)}")
    no_push = cfg_objective.no_push_action if cfg_objective.no_push_action in data.action_ids.tolist() else None
    return make_objective(name, data.action_ids, margin=cfg_objective.margin, push_cost=cfg_objective.push_cost,
                          no_push_action=no_push)


def cold_start_note(model: ResponseModel) -> list[str]:
    """A report line naming the catalogue promotions the model never saw in training (scored from features)."""
    unseen = [a for a, s in zip(model.catalogue_ids, model.net.seen.tolist(), strict=True) if not s]
    if not unseen:
        return []
    how = ("its content path was trained with id dropout" if model.config.id_dropout > 0 else
           "set `model.id_dropout=0.5` to train that content path (promotion ids switched off on half the rows)")
    return ["", f"Cold start: {len(unseen)} catalogue promotion(s) have no training rows ({unseen[:10]}); the model "
            f"scores them from their features only, and OPE flags any policy mass on them; {how}."]


def _logging_probabilities(data: LoggedData) -> np.ndarray:
    """(A,) logging probabilities for a context-free logging policy (uniform here; checked)."""
    p = data.pscore
    if p is None or not np.allclose(p, 1.0 / data.n_actions):
        raise ValueError(f"{data.name}: the run pipeline needs a uniform-random log (propensity 1/n_actions); "
                         "use `pushrl evaluate` for other logging policies")
    return np.full(data.n_actions, 1.0 / data.n_actions)


def run_dataset(cfg: DictConfig, data: LoggedData, split: Split, default_objective: str, run: RunFolder,
                key: str, say, truth=None, stop_after: str | None = None) -> DatasetResult | None:
    """The pipeline on one dataset; adds its report sections and metrics under `key`.

    stop_after: None (everything), "fit" (model report + fidelity), "train" (no export, no A/B section).
    """
    torch.set_num_threads(1)
    objective = resolve_objective(cfg.objective, data, default_objective)
    out_dir = run.path(key)

    # 1. response model ----------------------------------------------------------------------
    say(f"[bold]{key}[/bold]: fitting the response model on {split.train.n_rounds:,} rows ...")
    mcfg = ResponseModelConfig(**OmegaConf.to_container(cfg.model, resolve=True), seed=cfg.seed, progress=cfg.progress)
    model = fit_or_resume(mcfg, split, out_dir / "response_model", say)
    report = model_report(model, split, out_dir, seed=cfg.seed)
    run.add_metrics(f"{key}/model", report.table.to_dict(orient="index"))

    # 2. simulator fidelity (held-out test rows) -------------------------------------------------
    x_test, recent_test = model.encode(split.test)
    pred_test = model.predict(x_test, recent_test, split.test.position)  # once: fidelity, simulator value, OPE
    logging_p = _logging_probabilities(data)
    fid = pd.concat([
        replay_fidelity(model, x_test, recent_test, split.test.position, np.tile(logging_p, (split.test.n_rounds, 1)),
                        split.test.reward(r), r, alpha=cfg.eval.alpha, predictions=pred_test).assign(reward=r)
        for r in model.reward_names], ignore_index=True)
    fid["scope"] = fid["reward"] + ": " + fid["scope"]
    write_text(out_dir / "fidelity.csv", fid.to_csv(index=False))
    plots.fidelity_plot(fid, out_dir / "fidelity.png", f"{key}: logging policy replayed in the simulator")
    run.add_metrics(f"{key}/fidelity", {r["scope"].replace(": ", "/"): {"logged": r["logged"], "simulated": r["simulated"],
                                                      "inside_ci": bool(r["inside_ci"])} for r in fid.to_dict("records")})

    if stop_after == "fit":
        _model_and_fidelity_sections(run, key, report, fid, cold_start_note(model))
        return None

    # 3. agents --------------------------------------------------------------------------------
    x_train, recent_train = model.encode(split.train)
    f_train, f_test = with_intercept(x_train), with_intercept(x_test)
    pool_pos = split.train.position

    def expected_train(rows: np.ndarray) -> np.ndarray:
        x = f_train[rows, :-1]
        pred = model.predict(x, recent_train[rows], pool_pos[rows])
        return objective.expected(pred, data.action_ids)

    simulator_name = "the learned response model"
    if truth is not None and cfg.train.simulator == "truth":
        # synthetic logs: bandits learn against the known truth, so regret is against the real oracle
        x_true, seg_true, recent_true, _ = truth.row_inputs(split.train)

        def expected_train(rows: np.ndarray) -> np.ndarray:  # noqa: F811
            pred = truth.expected_all(x_true[rows], seg_true[rows], recent_true[rows], pool_pos[rows])
            return objective.expected(pred, data.action_ids)

        simulator_name = "the synthetic ground truth"
    simulator = ResponseBandit(f_train, expected_train)
    train_reward = objective.logged(split.train)
    say(f"[bold]{key}[/bold]: training {len(cfg.agents)} agents (objective: {objective.name}) ...")
    z_actions, catalogue_spec = catalogue_features(model, data.catalogue)
    agents = train_agents(
        {k: dict(v or {}) for k, v in OmegaConf.to_container(cfg.agents, resolve=True).items()},
        n_actions=data.n_actions, train_features=f_train, train_action=split.train.action, train_reward=train_reward,
        train_pscore=split.train.pscore, logging_probabilities=logging_p, simulator=simulator,
        online_rounds=cfg.train.online_rounds, batch_size=cfg.train.batch_size, seed=cfg.seed,
        progress=lambda m: say(m), action_features=z_actions,
    )
    save_agents(agents, out_dir / "agents", data.n_actions, f_train.shape[1], catalogue_spec)
    curves = {n: a.online_rewards for n, a in agents.items() if a.online_rewards is not None}
    if curves:
        plots.learning_curves(curves, out_dir / "learning_curves.png", f"{key}: reward per batch while learning in the simulator")
    regrets = {n: np.cumsum(a.regret) for n, a in agents.items() if a.regret is not None and np.isfinite(a.regret).all()}
    if regrets:
        plots.regret_curves(regrets, out_dir / "regret.png", f"{key}: cumulative regret against the oracle ({simulator_name})")
        write_text(out_dir / "regret.csv", pd.DataFrame({n: r[:: max(1, len(r) // 200)] for n, r in regrets.items()}).to_csv())

    # 4. simulator value and OPE on the held-out test split ---------------------------------------
    q_test = objective.expected(pred_test, data.action_ids)
    eval_reward = objective.logged(split.test)
    q_hat = to_action_dist(q_test, data.n_positions) if data.n_positions == 1 else np.stack(
        [objective.expected(model.predict(x_test, recent_test, np.full(split.test.n_rounds, k)), data.action_ids)
         for k in range(data.n_positions)], axis=2)
    settings = EstimatorSettings(clip=cfg.eval.clip, switch_threshold=cfg.eval.switch_threshold,
                                 dros_lambda=cfg.eval.dros_lambda)
    rec = choose_estimator(cfg, split.test, settings, run, key)
    evaluations: dict[str, PolicyEvaluation] = {}
    sim_rows = []
    for name, agent in agents.items():
        probs = agent.policy.action_probabilities(f_test)
        v = probs * q_test
        sim_mean, sim_lo, sim_hi = mean_ci(v.sum(axis=1), cfg.eval.alpha, binary=False)
        shares = probs.mean(axis=0)
        sim_rows.append({"policy": name, "simulator_value": sim_mean, "ci_low": sim_lo, "ci_high": sim_hi,
                         "top_action": str(data.action_ids[int(shares.argmax())]), "top_action_share": float(shares.max())})
        evaluations[name] = evaluate_policy(
            policy=name, data=data.name, split="test", action_dist=to_action_dist(probs, data.n_positions),
            reward=eval_reward, action=split.test.action, pscore=split.test.pscore, position=split.test.position,
            estimated_rewards=q_hat, recommended=rec, settings=settings,
            n_bootstrap=cfg.eval.n_bootstrap, alpha=cfg.eval.alpha, seed=cfg.seed,
        )
    sim = pd.DataFrame(sim_rows).set_index("policy")
    ope = pd.DataFrame([r for e in evaluations.values() for r in e.table_rows()])
    write_text(out_dir / "ope.csv", ope.to_csv(index=False))
    write_text(out_dir / "simulator.csv", sim.to_csv())
    for name, e in evaluations.items():
        write_json(out_dir / "evaluations" / f"{name}.json", e.to_json())
    plots.ope_plot(ope, evaluations[next(iter(evaluations))].logging, rec, out_dir / "ope.png",
                   f"{key}: OPE on held-out rows ({objective.name})")

    # 5. choice: the best recommended-estimator value whose CI lower bound beats the logging policy
    logging_value = next(iter(evaluations.values())).logging
    ranked = sorted(evaluations.values(), key=lambda e: e.estimates[rec].value, reverse=True)
    confident = [e for e in ranked if e.estimates[rec].ci_low > logging_value.value and e.policy != "logging"]
    if confident:
        chosen = confident[0].policy
        why = (f"highest {rec} value ({confident[0].estimates[rec].value:.5g}) with its 95% CI lower bound "
               f"({confident[0].estimates[rec].ci_low:.5g}) above the logging policy's value ({logging_value.value:.5g})")
    else:
        chosen = "logging"
        why = (f"no policy's {rec} 95% CI lower bound is above the logging policy's value ({logging_value.value:.5g}); "
               f"the best point estimate is {ranked[0].policy} ({ranked[0].estimates[rec].value:.5g}), "
               "not a confident improvement, so keep the logging policy and collect more data")
    # 6. export: the chosen policy, and the best learned candidate beside it if that is another one
    best_learned = next((e.policy for e in ranked if agents[e.policy].kind != "baseline"), None)
    exports = {"artifact": chosen} if stop_after != "train" else {}
    if best_learned and best_learned != chosen and stop_after != "train":
        exports["candidate_artifact"] = best_learned
    artifact_paths = {}
    for folder, name in exports.items():
        e = evaluations[name]
        say(f"[bold]{key}[/bold]: exporting {name} to {out_dir / folder}")
        artifact_paths[folder] = export_policy(
            agents[name].policy, name, model.encoder, data.action_ids, out_dir / folder,
            no_push_action=objective_no_push(cfg, data), catalogue=catalogue_spec if name in SHARED else None,
            metadata={"data_fingerprint": data.fingerprint(),
                      "training_config": {"seed": int(cfg.seed), "hparams": agents[name].hparams, "objective": objective.name},
                      "metrics": {f"ope_{k}": e.estimates[k].value for k in e.estimates}
                      | {"simulator_value": float(sim.loc[name, "simulator_value"])}},
        )
    run.add_metrics(key, {"objective": objective.name, "chosen": chosen,
                          "simulator": sim["simulator_value"].to_dict(),
                          "ope": {n: {k: e.estimates[k].value for k in e.estimates} for n, e in evaluations.items()},
                          "logging_value": logging_value.value})
    _report_sections(run, key, data, split, objective, report, fid, sim, evaluations, rec, chosen, why, bool(curves),
                     artifact_paths, cold_start_note(model))
    # 7. the online test that would confirm the candidate (the chosen policy, or the best learned one)
    candidate = chosen if chosen != "logging" else best_learned
    if candidate is not None and stop_after != "train":
        test = online_test_section(cfg, evaluations[candidate], rec, float(sim.loc[candidate, "simulator_value"]),
                                   float(sim.loc["logging", "simulator_value"]) if "logging" in sim.index
                                   else float(logging_value.value),
                                   binary=objective.name in BINARY_REWARDS,
                                   plot_path=out_dir / "power.png", title=f"{key}: power of the A/B test of {candidate}")
        run.add_section(f"{key}: the online A/B test that would confirm `{candidate}`", test.markdown)
        run.add_metrics(f"{key}/abtest", test.metrics)
    # 8. the sequential problem: PPO vs bandits with fatigue and churn, and the accuracy-diversity front
    if cfg.sequential.enabled and stop_after is None:
        say(f"[bold]{key}[/bold]: sequential simulator (fatigue and churn on): PPO vs bandits, lambda sweep ...")
        seq = sequential_section(cfg.sequential, model=model, pool_contexts=x_train.astype(np.float64), categories=
                                 promotion_categories(data), action_ids=data.action_ids, objective_name=objective.name,
                                 key=key, run=run, seed=int(cfg.seed), say=say)
        # wall-clock seconds are in the report text; metrics.json holds only reproducible numbers
        run.add_metrics(f"{key}/sequential", {k: v for k, v in seq.items() if k != "seconds"})
    # 8b. a send budget, when the log has a no-push action
    no_push_id = objective_no_push(cfg, data)
    if no_push_id is not None and stop_after is None:
        from pushrl.experiments.budget_section import budget_section

        run.add_metrics(f"{key}/budget", budget_section(
            run, key, q_test, data.action_ids.tolist().index(no_push_id), eval_reward, split.test.action,
            split.test.pscore, objective.name, int(cfg.seed)))
    # 8. the campaign-specific analysis: uplift baselines, every objective, Qini, cross-fitted fidelity
    if cfg.data.kind == "hillstrom" and stop_after is None:
        say(f"[bold]{key}[/bold]: uplift baselines, Qini curves and cross-fitted fidelity ...")
        hillstrom_section(cfg, data=data, split=split, model=model, objective=objective,
                          policies={n: a.policy for n, a in agents.items()}, features_test=f_test,
                          key=key, run=run, seed=cfg.seed, say=say, test_predictions=pred_test)
    return DatasetResult(key, objective.name, chosen, evaluations, sim)


def fit_or_resume(mcfg: ResponseModelConfig, split: Split, folder: Path, say) -> ResponseModel:
    """Fit the response model, or reload the one a previous (interrupted) run in this folder saved for the
    same config and the same training data; `fit.json` records both and is written last."""
    stamp = {"config": {k: v for k, v in vars(mcfg).items() if k != "progress"},
             "train": split.train.fingerprint(), "validation": split.validation.fingerprint()}
    marker = folder / "fit.json"
    if marker.exists():
        import json

        if json.loads(marker.read_text()) == json.loads(json.dumps(stamp)):
            say(f"  reusing the response model saved in {folder}")
            return ResponseModel.load(folder)
    model = ResponseModel.fit(split.train, split.validation, mcfg)
    model.save(folder)
    write_json(marker, stamp)
    return model


def choose_estimator(cfg: DictConfig, data: LoggedData, settings: EstimatorSettings, run: RunFolder, key: str) -> str:
    """`eval.recommended`, or with 'auto' the winner of a synthetic study shaped like `data` (report section)."""
    if cfg.eval.recommended != "auto":
        return cfg.eval.recommended
    table, rec = selection_study(data.n_rounds, data.n_actions, data.n_positions, settings,
                                 n_seeds=cfg.eval.selection_seeds, seed=cfg.seed)
    write_text(run.path(key, "estimator_selection.csv"), table.to_csv(index=False))
    run.add_section(f"{key}: estimator selection (synthetic ground truth)",
                    selection_markdown(table, rec, data.n_rounds, cfg.eval.selection_seeds))
    return rec


def promotion_categories(data: LoggedData) -> np.ndarray:
    """(A,) category code per promotion, for novelty and coverage: the catalogue's categorical feature with
    the fewest levels above one (OBD: item_feature_3; Hillstrom: merchandise); one category if none."""
    feats = data.catalogue.features
    best = None
    for col in data.catalogue.categorical_features:
        levels = feats[col].nunique()
        if levels > 1 and (best is None or levels < feats[best].nunique()):
            best = col
    if best is None:
        return np.zeros(data.n_actions, dtype=np.int64)
    return pd.factorize(feats[best].astype(str))[0].astype(np.int64)


def objective_no_push(cfg: DictConfig, data: LoggedData):
    """The log's no-push action id, if it has one."""
    ids = data.action_ids.tolist()
    return cfg.objective.no_push_action if cfg.objective.no_push_action in ids else None


def _fmt(x: float) -> str:
    return f"{x:.5g}"


def _model_and_fidelity_sections(run: RunFolder, key: str, report, fid: pd.DataFrame, cold_start: list[str]) -> None:
    """The report's simulator-fidelity and response-model sections (every command that fits a model)."""
    fid_md = ["| scope | rows | logged [95% CI] | simulated | inside CI |", "|---|---|---|---|---|"]
    for r in fid.to_dict("records"):
        fid_md.append(f"| {r['scope']} | {r['rows']:,} | {_fmt(r['logged'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] | "
                      f"{_fmt(r['simulated'])} | {'yes' if r['inside_ci'] else '**no**'} |")
    fid_md += ["", f"![fidelity]({key}/fidelity.png)"]
    run.add_section(f"{key}: simulator fidelity (logging policy replayed on held-out rows)", "\n".join(fid_md))
    model_md = [report.to_markdown(), "", f"![calibration]({key}/reliability.png)", *cold_start]
    run.add_section(f"{key}: response model (held-out test split)", "\n".join(model_md))


def _report_sections(run: RunFolder, key: str, data: LoggedData, split: Split, objective: Objective, report,
                     fid: pd.DataFrame, sim: pd.DataFrame, evaluations: dict[str, PolicyEvaluation], rec: str,
                     chosen: str, why: str, has_curves: bool, artifacts: dict[str, Path], cold_start: list[str]) -> None:
    chosen_eval = evaluations[chosen]
    md = [f"**Ship: `{chosen}`** — {why}.", ""]
    if "artifact" in artifacts:
        md.append(f"Artifact: `{artifacts['artifact']}` (serve it: `pushrl serve {artifacts['artifact']}`).")
    if "candidate_artifact" in artifacts:
        md.append(f"Best learned candidate (not shipped; try it in shadow mode or an A/B test): `{artifacts['candidate_artifact']}`.")
    md.append("")
    if chosen != "logging":
        lift = chosen_eval.lift(rec)
        md.append(f"Lift over the logging policy ({rec}): {lift:+.1%}; simulator value "
                  f"{_fmt(sim.loc[chosen, 'simulator_value'])} vs logging {_fmt(sim.loc['logging', 'simulator_value'])}"
                  if "logging" in sim.index else f"Lift over the logging policy ({rec}): {lift:+.1%}")
        md.append("")
    md += ["| policy | simulator value [95% CI] | OPE " + rec + " [95% CI] | lift | OPE dr [95% CI] | ESS | most pushed |",
           "|---|---|---|---|---|---|---|"]
    for name, e in evaluations.items():
        s = sim.loc[name]
        r, d = e.estimates[rec], e.estimates["dr"]
        md.append(f"| {name} | {_fmt(s.simulator_value)} [{_fmt(s.ci_low)}, {_fmt(s.ci_high)}] | {_fmt(r.value)} "
                  f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}] | {e.lift(rec):+.1%} | {_fmt(d.value)} [{_fmt(d.ci_low)}, "
                  f"{_fmt(d.ci_high)}] | {e.diagnostics.effective_sample_size:,.0f} | {s.top_action} ({s.top_action_share:.0%}) |")
    lv = chosen_eval.logging
    md += ["", f"Logging policy's on-policy value on the test split: {_fmt(lv.value)} [{_fmt(lv.ci_low)}, {_fmt(lv.ci_high)}] "
           f"({split.test.n_rounds:,} rows, objective `{objective.name}`). All seven estimators per policy: `{key}/ope.csv`; "
           f"one `evaluation.json` per policy in `{key}/evaluations/`.", "", f"![OPE]({key}/ope.png)"]
    run.add_section(f"{key}: which policy to ship", "\n".join(md))
    _model_and_fidelity_sections(run, key, report, fid, cold_start)
    if has_curves:
        extra = f"\n\n![regret]({key}/regret.png)" if (run.root / key / "regret.png").exists() else ""
        run.add_section(f"{key}: learning curves", f"![learning curves]({key}/learning_curves.png){extra}")


def summary_rows(results: list[DatasetResult]) -> list[dict[str, Any]]:
    return [{"dataset": r.name, "objective": r.objective, "chosen": r.chosen} for r in results]
