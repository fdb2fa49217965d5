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

import json
from dataclasses import dataclass, field
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
from pushrl.envs.model_report import amount_report, model_report
from pushrl.envs.model_uncertainty import fit_refits
from pushrl.envs.objectives import Objective, find_no_push, make_objective, money_reward
from pushrl.envs.response_model import ResponseModel, ResponseModelConfig
from pushrl.envs.split import Split, split_indices
from pushrl.experiments import plots, report_sections
from pushrl.experiments.agents import (
    SHARED,
    ResponseBandit,
    TrainedAgent,
    catalogue_features,
    save_agents,
    train_agents,
    with_intercept,
)
from pushrl.experiments.builders import estimator_settings, response_model_config
from pushrl.experiments.online_test import online_test_section
from pushrl.experiments.outputs import RunFolder
from pushrl.experiments.selection import selection_markdown, selection_study
from pushrl.policies.degenerate import mean_tv_distance
from pushrl.policies.evaluation import EstimatorSettings, PolicyEvaluation, evaluate_policy
from pushrl.policies.ope.model_interval import held_out_correction, model_value_interval
from pushrl.policies.policy import to_action_dist
from pushrl.policies.ship import LOGGING, ShipDecision, decide, make_guardrails

DUPLICATE_TV = 0.01
"""Mean total-variation distance at or below which two policies count as the same one."""
STAGES = ("fit", "refits", "fidelity", "train", "evaluate", "ship", "export", "report", "abtest", "sequential", "budget", "uplift")


@dataclass
class DatasetResult:
    name: str
    objective: str
    chosen: str
    evaluations: dict[str, PolicyEvaluation]
    simulator: pd.DataFrame


@dataclass
class DatasetRun:
    """Everything the stages of one dataset share; each stage fills in its part."""

    cfg: DictConfig
    data: LoggedData
    split: Split
    key: str
    run: RunFolder
    say: Any
    truth: Any
    objective: Objective
    no_push: Any
    test_rows: np.ndarray
    uniform_logging: np.ndarray | None  # (A,) when the log is uniform-random (the exact logging policy)
    guardrails: tuple = ()
    model: ResponseModel | None = None
    refits: Any = None  # BootstrapRefits behind the model-based intervals (None: eval.model_refits=0)
    report: Any = None
    reward_reports: dict[str, Any] = field(default_factory=dict)  # further rewards: ModelReport or amount metrics
    x_test: np.ndarray | None = None
    recent_test: np.ndarray | None = None
    pred_test: dict[str, np.ndarray] = field(default_factory=dict)
    fidelity: pd.DataFrame | None = None
    agents: dict[str, TrainedAgent] = field(default_factory=dict)
    f_train: np.ndarray | None = None
    f_test: np.ndarray | None = None
    catalogue_spec: Any = None
    x_train: np.ndarray | None = None
    has_curves: bool = False
    recommended: str = "dm"
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)  # policy -> (n_test, A) as served
    identified: dict[str, bool] = field(default_factory=dict)
    why_not_identified: dict[str, str] = field(default_factory=dict)
    evaluations: dict[str, PolicyEvaluation] = field(default_factory=dict)  # the objective
    reward_evaluations: dict[str, dict[str, PolicyEvaluation]] = field(default_factory=dict)  # reward -> policy -> eval
    simulator: pd.DataFrame | None = None
    decision: ShipDecision | None = None
    artifacts: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # lines the ship section states (what was skipped and why)

    @property
    def out_dir(self) -> Path:
        return self.run.path(self.key)

    @property
    def chosen(self) -> str:
        return self.decision.chosen if self.decision else LOGGING

    @property
    def best_learned(self) -> str | None:
        """The learned agent with the best objective estimate; one that duplicates the shipped policy (mean total
        variation distance <= 0.01 on the test rows) is passed over for the next one."""
        ranked = sorted(self.evaluations.values(), key=lambda e: _value(e, self.recommended), reverse=True)
        chosen = self.probabilities.get(self.chosen)
        for e in ranked:
            if e.policy not in self.agents or self.agents[e.policy].kind == "baseline":
                continue
            if e.policy != self.chosen and chosen is not None and \
                    mean_tv_distance(self.probabilities[e.policy], chosen) <= DUPLICATE_TV:
                continue
            return e.policy
        return None


# ---------------------------------------------------------------------------------------------------------
# set-up: objective, no-push action, logging regime


def declared_no_push(cfg: DictConfig, data: LoggedData):
    """`data.no_push_action` as the log's action id (None when not declared); refused by name if not an action."""
    wanted = cfg.data.get("no_push_action")
    return None if wanted is None else data.action_ids.tolist()[find_no_push(data.action_ids, wanted)]


