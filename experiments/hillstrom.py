"""The Hillstrom-specific part of the `pushrl run` report: `hillstrom_section`.

The campaign was randomised (uniform over "No E-Mail", "Mens E-Mail",
"Womens E-Mail", propensity 1/3), so OPE on its held-out rows is a ground-truth
check. The section adds four report sections and returns headline metrics:

1. **Quality bar**, stated with its numbers whether met or not: conversion:
   the best learned policy's IPS 95% CI lower bound above the logging policy's
   value and its point estimate >= always "Mens E-Mail"; profit (margin ×
   spend − cost per e-mail): the best learned policy's point estimate above
   both always "Mens E-Mail" and always "No E-Mail". "Best" is picked on the
   same test rows (by IPS), which flatters it; a 5-fold cross-fitted check of
   the same recipe on the whole sample is printed beside it.
2. **OPE** (IPS, SNIPS, DR, SNDR with 95% bootstrap CIs, `evaluate_policy`) on
   the held-out test split for every policy: the pipeline's agents, the two
   uplift baselines of `pushrl.agents.uplift` (re-derived for each objective),
   and always X for each action; for every objective (visit, conversion,
   spend, profit), with lifts over the logging policy, always "Mens E-Mail"
   and always "No E-Mail", and each policy's share of each action
   (`hillstrom_ope.csv`).
3. **Qini** curves and coefficients for "any e-mail vs none" of each
   model-based score (best e-mail's predicted outcome minus No E-Mail's) on the
   test split (`qini.png`, `hillstrom_qini.csv`).
4. **Simulator fidelity**, K-fold cross-fitted on the whole sample: per fold a
   response model (the pipeline's settings, a small epoch budget) fitted on
   the other folds; each always-X policy and the best learned policy
   (re-learned on the other folds) valued by that model on the held-out fold
   vs the fold's IPS estimate with its 95% CI (normal approximation), per
   objective, and pooled over folds (`hillstrom_fidelity.csv`,
   `hillstrom_fidelity.png`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pushrl.agents.bandits import BANDITS  # noqa: E402
from pushrl.agents.uplift import TLearner, TLearnerPolicy, UpliftPaysPolicy  # noqa: E402
from pushrl.envs.atomic import write_text  # noqa: E402
from pushrl.envs.fidelity import mean_ci  # noqa: E402
from pushrl.envs.hillstrom import ACTIONS  # noqa: E402
from pushrl.envs.logged_data import LoggedData  # noqa: E402
from pushrl.envs.objectives import DEFAULT_MARGIN, DEFAULT_PUSH_COST, Objective, make_objective  # noqa: E402
from pushrl.envs.response_model import ResponseModel, ResponseModelConfig  # noqa: E402
from pushrl.envs.split import Split  # noqa: E402
from pushrl.experiments.agents import (  # noqa: E402
    BASELINES,
    SHARED,
    ResponseBandit,
    catalogue_features,
    train_agents,
    with_intercept,
)
from pushrl.experiments.outputs import RunFolder  # noqa: E402
from pushrl.experiments.plots import save_figure  # noqa: E402
from pushrl.policies.evaluation import EstimatorSettings, PolicyEvaluation, evaluate_policy  # noqa: E402
from pushrl.policies.ope import kfold_indices  # noqa: E402
from pushrl.policies.policy import Policy, to_action_dist  # noqa: E402
from pushrl.policies.uplift import qini_curve  # noqa: E402

NO_EMAIL, MENS, WOMENS = ACTIONS
OBJECTIVES = ("visit", "conversion", "spend", "profit")
ESTIMATORS = ("ips", "snips", "dr", "sndr")
ALWAYS = {f"always {a}": a for a in (MENS, WOMENS, NO_EMAIL)}
T_LEARNER, UPLIFT_PAYS = "t_learner", "uplift_pays"
N_FOLDS = 5
FIDELITY_EPOCHS = 10
VALIDATION_SHARE = 0.15


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _pct(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:+.1%}"


def _lift(v: float, base: float) -> float:
    return (v - base) / abs(base) if base != 0 else float("nan")


@dataclass
class _FoldValues:
    """Per-row simulator values and IPS terms of one (policy, objective) over the whole sample."""

    sim: np.ndarray
    ips: np.ndarray
    folds: list[dict[str, Any]] = field(default_factory=list)


def _model_config(cfg: DictConfig, seed: int, epochs: int | None = None) -> ResponseModelConfig:
    mc = OmegaConf.to_container(cfg.model, resolve=True)
    if epochs is not None:
        mc["epochs"] = min(int(mc.get("epochs", epochs)), epochs)
    return ResponseModelConfig(**mc, seed=int(seed), progress=False)


def _objectives(cfg: DictConfig, data: LoggedData, objective: Objective) -> dict[str, Objective]:
    out = {n: make_objective(n, data.action_ids, margin=cfg.objective.margin, push_cost=cfg.objective.push_cost,
                             no_push_action=NO_EMAIL) for n in OBJECTIVES}
    if objective.name in out:
        out[objective.name] = objective
    return out


def _check_hillstrom(data: LoggedData) -> None:
    ids = data.action_ids.tolist()
    if sorted(ids) != sorted(ACTIONS) or data.n_positions != 1:
        raise ValueError(f"hillstrom_section needs the Hillstrom log (actions {list(ACTIONS)}, one slot); got {ids}")
    if data.pscore is None or not np.allclose(data.pscore, 1.0 / 3):
        raise ValueError("hillstrom_section needs the randomised campaign's propensities (1/3 everywhere)")


def _is_learned(name: str) -> bool:
    return name not in BASELINES


def _always_probs(n: int, index: int) -> np.ndarray:
    p = np.zeros((n, 3))
    p[:, index] = 1.0
    return p


def _uplift_policies(outcomes_t: TLearner, pooled: ResponseModel, encoder, objective: Objective,
                     action_ids: np.ndarray, intercept: bool = True) -> dict[str, Policy]:
    return {T_LEARNER: TLearnerPolicy(outcomes_t, encoder, objective, intercept=intercept),
            UPLIFT_PAYS: UpliftPaysPolicy(pooled, encoder, objective, action_ids, NO_EMAIL, intercept=intercept)}


# --------------------------------------------------------------------------------------------------
def hillstrom_section(cfg: DictConfig, *, data: LoggedData, split: Split, model: ResponseModel, objective: Objective,
                      policies: dict[str, Policy], features_test: np.ndarray, key: str, run: RunFolder, seed: int,
                      say: Callable[[str], Any], n_folds: int = N_FOLDS,
                      fidelity_epochs: int = FIDELITY_EPOCHS,
                      test_predictions: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Add the Hillstrom report sections under `key` and return (and record in `run` under
    `{key}/hillstrom/...`) the headline metrics.

    `model` is the pipeline's response model (fitted on `split.train`), `policies` the
    pipeline's trained agents by name and `features_test` the (n_test, d + 1) matrix they take
    (`model.encode(split.test)` plus an intercept column). Files go to `run.path(key, ...)`.
    `test_predictions`: `model`'s predictions for `split.test` if the caller has them (not recomputed).
    """
    start = time.perf_counter()
    _check_hillstrom(data)
    timings: dict[str, float] = {}
    out_dir = run.path(key)
    ids = data.action_ids
    idx = {a: ids.tolist().index(a) for a in ACTIONS}
    objectives = _objectives(cfg, data, objective)
    test = split.test
    n_test = test.n_rounds
    if features_test.shape[0] != n_test:
        raise ValueError(f"features_test has {features_test.shape[0]} rows, the test split {n_test}")

    # 1. uplift baselines on the training split --------------------------------------------------
    say(f"[bold]{key}[/bold]: Hillstrom section: T-learner (one response model per action) ...")
    t = time.perf_counter()
    t_learner = TLearner.fit(split.train, split.validation, _model_config(cfg, seed))
    timings["t_learner_fit"] = time.perf_counter() - t
    uplift = {o: _uplift_policies(t_learner, model, model.encoder, obj, ids) for o, obj in objectives.items()}

    # 2. OPE on the test split, every policy x every objective -----------------------------------
    t = time.perf_counter()
    fixed = {name: np.asarray(p.action_probabilities(features_test), dtype=np.float64) for name, p in policies.items()}
    if test_predictions is None:
        x_test, recent_test = model.encode(test)
        test_predictions = model.predict(x_test, recent_test, test.position)
    pred_test = test_predictions
    settings = EstimatorSettings(clip=cfg.eval.clip, switch_threshold=cfg.eval.switch_threshold,
                                 dros_lambda=cfg.eval.dros_lambda)
    kinds: dict[str, str] = {n: "agent" for n in fixed} | {T_LEARNER: "uplift", UPLIFT_PAYS: "uplift"} | {n: "always" for n in ALWAYS}
    evals: dict[str, dict[str, PolicyEvaluation]] = {}
    shares: dict[str, dict[str, np.ndarray]] = {}
    for o, obj in objectives.items():
        probs = dict(fixed)
        probs |= {n: p.action_probabilities(features_test) for n, p in uplift[o].items()}
        probs |= {n: _always_probs(n_test, idx[a]) for n, a in ALWAYS.items()}
        q_hat = to_action_dist(obj.expected(pred_test, ids), 1)
        reward = obj.logged(test)
        evals[o], shares[o] = {}, {}
        for name, p in probs.items():
            shares[o][name] = p.mean(axis=0)
            evals[o][name] = evaluate_policy(
                policy=name, data=data.name, split="test", action_dist=to_action_dist(p, 1), reward=reward,
                action=test.action, pscore=test.pscore, position=test.position, estimated_rewards=q_hat,
                recommended="snips", settings=settings, n_bootstrap=cfg.eval.n_bootstrap, alpha=cfg.eval.alpha,
                seed=seed)
    ope = _ope_table(evals, shares, kinds, ids)
    write_text(out_dir / "hillstrom_ope.csv", ope.to_csv(index=False))
    timings["ope"] = time.perf_counter() - t

    # 3. Qini on the test split ------------------------------------------------------------------
    t = time.perf_counter()
    treated = test.action != idx[NO_EMAIL]
    boot = np.random.default_rng(np.random.SeedSequence([int(seed), 7])).integers(
        0, n_test, size=(int(cfg.eval.n_bootstrap), n_test))  # one set of resamples for every score
    qini_rows, curves = [], {}

    def qini_row(r: str, label: str, score: np.ndarray, outcome: np.ndarray) -> None:
        c = qini_curve(score, treated, outcome)
        coefs = [qini_curve(score[b], treated[b], outcome[b]).coefficient for b in boot]
        lo, hi = np.percentile(coefs, [100 * cfg.eval.alpha / 2, 100 * (1 - cfg.eval.alpha / 2)])
        curves[(r, label)] = c
        qini_rows.append({"reward": r, "score": label, "coefficient": c.coefficient, "ci_low": float(lo),
                          "ci_high": float(hi), "overall_gain_per_customer": float(c.gain[-1] / n_test)})

    score_sources = {"t_learner (per-action models)": uplift["conversion"][T_LEARNER],
                     "uplift_pays (pooled response model)": uplift["conversion"][UPLIFT_PAYS]}
    for r in ("visit", "conversion", "spend"):
        outcome = test.reward(r)
        for label, pol in score_sources.items():
            qini_row(r, label, pol.uplift_score(features_test, r, NO_EMAIL), outcome)
    emails = [idx[MENS], idx[WOMENS]]
    for name, pol in policies.items():  # learned agents exposing their reward estimates (linear bandits)
        if _is_learned(name) and callable(getattr(pol, "estimates", None)):
            est = np.asarray(pol.estimates(features_test), dtype=np.float64)
            score = est[:, emails].max(axis=1) - est[:, idx[NO_EMAIL]]
            qini_row(objective.reward, f"{name} (its {objective.name} estimates)", score, test.reward(objective.reward))
    qini = pd.DataFrame(qini_rows)
    write_text(out_dir / "hillstrom_qini.csv", qini.to_csv(index=False))
    _qini_plot(curves, out_dir / "qini.png", f"{key}: Qini curves, any e-mail vs none (test split, {n_test:,} rows)")
    timings["qini"] = time.perf_counter() - t

    # 4. which learned policy is best (test IPS), per objective ------------------------------------
    learned = [n for n in fixed if _is_learned(n)] + [T_LEARNER, UPLIFT_PAYS]
    retrainable = [n for n in learned if n in (T_LEARNER, UPLIFT_PAYS) or (n in BANDITS and n in cfg.agents)]

    def ips(o: str, n: str) -> float:
        return evals[o][n].estimates["ips"].value

    best = {o: max(learned, key=lambda n, o=o: ips(o, n)) for o in objectives}
    best_refit = {o: max(retrainable, key=lambda n, o=o: ips(o, n)) for o in objectives}  # re-learnable per fold
    fid_best = best_refit[objective.name]
    fid_note = ""
    if fid_best != best[objective.name]:
        fid_note = (f"`{best[objective.name]}` (the best learned policy) cannot be re-learned per fold here; "
                    f"the fidelity check uses the best one that can, `{fid_best}`.")

    # 5. cross-fitted fidelity on the whole sample -----------------------------------------------
    say(f"[bold]{key}[/bold]: Hillstrom section: {n_folds}-fold cross-fitted simulator fidelity "
        f"({data.n_rounds:,} rows) ...")
    t = time.perf_counter()
    recipes = {(fid_best, _trained_for(fid_best, objective.name))}
    for o in ("conversion", "profit"):
        recipes.add((best_refit[o], _trained_for(best_refit[o], o, objective.name)))
    fold_values = _cross_fit(cfg, data, objectives, objective, recipes, n_folds, fidelity_epochs, seed, idx)
    fid = _fidelity_table(fold_values, data, objectives, fid_best, _trained_for(fid_best, objective.name), cfg.eval.alpha)
    write_text(out_dir / "hillstrom_fidelity.csv", fid.to_csv(index=False))
    _fidelity_plot(fid[fid["scope"] == "pooled"], out_dir / "hillstrom_fidelity.png",
                   f"{key}: simulator (cross-fitted) vs IPS, {n_folds} folds, {data.n_rounds:,} rows")
    timings["fidelity"] = time.perf_counter() - t

    # 6. quality bar ------------------------------------------------------------------------------
    bar = _quality_bar(evals, best, best_refit, fold_values, data, objectives, objective, cfg.eval.alpha)
    timings["total"] = time.perf_counter() - start

    # 7. report -----------------------------------------------------------------------------------
    _sections(run, key, data, split, objectives, evals, shares, kinds, qini, fid, bar, fid_best,
              _trained_for(fid_best, objective.name), fid_note, timings, n_folds, fidelity_epochs, objective)
    headline = _headline(evals, qini, fid, bar, timings, best)
    run.add_metrics(f"{key}/hillstrom", headline)
    say(f"[bold]{key}[/bold]: Hillstrom section done in {timings['total']:.1f} s")
    return headline


