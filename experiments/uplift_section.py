"""The uplift part of the `pushrl run` report (wiring), for any single-slot log with a no-push action.

`uplift_section` analyses the log against its declared no-push action (`data.no_push_action`),
on every objective: each declared reward, plus profit (margin × money − cost per push, the
no-push action free) when the log has a money reward. Four report sections and headline metrics:

1. **Quality bar**, stated with its numbers whether met or not. Outcome objective (the pipeline's
   when it is a plain reward, else the log's default): the best learned policy's IPS 95% CI lower
   bound above the logging policy's value, its point estimate >= the best always-push policy.
   Value objective (the pipeline's when it carries push costs, else profit): the best learned
   policy's point estimate above the best always-push policy and above sending nothing. "Best
   always-push": the push whose always-policy has the highest SNIPS value on the test split, per
   objective, named. "Best learned" is picked on the same test rows (by IPS), which flatters it; a
   K-fold cross-fitted check of the same recipe on the whole log is printed beside it.
2. **OPE** (IPS, SNIPS, DR, SNDR, 95% bootstrap CIs) on the test split with the logged
   propensities, for the pipeline's agents, the uplift baselines of `pushrl.agents.uplift`
   (re-derived per objective) and always X for each action; lifts over the logging policy, the
   best always-push policy and sending nothing; action shares (`uplift_ope.csv`).
3. **Qini** curves and coefficients, any push vs no push, of each model-based score (best push's
   predicted outcome minus the no-push action's) on the test split (`qini.png`,
   `uplift_qini.csv`); rows weighted by inverse logged propensity unless the log is uniform.
4. **Simulator fidelity**, K-fold cross-fitted on the whole log: per fold a response model fitted
   on the other folds values each always-X policy and the best learned policy (re-learned there)
   on the held-out fold, vs that fold's IPS estimate (95% CI), per objective and pooled
   (`uplift_fidelity.csv`, `uplift_fidelity.png`).

A log whose propensities are all 1.0 (deterministic logging) identifies no other policy by IPS:
the section then reports DM (model-only), skips the Qini curves, the cross-fitted comparison and
the quality bar, and says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from pushrl.agents.uplift_analysis import UpliftAnalysis, UpliftSettings, analyse_uplift
from pushrl.envs.common.atomic import write_text
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.split import Split
from pushrl.envs.model.response_model import ResponseModel
from pushrl.envs.objectives import Objective, find_no_push
from pushrl.envs.objectives import money_reward as objective_money
from pushrl.experiments import uplift_report
from pushrl.experiments.builders import estimator_settings, response_model_config
from pushrl.experiments.outputs import RunFolder
from pushrl.policies import uplift as stats
from pushrl.policies.policy import Policy
from pushrl.policies.uplift import Arms, ips_identified

__all__ = ["Arms", "analysed_objectives", "bar_objectives", "ips_identified", "money_reward", "settings_from",
           "uplift_section"]

N_FOLDS = 5
FIDELITY_EPOCHS = 10


def money_reward(cfg: DictConfig, data: LoggedData) -> str | None:
    """The reward profit is made of (`objective.money`, else the log's one non-binary reward; None: no profit)."""
    return objective_money(data, OmegaConf.select(cfg, "objective.money", default=None))


def analysed_objectives(cfg: DictConfig, data: LoggedData, objective: Objective, no_push_id: object
                        ) -> dict[str, Objective]:
    """Every declared reward, profit when the log has a money reward, and the pipeline's objective."""
    return stats.analysed_objectives(data, objective, no_push_id, money_reward(cfg, data), cfg.objective.margin,
                                     cfg.objective.push_cost)


def bar_objectives(cfg: DictConfig, data: LoggedData, objective: Objective, objectives: dict[str, Objective]
                   ) -> tuple[str, str | None]:
    """(outcome objective, value objective or None) that the quality bar is stated for."""
    default = OmegaConf.select(cfg, "data.default_objective", default=None)
    return stats.bar_objectives(objective, objectives, tuple(data.reward_names), default)


def settings_from(cfg: DictConfig, n_folds: int = N_FOLDS, fidelity_epochs: int = FIDELITY_EPOCHS) -> UpliftSettings:
    """The analysis settings from the run config: `model.*`, `eval.*`, `agents.*`, `train.*`."""
    specs = {k: dict(v or {}) for k, v in OmegaConf.to_container(cfg.agents, resolve=True).items()}
    return UpliftSettings(model=response_model_config(cfg, progress=False), estimators=estimator_settings(cfg),
                          n_bootstrap=int(cfg.eval.n_bootstrap), alpha=cfg.eval.alpha, agent_specs=specs,
                          online_rounds=cfg.train.online_rounds, batch_size=cfg.train.batch_size,
                          n_folds=n_folds, fidelity_epochs=fidelity_epochs)


def _skip(run: RunFolder, key: str, say: Callable[[str], Any], why: str) -> dict[str, Any]:
    run.add_section(f"{key}: uplift over sending nothing", f"Not run: {why}.")
    say(f"[bold]{key}[/bold]: uplift section skipped: {why}")
    run.add_metrics(f"{key}/uplift", {"skipped": why})
    return {"skipped": why}


def _write(a: UpliftAnalysis, run: RunFolder, key: str) -> None:
    """The section's tables and plots under `run.path(key)`."""
    out_dir, test, data = run.path(key), a.split.test, a.data
    write_text(out_dir / "uplift_ope.csv", a.ope.to_csv(index=False))
    if a.identified:
        uplift_report.qini_plot(a.qini.curves, out_dir / "qini.png",
                                f"{key}: Qini curves, any push vs no push (test split, {test.n_rounds:,} rows)")
    write_text(out_dir / "uplift_qini.csv", a.qini.table.to_csv(index=False))
    if a.identified:
        write_text(out_dir / "uplift_fidelity.csv", a.fidelity.to_csv(index=False))
        uplift_report.fidelity_plot(a.fidelity[a.fidelity["scope"] == "pooled"], out_dir / "uplift_fidelity.png",
                                    f"{key}: simulator (cross-fitted) vs IPS, {a.n_folds} folds, {data.n_rounds:,} rows")


def _report(a: UpliftAnalysis, run: RunFolder, key: str) -> None:
    run.add_section(f"{key}: uplift quality bar", uplift_report.bar_markdown(a))
    run.add_section(f"{key}: uplift over sending nothing: OPE, every policy x every objective (test split)",
                    uplift_report.ope_markdown(a, key))
    run.add_section(f"{key}: uplift over sending nothing (Qini)", uplift_report.qini_markdown(a, key))
    run.add_section(f"{key}: uplift simulator fidelity (cross-fitted, whole log)", uplift_report.fidelity_markdown(a, key))


def uplift_section(cfg: DictConfig, *, data: LoggedData, split: Split, model: ResponseModel, objective: Objective,
                   no_push_action: object, policies: dict[str, Policy], features_test: np.ndarray, key: str,
                   run: RunFolder, seed: int, say: Callable[[str], Any], n_folds: int = N_FOLDS,
                   fidelity_epochs: int = FIDELITY_EPOCHS,
                   test_predictions: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Add the uplift report sections under `key` and return (and record in `run` under `{key}/uplift/...`)
    the headline metrics.

    `model` is the pipeline's response model (fitted on `split.train`), `policies` the pipeline's
    trained agents by name and `features_test` the (n_test, d + 1) matrix they take
    (`model.encode(split.test)` plus an intercept column). `no_push_action`: the id of the log's
    push-nothing action. Files go to `run.path(key, ...)`. `test_predictions`: `model`'s
    predictions for `split.test` if the caller has them (not recomputed). A log with more than
    one slot gets a one-line section saying the analysis needs a single-slot log.
    """
    start = time.perf_counter()
    arms = Arms(data.action_ids, find_no_push(data.action_ids, no_push_action))
    if data.n_positions != 1:
        return _skip(run, key, say, f"the uplift analysis needs a single-slot log; this one has {data.n_positions} slots")
    if data.n_actions < 2:
        raise ValueError(f"uplift_section needs a push action beside the no-push one; the log has {list(data.action_ids)}")
    if features_test.shape[0] != split.test.n_rounds:
        raise ValueError(f"features_test has {features_test.shape[0]} rows, the test split {split.test.n_rounds}")
    objectives = analysed_objectives(cfg, data, objective, arms.no_push_id)
    a = analyse_uplift(settings_from(cfg, n_folds, fidelity_epochs), data=data, split=split, model=model, arms=arms,
                       objectives=objectives, pipeline_objective=objective,
                       bar_objectives=bar_objectives(cfg, data, objective, objectives),
                       identified=ips_identified(data), policies=policies, features_test=features_test, seed=seed,
                       test_predictions=test_predictions,
                       say=lambda m: say(f"[bold]{key}[/bold]: uplift section: {m}"))
    _write(a, run, key)
    a.timings["total"] = time.perf_counter() - start
    _report(a, run, key)
    headline = uplift_report.headline(a)
    # wall-clock seconds stay in the report text and the returned headline: metrics.json holds reproducible numbers
    run.add_metrics(f"{key}/uplift", {k: v for k, v in headline.items() if k != "seconds"})
    say(f"[bold]{key}[/bold]: uplift section done in {a.timings['total']:.1f} s")
    return headline