def profit_money(cfg_objective: DictConfig, data: LoggedData) -> str:
    """The money reward of objective=profit; refused naming objective.money when it is ambiguous or absent."""
    money = money_reward(data, cfg_objective.get("money"))
    if money is None:
        raise ValueError(f"objective.reward=profit needs one money reward: set objective.money to one of "
                         f"{list(data.reward_names)}")
    return money


def resolve_objective(cfg: DictConfig, data: LoggedData, default: str) -> Objective:
    """The objective for this log ('auto' = the dataset's default); refuses rewards the log does not declare."""
    co = cfg.objective
    name = co.reward if co.reward != "auto" else default
    declared = list(data.reward_names)
    no_push = declared_no_push(cfg, data)
    if name == "profit":
        return make_objective("profit", data.action_ids, margin=co.margin, push_cost=co.push_cost,
                              no_push_action=no_push, money=profit_money(co, data))
    if name == "weighted":
        weights = dict(co.weights or {})
        unknown = [r for r in weights if r not in declared]
        if unknown:
            raise ValueError(f"objective.weights names {unknown}, which are not declared rewards; declared: {declared}")
        return make_objective("weighted", data.action_ids, push_cost=co.push_cost, no_push_action=no_push,
                              weights=weights)
    if name not in declared:
        raise ValueError(f"objective.reward={name!r} is not a declared reward of {data.name}; declared: {declared} "
                         "(or profit / weighted)")
    return make_objective(name, data.action_ids)


def _uniform_logging(data: LoggedData) -> np.ndarray | None:
    """(A,) the logging distribution when the log is uniform-random over its actions, else None."""
    p = data.pscore
    if p is not None and np.allclose(p, 1.0 / data.n_actions):
        return np.full(data.n_actions, 1.0 / data.n_actions)
    return None


def _check_propensities(data: LoggedData) -> None:
    if data.pscore is None:
        raise ValueError(f"{data.name} has no propensity column: set data.propensity=<column> to the logging "
                         "policy's probability of the logged action, or data.propensity=estimate to estimate them")


def _value(e: PolicyEvaluation, estimator: str) -> float:
    return e.estimates[estimator].value if estimator in e.estimates else e.estimates["dm"].value


def _interval(e: PolicyEvaluation, estimator: str) -> dict[str, float]:
    """{value, ci_low, ci_high} of `estimator` (DM where the IPS family is not identified)."""
    i = e.estimates[estimator] if estimator in e.estimates else e.estimates["dm"]
    return {"value": i.value, "ci_low": i.ci_low, "ci_high": i.ci_high}


# ---------------------------------------------------------------------------------------------------------
# stages


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


def logging_replay_probabilities(ctx: DatasetRun) -> np.ndarray:
    """(n_test, A) the logging policy as the simulator replays it: its exact distribution when uniform, else
    the logged action itself (a draw from the logging policy, so the replay is unbiased for its value)."""
    n = ctx.split.test.n_rounds
    if ctx.uniform_logging is not None:
        return np.tile(ctx.uniform_logging, (n, 1))
    out = np.zeros((n, ctx.data.n_actions))
    out[np.arange(n), ctx.split.test.action] = 1.0
    return out


def stage_fidelity(ctx: DatasetRun) -> None:
    """The logging policy replayed in the simulator vs the held-out logs, per declared reward."""
    m, test = ctx.model, ctx.split.test
    replay = logging_replay_probabilities(ctx)
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


def _slot_predictions(ctx: DatasetRun) -> list[dict[str, np.ndarray]]:
    """[slot] {reward: (n, A)} of the model on the test rows, every row scored in each display slot (one slot:
    the predictions the fit stage made)."""
    test = ctx.split.test
    if ctx.data.n_positions == 1:
        return [ctx.pred_test]
    return [ctx.model.predict(ctx.x_test, ctx.recent_test, np.full(test.n_rounds, k)) for k in range(ctx.data.n_positions)]


def _q_hat(slots: list[dict[str, np.ndarray]], objective: Objective, action_ids) -> np.ndarray:
    """(n, A, P) model-based estimated rewards of `objective` from the per-slot predictions."""
    return np.stack([objective.expected(p, action_ids) for p in slots], axis=2)


def _refit_predictions(ctx: DatasetRun) -> list[list[dict[str, np.ndarray]]] | None:
    """[slot][refit] {reward: (n, A)} of every refit on the test rows (slot 0 only: the logged positions)."""
    if ctx.refits is None:
        return None
    test = ctx.split.test
    if ctx.data.n_positions == 1:
        return [ctx.refits.predict(test)]
    return [ctx.refits.predict(test, np.full(test.n_rounds, k)) for k in range(ctx.data.n_positions)]