def _trained_for(name: str, objective_name: str, pipeline_objective: str | None = None) -> str:
    """The objective a learned policy is trained for: the uplift baselines per objective, agents the pipeline's."""
    if name in (T_LEARNER, UPLIFT_PAYS):
        return objective_name
    return pipeline_objective or objective_name


# --------------------------------------------------------------------------------------------------
def _ope_table(evals, shares, kinds, ids) -> pd.DataFrame:
    rows = []
    for o, by_policy in evals.items():
        for name, e in by_policy.items():
            for est in ESTIMATORS:
                i = e.estimates[est]
                mens = by_policy[f"always {MENS}"].estimates[est].value
                none = by_policy[f"always {NO_EMAIL}"].estimates[est].value
                row = {"objective": o, "policy": name, "kind": kinds[name], "estimator": est, "value": i.value,
                       "ci_low": i.ci_low, "ci_high": i.ci_high, "logging_value": e.logging.value,
                       "lift_vs_logging": e.lift(est), "lift_vs_always_mens": _lift(i.value, mens),
                       "lift_vs_always_no_email": _lift(i.value, none), "ess": e.diagnostics.effective_sample_size}
                row |= {f"share_{a}": float(s) for a, s in zip(ids.tolist(), shares[o][name], strict=True)}
                rows.append(row)
    return pd.DataFrame(rows)


def _fit_fold(cfg, data: LoggedData, rows: np.ndarray, rng: np.random.Generator, epochs: int, seed: int
              ) -> tuple[LoggedData, LoggedData, ResponseModel]:
    """Split `rows` (the other folds) into fit / validation, stratified by action; fit the simulator."""
    val = []
    for a in range(data.n_actions):
        r = rows[data.action[rows] == a]
        val.append(rng.choice(r, size=int(round(VALIDATION_SHARE * len(r))), replace=False))
    val_rows = np.sort(np.concatenate(val))
    fit_rows = np.setdiff1d(rows, val_rows, assume_unique=True)
    fit, validation = data.subset(fit_rows), data.subset(val_rows)
    return fit, validation, ResponseModel.fit(fit, validation, _model_config(cfg, seed, epochs))


def _cross_fit(cfg, data: LoggedData, objectives: dict[str, Objective], pipeline_obj: Objective,
               recipes: set[tuple[str, str]], n_folds: int, epochs: int, seed: int,
               idx: dict[str, int]) -> dict[tuple[str, str, str], _FoldValues]:
    """{(policy label, trained-for objective, evaluated objective): per-row values over the whole sample}.

    Always-X policies get the label `always X` and trained-for "-". Each fold's simulator and every
    learned policy are fitted on the other folds only; values are for the held-out fold's rows.
    """
    n = data.n_rounds
    folds = kfold_indices(n, n_folds, seed)
    everything = np.arange(n)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 20080320]))
    labels = [(a_name, "-") for a_name in ALWAYS] + sorted(recipes)
    out = {(lab, tf, o): _FoldValues(np.full(n, np.nan), np.full(n, np.nan)) for lab, tf in labels for o in objectives}
    need_t = any(name == T_LEARNER for name, _ in recipes)
    agent_specs = {k: dict(v or {}) for k, v in OmegaConf.to_container(cfg.agents, resolve=True).items()}
    for k, held in enumerate(folds):
        others = np.setdiff1d(everything, held, assume_unique=True)
        fit, validation, sim = _fit_fold(cfg, data, others, rng, epochs, seed + k)
        held_data = data.subset(held)
        x_held, recent_held = sim.encode(held_data)
        pred = sim.predict(x_held, recent_held, held_data.position)
        f_held = with_intercept(x_held)
        t_k = TLearner.fit(fit, validation, _model_config(cfg, seed + k, epochs)) if need_t else None
        probs: dict[tuple[str, str], np.ndarray] = {(a, "-"): _always_probs(len(held), idx[x]) for a, x in ALWAYS.items()}
        for name, trained_for in sorted(recipes):
            obj = objectives[trained_for]
            if name == T_LEARNER:
                pol = TLearnerPolicy(t_k, sim.encoder, obj)
            elif name == UPLIFT_PAYS:
                pol = UpliftPaysPolicy(sim, sim.encoder, obj, data.action_ids, NO_EMAIL)
            else:
                pol = _train_bandit(cfg, name, agent_specs[name], fit, sim, pipeline_obj, seed + k)
            probs[(name, trained_for)] = np.asarray(pol.action_probabilities(f_held), dtype=np.float64)
        for (lab, tf), p in probs.items():
            for o, obj in objectives.items():
                sim_v = (p * obj.expected(pred, data.action_ids)).sum(axis=1)
                w = p[np.arange(len(held)), held_data.action] / held_data.pscore
                ips = obj.logged(held_data) * w
                fv = out[(lab, tf, o)]
                fv.sim[held], fv.ips[held] = sim_v, ips
                fv.folds.append({"fold": k, "rows": len(held), "sim": float(sim_v.mean()), "ips_terms": ips})
    return out