def _q_hat_refits(preds, objective: Objective, action_ids) -> np.ndarray | None:
    """(K, n, A, L) the refits' estimated rewards of `objective`."""
    if preds is None:
        return None
    return np.stack([np.stack([objective.expected(p, action_ids) for p in slot]) for slot in preds], axis=3)


def _simulator_interval(ctx: DatasetRun, name: str, probs: np.ndarray, q_obj: np.ndarray,
                        q_refits: np.ndarray | None) -> tuple[float, float, float]:
    """The simulator's value of a policy on the test contexts; with refits, the interval includes the model's
    uncertainty and, where the effect is identified, the held-out (DR) check of its bias."""
    rows = (probs * q_obj).sum(axis=1)
    if q_refits is None:
        return mean_ci(rows, ctx.cfg.eval.alpha, binary=False)
    test = ctx.split.test
    idx = np.arange(test.n_rounds)
    checked = test.pscore is not None and ctx.identified.get(name, True)
    reward = ctx.objective.logged(test)
    corr = held_out_correction(probs, reward, test.action, test.pscore, q_obj[idx, test.action]) if checked else None
    refit_corr = np.stack([held_out_correction(probs, reward, test.action, test.pscore, q[idx, test.action])
                           for q in q_refits]) if checked else None
    iv = model_value_interval(rows, np.sum(probs[None] * q_refits, axis=2), ctx.cfg.eval.alpha, corr, refit_corr)
    low = max(iv.ci_low, 0.0) if ctx.objective.is_plain else iv.ci_low  # a plain reward's value is >= 0
    return iv.value, low, iv.ci_high