def _train_bandit(cfg, name: str, spec: dict, fit: LoggedData, sim: ResponseModel, objective: Objective, seed: int):
    """Re-learn agent `name` as the pipeline does (offline IPS, then online in the fold's simulator)."""
    x, recent = sim.encode(fit)
    f = with_intercept(x)
    pos = fit.position

    def expected(rows: np.ndarray) -> np.ndarray:
        return objective.expected(sim.predict(x[rows], recent[rows], pos[rows]), fit.action_ids)

    bandit = ResponseBandit(f, expected)
    z_actions = catalogue_features(sim, fit.catalogue)[0] if name in SHARED else None
    agents = train_agents({name: spec}, n_actions=fit.n_actions, train_features=f, train_action=fit.action,
                          train_reward=objective.logged(fit), train_pscore=fit.pscore,
                          logging_probabilities=np.full(fit.n_actions, 1.0 / fit.n_actions), simulator=bandit,
                          online_rounds=cfg.train.online_rounds, batch_size=cfg.train.batch_size, seed=seed,
                          progress=lambda _m: None, action_features=z_actions)
    return agents[name].policy


def _fidelity_table(values, data, objectives, best: str, best_for: str, alpha: float) -> pd.DataFrame:
    rows = []
    wanted = [(a, "-") for a in ALWAYS] + [(best, best_for)]
    for lab, tf in wanted:
        label = lab if tf == "-" else f"best learned: {lab} (for {tf})"
        for o in objectives:
            fv = values[(lab, tf, o)]
            inside = 0
            for f in fv.folds:
                m, lo, hi = mean_ci(f["ips_terms"], alpha, binary=False)
                ok = lo <= f["sim"] <= hi
                inside += ok
                rows.append({"objective": o, "policy": label, "scope": f"fold {f['fold']}", "rows": f["rows"],
                             "simulated": f["sim"], "ips": m, "ci_low": lo, "ci_high": hi, "inside_ci": ok})
            m, lo, hi = mean_ci(fv.ips, alpha, binary=False)
            s = float(fv.sim.mean())
            rows.append({"objective": o, "policy": label, "scope": "pooled", "rows": len(fv.ips), "simulated": s,
                         "ips": m, "ci_low": lo, "ci_high": hi, "inside_ci": lo <= s <= hi,
                         "folds_inside": f"{inside}/{len(fv.folds)}"})
    return pd.DataFrame(rows)


def _quality_bar(evals, best, best_refit, fold_values, data: LoggedData, objectives, pipeline_obj, alpha
                 ) -> dict[str, Any]:
    mens, none = f"always {MENS}", f"always {NO_EMAIL}"
    bar: dict[str, Any] = {}
    conv = evals["conversion"]
    b = best["conversion"]
    e = conv[b].estimates["ips"]
    bar["conversion"] = {"best": b, "ips": e.value, "ci_low": e.ci_low, "ci_high": e.ci_high,
                         "logging": conv[b].logging.value, "always_mens": conv[mens].estimates["ips"].value,
                         "ci_low_above_logging": e.ci_low > conv[b].logging.value,
                         "at_least_always_mens": e.value >= conv[mens].estimates["ips"].value}
    bar["conversion"]["met"] = bar["conversion"]["ci_low_above_logging"] and bar["conversion"]["at_least_always_mens"]
    prof = evals["profit"]
    b = best["profit"]
    v = prof[b].estimates["ips"].value
    bar["profit"] = {"best": b, "ips": v, "ci_low": prof[b].estimates["ips"].ci_low,
                     "ci_high": prof[b].estimates["ips"].ci_high, "logging": prof[b].logging.value,
                     "always_mens": prof[mens].estimates["ips"].value, "always_no_email": prof[none].estimates["ips"].value,
                     "margin": objectives["profit"].margin,
                     "push_cost": float(objectives["profit"].cost_vector(data.action_ids).max()),
                     "beats_always_mens": v > prof[mens].estimates["ips"].value,
                     "beats_always_no_email": v > prof[none].estimates["ips"].value}
    bar["profit"]["met"] = bar["profit"]["beats_always_mens"] and bar["profit"]["beats_always_no_email"]
    bar["profit"]["default_costs"] = (np.isclose(bar["profit"]["margin"], DEFAULT_MARGIN)
                                      and np.isclose(bar["profit"]["push_cost"], DEFAULT_PUSH_COST))
    # the same recipes cross-fitted on the whole sample (policy learned on the other folds)
    for o in ("conversion", "profit"):
        b = best_refit[o]
        tf = _trained_for(b, o, pipeline_obj.name)
        m, lo, hi = mean_ci(fold_values[(b, tf, o)].ips, alpha, binary=False)
        logged = objectives[o].logged(data)
        lv = float(logged.mean())
        am = float(fold_values[(mens, "-", o)].ips.mean())
        an = float(fold_values[(none, "-", o)].ips.mean())
        cf = {"policy": b, "trained_for": tf, "ips": m, "ci_low": lo, "ci_high": hi, "logging": lv,
              "always_mens": am, "always_no_email": an, "rows": data.n_rounds}
        if o == "conversion":
            cf |= {"ci_low_above_logging": lo > lv, "at_least_always_mens": m >= am}
            cf["met"] = cf["ci_low_above_logging"] and cf["at_least_always_mens"]
        else:
            cf |= {"beats_always_mens": m > am, "beats_always_no_email": m > an}
            cf["met"] = cf["beats_always_mens"] and cf["beats_always_no_email"]
        bar[o]["cross_fitted"] = cf
    return bar