def stage_evaluate(ctx: DatasetRun) -> None:
    """Simulator value and OPE on the held-out test split, for the objective and for every declared reward."""
    cfg, data, test, objective = ctx.cfg, ctx.data, ctx.split.test, ctx.objective
    settings = estimator_settings(cfg)
    ctx.probabilities = {name: agent.served.action_probabilities(ctx.f_test) for name, agent in ctx.agents.items()}
    for name, probs in ctx.probabilities.items():
        ok, why = identification(data, ctx.test_rows, to_action_dist(probs, data.n_positions), ctx.run)
        ctx.identified[name] = ok
        if not ok:
            ctx.why_not_identified[name] = why
    any_identified = any(ctx.identified.values()) if ctx.identified else True
    ctx.recommended = choose_estimator(cfg, test, settings, ctx.run, ctx.key) if any_identified else "dm"
    targets: dict[str, Objective] = {objective.name: objective}
    for r in data.reward_names:
        targets.setdefault(r, make_objective(r, data.action_ids))
    q_obj = objective.expected(ctx.pred_test, data.action_ids)
    slot_preds = _slot_predictions(ctx)  # once for every target (the objective and each declared reward)
    refit_preds = _refit_predictions(ctx)
    q_obj_refits = None if refit_preds is None else np.stack([objective.expected(p, data.action_ids)
                                                              for p in refit_preds[0]])
    if data.n_positions > 1 and refit_preds is not None:  # the simulator values each row at its logged slot
        q_obj_refits = np.stack([objective.expected(p, data.action_ids) for p in ctx.refits.predict(test)])
    sim_rows = []
    replay = (q_obj * logging_replay_probabilities(ctx)).sum(axis=1)
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
        q_hat = _q_hat(slot_preds, obj, data.action_ids)
        q_hat_refits = _q_hat_refits(refit_preds, obj, data.action_ids)
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
        "rewards": {r: {n: _interval(e, ctx.recommended) for n, e in evals.items()}
                    | {LOGGING: {"value": next(iter(evals.values())).logging.value}}
                    for r, evals in ctx.reward_evaluations.items() if r != ctx.objective.name},
        "identified": dict(ctx.identified)})
    report_sections.ship_section(ctx)
    report_sections.model_and_fidelity_sections(ctx.run, ctx.key, ctx.report, ctx.fidelity, cold_start_note(ctx.model),
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
    from pushrl.experiments.sequential import sequential_section

    ctx.say(f"[bold]{ctx.key}[/bold]: sequential simulator (fatigue and churn on): PPO vs bandits, lambda sweep ...")
    seq = sequential_section(ctx.cfg.sequential, model=ctx.model, pool_contexts=ctx.x_train.astype(np.float64),
                             categories=promotion_categories(ctx.data), action_ids=ctx.data.action_ids,
                             objective=ctx.objective, no_push_action=ctx.no_push, key=ctx.key, run=ctx.run,
                             seed=int(ctx.cfg.seed), say=ctx.say)
    # wall-clock seconds are in the report text; metrics.json holds only reproducible numbers
    ctx.run.add_metrics(f"{ctx.key}/sequential", {k: v for k, v in seq.items() if k != "seconds"})


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


def stages_for(cfg: DictConfig, stop_after: str | None, has_no_push: bool) -> list[str]:
    """The stage names `pushrl run` (None), `fit` or `train` runs, in order."""
    if stop_after == "fit":
        return ["fit", "fidelity"]
    names = ["fit", "refits", "fidelity", "train", "evaluate", "ship"]
    if stop_after == "train":
        return names + ["report"]
    names += ["export", "report", "abtest"]
    if cfg.sequential.enabled:
        names.append("sequential")
    if has_no_push:
        names += ["budget", "uplift"]
    return names


STAGE_FUNCTIONS = {"fit": stage_fit, "refits": stage_refits, "fidelity": stage_fidelity, "train": stage_train, "evaluate": stage_evaluate,
                   "ship": stage_ship, "export": stage_export, "report": stage_report, "abtest": stage_abtest,
                   "sequential": stage_sequential, "budget": stage_budget, "uplift": stage_uplift}


def dataset_run(cfg: DictConfig, data: LoggedData, split: Split, default_objective: str, run: RunFolder, key: str,
                say, truth=None) -> DatasetRun:
    """The context the stages share, with every option checked against the log (before any model is fitted)."""
    return DatasetRun(cfg=cfg, data=data, split=split, key=key, run=run, say=say, truth=truth,
                      objective=resolve_objective(cfg, data, default_objective), no_push=declared_no_push(cfg, data),
                      test_rows=split_indices(data, tuple(cfg.split.fractions), seed=cfg.split.seed)[2],
                      uniform_logging=_uniform_logging(data),
                      guardrails=make_guardrails(cfg.objective.get("guardrails"), list(data.reward_names)))


def run_stages(ctx: DatasetRun, names: list[str]) -> DatasetRun:
    """Run the named stages (see STAGES) in order on `ctx`."""
    unknown = [n for n in names if n not in STAGE_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown pipeline stage(s) {unknown}; stages: {list(STAGES)}")
    for name in names:
        STAGE_FUNCTIONS[name](ctx)
    return ctx


def run_dataset(cfg: DictConfig, data: LoggedData, split: Split, default_objective: str, run: RunFolder,
                key: str, say, truth=None, stop_after: str | None = None) -> DatasetResult | None:
    """The pipeline on one dataset; adds its report sections and metrics under `key`.

    stop_after: None (everything), "fit" (model report + fidelity), "train" (no export, no A/B section).
    """
    torch.set_num_threads(1)
    if stop_after != "fit":
        _check_propensities(data)
    ctx = dataset_run(cfg, data, split, default_objective, run, key, say, truth)
    run_stages(ctx, stages_for(cfg, stop_after, ctx.no_push is not None))
    if stop_after == "fit":
        report_sections.model_and_fidelity_sections(run, key, ctx.report, ctx.fidelity, cold_start_note(ctx.model),
                                                    ctx.reward_reports)
        return None
    return DatasetResult(key, ctx.objective.name, ctx.chosen, ctx.evaluations, ctx.simulator)


# ---------------------------------------------------------------------------------------------------------
# helpers shared with other commands


def identification(data: LoggedData, rows: np.ndarray, dist: np.ndarray, run: RunFolder) -> tuple[bool, str]:
    """Whether IPS-family estimates of a policy are identified on `rows` (see pushrl evaluate)."""
    from pushrl.experiments.evaluate import identification as check

    return check(data, rows, dist, run)


def cold_start_note(model: ResponseModel) -> list[str]:
    """A report line naming the catalogue promotions the model never saw in training (scored from features)."""
    unseen = [a for a, s in zip(model.catalogue_ids, model.net.seen.tolist(), strict=True) if not s]
    if not unseen:
        return []
    how = ("its content path was trained with id dropout" if model.config.id_dropout > 0 else
           "set `model.id_dropout=0.5` to train that content path (promotion ids switched off on half the rows)")
    return ["", f"Cold start: {len(unseen)} catalogue promotion(s) have no training rows ({unseen[:10]}); the model "
            f"scores them from their features only, and OPE flags any policy mass on them; {how}."]


def fit_or_resume(mcfg: ResponseModelConfig, split: Split, folder: Path, say) -> ResponseModel:
    """Fit the response model, or reload the one a previous (interrupted) run in this folder saved for the
    same config and the same training data; `fit.json` records both and is written last."""
    stamp = {"config": {k: v for k, v in vars(mcfg).items() if k != "progress"},
             "train": split.train.fingerprint(), "validation": split.validation.fingerprint()}
    marker = folder / "fit.json"
    if marker.exists() and json.loads(marker.read_text()) == json.loads(json.dumps(stamp)):
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


def summary_rows(results: list[DatasetResult]) -> list[dict[str, Any]]:
    return [{"dataset": r.name, "objective": r.objective, "chosen": r.chosen} for r in results]