# plots --------------------------------------------------------------------------------------------
def _qini_plot(curves, path, title: str) -> None:
    rewards = list(dict.fromkeys(r for r, _ in curves))
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


def _fidelity_plot(table: pd.DataFrame, path, title: str) -> None:
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


# report -------------------------------------------------------------------------------------------
def _sections(run: RunFolder, key: str, data, split, objectives, evals, shares, kinds, qini: pd.DataFrame,
              fid: pd.DataFrame, bar, fid_best: str, fid_best_for: str, fid_note: str, timings, n_folds: int,
              epochs: int, pipeline_obj: Objective) -> None:
    n_test = split.test.n_rounds
    c, p = bar["conversion"], bar["profit"]
    ccf, pcf = c["cross_fitted"], p["cross_fitted"]
    yes = {True: "**yes**", False: "**no**"}
    md = [f"Held-out test split: {n_test:,} rows (random split stratified by action; Hillstrom has no timestamps). "
          "\"Best\" = the learned policy (the pipeline's agents and the two uplift baselines) with the highest IPS "
          "value on these same rows, so its estimate is optimistic (picked on the data that scores it).", "",
          f"**Conversion** — best: `{c['best']}`, IPS {_fmt(c['ips'])} [95% CI {_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}]; "
          f"logging policy {_fmt(c['logging'])}; always Mens E-Mail {_fmt(c['always_mens'])}.",
          f"- CI lower bound above the logging policy's value: {yes[c['ci_low_above_logging']]} "
          f"({_fmt(c['ci_low'])} vs {_fmt(c['logging'])})",
          f"- point estimate >= always Mens E-Mail: {yes[c['at_least_always_mens']]} ({_fmt(c['ips'])} vs {_fmt(c['always_mens'])})",
          f"- bar {'met' if c['met'] else '**not met**'} on the test split.", "",
          f"**Profit** (margin {p['margin']:.2f} × spend − {p['push_cost']:.2f} per e-mail"
          f"{', the default costs' if p['default_costs'] else ', NOT the default costs'}) — best: `{p['best']}`, "
          f"IPS {_fmt(p['ips'])} [95% CI {_fmt(p['ci_low'])}, {_fmt(p['ci_high'])}]; always Mens E-Mail "
          f"{_fmt(p['always_mens'])}; always No E-Mail {_fmt(p['always_no_email'])}; logging {_fmt(p['logging'])}.",
          f"- beats always Mens E-Mail: {yes[p['beats_always_mens']]}; beats always No E-Mail: {yes[p['beats_always_no_email']]}",
          f"- bar {'met' if p['met'] else '**not met**'} on the test split (point estimates; the CI says how sure).", "",
          f"Cross-fitted check on the whole sample ({ccf['rows']:,} rows, {n_folds} folds; each fold's policy learned "
          "on the other folds, so no row scores a policy that saw it):",
          f"- conversion, `{ccf['policy']}`: IPS {_fmt(ccf['ips'])} [{_fmt(ccf['ci_low'])}, {_fmt(ccf['ci_high'])}] vs "
          f"logging {_fmt(ccf['logging'])} (CI above: {yes[ccf['ci_low_above_logging']]}), always Mens "
          f"{_fmt(ccf['always_mens'])} (>=: {yes[ccf['at_least_always_mens']]}): {'met' if ccf['met'] else '**not met**'}",
          f"- profit, `{pcf['policy']}`: IPS {_fmt(pcf['ips'])} [{_fmt(pcf['ci_low'])}, {_fmt(pcf['ci_high'])}] vs "
          f"always Mens {_fmt(pcf['always_mens'])} ({yes[pcf['beats_always_mens']]}), always No E-Mail "
          f"{_fmt(pcf['always_no_email'])} ({yes[pcf['beats_always_no_email']]}): {'met' if pcf['met'] else '**not met**'}"]
    run.add_section(f"{key}: Hillstrom quality bar", "\n".join(md))

    md = [f"Every policy on every objective, on the {n_test:,} held-out test rows. Values per customer with 95% "
          "bootstrap CIs; lifts (relative, SNIPS) over the logging policy (uniform random), always Mens E-Mail and "
          "always No E-Mail. `t_learner` and `uplift_pays` are re-derived for each objective (per-action response "
          f"models / the pooled response model); the pipeline's agents were trained for `{pipeline_obj.name}`. "
          "Shares: mean probability of No / Mens / Womens E-Mail. Every estimator and lift: "
          f"`{key}/hillstrom_ope.csv`.", ""]
    for o, by_policy in evals.items():
        lv = next(iter(by_policy.values())).logging
        md += [f"**{o}** (logging policy: {_fmt(lv.value)} [{_fmt(lv.ci_low)}, {_fmt(lv.ci_high)}])", "",
               "| policy | IPS [95% CI] | SNIPS [95% CI] | DR [95% CI] | SNDR [95% CI] | lift vs logging / Mens / No | shares No/Mens/Womens |",
               "|---|---|---|---|---|---|---|"]
        mens = by_policy[f"always {MENS}"].estimates["snips"].value
        none = by_policy[f"always {NO_EMAIL}"].estimates["snips"].value
        order = {NO_EMAIL: 0, MENS: 1, WOMENS: 2}
        id_list = data.action_ids.tolist()
        for name, e in by_policy.items():
            cells = [f"{_fmt(e.estimates[k].value)} [{_fmt(e.estimates[k].ci_low)}, {_fmt(e.estimates[k].ci_high)}]"
                     for k in ESTIMATORS]
            v = e.estimates["snips"].value
            s = shares[o][name]
            sh = "/".join(f"{s[id_list.index(a)]:.0%}" for a in sorted(order, key=order.get))
            md.append(f"| {name} | " + " | ".join(cells) + f" | {_pct(e.lift('snips'))} / {_pct(_lift(v, mens))} / "
                      f"{_pct(_lift(v, none))} | {sh} |")
        md.append("")
    run.add_section(f"{key}: Hillstrom OPE, every policy x every objective (test split)", "\n".join(md))

    md = ["Any e-mail (treated: Mens or Womens) vs No E-Mail on the test split; score = predicted outcome of the best "
          "e-mail minus that of No E-Mail; coefficient = area between the Qini curve and random targeting per "
          "customer (positive: better than random), with a 95% bootstrap CI (resampled customers). For scale: the "
          "whole campaign's incremental outcome per customer (everyone targeted) is in the last column.", "",
          "| outcome | score | Qini coefficient [95% CI] | incremental per customer, all targeted |", "|---|---|---|---|"]
    md += [f"| {r['reward']} | {r['score']} | {r['coefficient']:+.4g} [{r['ci_low']:+.4g}, {r['ci_high']:+.4g}] | "
           f"{_fmt(r['overall_gain_per_customer'])} |" for r in qini.to_dict("records")]
    md += ["", f"![Qini]({key}/qini.png)"]
    run.add_section(f"{key}: Hillstrom uplift (Qini)", "\n".join(md))

    pooled = fid[fid["scope"] == "pooled"]
    md = [f"{n_folds}-fold cross-fitting on the whole sample ({data.n_rounds:,} rows): per fold a response model with "
          f"the pipeline's settings (at most {epochs} epochs; 15% of the other folds for early stopping) fitted on "
          "the other folds is the simulator; the always-X policies and the best learned policy "
          f"(`{fid_best}`, trained for `{fid_best_for}` and re-learned on the other folds) are valued by it on the "
          "held-out fold and compared with the fold's IPS estimate (95% CI, normal approximation). Pooled: each "
          "row valued by the model that did not see it, over all rows.", ""]
    if fid_note:
        md += [fid_note, ""]
    md += ["| objective | policy | simulator | IPS [95% CI] | inside CI (pooled) | folds inside CI |", "|---|---|---|---|---|---|"]
    for r in pooled.to_dict("records"):
        md.append(f"| {r['objective']} | {r['policy']} | {_fmt(r['simulated'])} | {_fmt(r['ips'])} "
                  f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] | {'yes' if r['inside_ci'] else '**no**'} | {r['folds_inside']} |")
    n_in = int(pooled["inside_ci"].sum())
    md += ["", f"Pooled: {n_in}/{len(pooled)} inside the CI. Per fold: `{key}/hillstrom_fidelity.csv`.", "",
           f"![fidelity]({key}/hillstrom_fidelity.png)", "",
           "Section run time: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + "."]
    run.add_section(f"{key}: Hillstrom simulator fidelity (cross-fitted, whole sample)", "\n".join(md))


def _headline(evals, qini: pd.DataFrame, fid: pd.DataFrame, bar, timings, best) -> dict[str, Any]:
    ope = {o: {n: {k: float(e.estimates[k].value) for k in ESTIMATORS}
               | {"ips_ci_low": float(e.estimates["ips"].ci_low), "ips_ci_high": float(e.estimates["ips"].ci_high)}
               for n, e in by_policy.items()} for o, by_policy in evals.items()}
    logging = {o: float(next(iter(by_policy.values())).logging.value) for o, by_policy in evals.items()}
    q = {f"{r['reward']}/{r['score'].split(' ')[0]}": {k: float(r[k]) for k in ("coefficient", "ci_low", "ci_high")}
         for r in qini.to_dict("records")}
    pooled = fid[fid["scope"] == "pooled"]
    f = {f"{r['objective']}/{r['policy']}": {"simulated": float(r["simulated"]), "ips": float(r["ips"]),
                                             "ci_low": float(r["ci_low"]), "ci_high": float(r["ci_high"]),
                                             "inside_ci": bool(r["inside_ci"]), "folds_inside": r["folds_inside"]}
         for r in pooled.to_dict("records")}

    def plain(d):
        return {k: (plain(v) if isinstance(v, dict) else (bool(v) if isinstance(v, np.bool_) else v)) for k, v in d.items()}

    return {"ope": ope, "logging_value": logging, "best_learned": dict(best), "qini": q, "fidelity": f,
            "quality_bar": plain(bar), "seconds": {k: round(float(v), 2) for k, v in timings.items()}}
