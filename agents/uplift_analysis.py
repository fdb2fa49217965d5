"""The uplift analysis of a single-slot log with a no-push action: what `pushrl run`'s uplift section reports.

`analyse_uplift` runs, in this order (every random draw seeded from `seed`):

1. the uplift baselines of `pushrl.agents.uplift` on the training split (T-learner: one response model
   per action; "uplift pays" over the pipeline's pooled model), re-derived per analysed objective;
2. OPE (IPS, SNIPS, DR, SNDR with bootstrap CIs; DM when IPS is not identified) on the test split of the
   pipeline's agents, the uplift baselines and always X for every action, on every objective;
3. Qini curves of each model-based "any push vs no push" score (best push's predicted outcome minus the
   no-push action's), rows weighted by inverse logged propensity unless the log is uniform;
4. the best learned policy per objective (by test IPS; DM when not identified) and the best one that can
   be re-learned per fold;
5. K-fold cross-fitting on the whole log: per fold a response model fitted on the other folds is the
   simulator; always-X and the best learned recipes (re-learned there) are valued by it and by IPS on the
   held-out fold (`pushrl.policies.uplift.fidelity_table`, `quality_bar`).

Statistics over the results live in `pushrl.policies.uplift`; the report text in `pushrl.experiments`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from pushrl.agents.bandits import BANDITS
from pushrl.agents.training import (
    BASELINES,
    SHARED,
    ResponseBandit,
    catalogue_features,
    train_agents,
    with_intercept,
)
from pushrl.agents.uplift import TLearner, TLearnerPolicy, UpliftPaysPolicy
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.split import Split
from pushrl.envs.model.response_model import ResponseModel, ResponseModelConfig
from pushrl.envs.objectives import Objective
from pushrl.policies.evaluation import EstimatorSettings, evaluate_policy
from pushrl.policies.ope import kfold_indices
from pushrl.policies.policy import Policy, to_action_dist
from pushrl.policies.uplift import (
    T_LEARNER,
    UPLIFT_PAYS,
    Arms,
    Evaluations,
    FoldKey,
    FoldValues,
    QiniCurve,
    always_probabilities,
    best_always_push,
    best_by,
    fidelity_table,
    logged_pscore,
    ope_table,
    qini_weights,
    qini_with_ci,
    quality_bar,
    trained_for,
)

VALIDATION_SHARE = 0.15
"""Share of the other folds (per action) held out for early stopping of each fold's simulator."""
FOLD_SEED_TAG = 20080320  # spawns the fold-validation draws (kept: the section's numbers stay reproducible)
QINI_SOURCES = {T_LEARNER: "t_learner (per-action models)", UPLIFT_PAYS: "uplift_pays (pooled response model)"}
QINI_COLUMNS = ["reward", "score", "coefficient", "ci_low", "ci_high", "overall_gain_per_customer"]


@dataclass(frozen=True)
class UpliftSettings:
    """Everything the analysis reads besides the log and the pipeline's fitted objects.

    model: the pipeline's response-model settings (its seed is replaced per fit); agent_specs: the
    pipeline's agents {name: hyperparameters} (bandits among them are re-learned per fold).
    """

    model: ResponseModelConfig
    estimators: EstimatorSettings
    n_bootstrap: int
    alpha: float
    agent_specs: dict[str, dict[str, Any]]
    online_rounds: int
    batch_size: int
    n_folds: int = 5
    fidelity_epochs: int = 10

    def model_config(self, seed: int, epochs: int | None = None) -> ResponseModelConfig:
        """The response-model settings with this seed and, given `epochs`, at most that many epochs."""
        if epochs is not None:
            return replace(self.model, epochs=min(int(self.model.epochs), epochs), seed=int(seed))
        return replace(self.model, seed=int(seed))


@dataclass
class QiniResult:
    """The Qini table (`QINI_COLUMNS`, one row per (reward, score)) and each curve by (reward, score label)."""

    table: pd.DataFrame
    curves: dict[tuple[str, str], QiniCurve] = field(default_factory=dict)


@dataclass
class UpliftAnalysis:
    """What the uplift analysis found (see the module docstring); tables are empty where not computed."""

    data: LoggedData
    split: Split
    arms: Arms
    objectives: dict[str, Objective]
    pipeline_objective: Objective
    outcome_objective: str
    value_objective: str | None
    identified: bool
    why_not: str  # why IPS is not identified ("" when it is)
    t_learner_missing: list[str]  # actions without training rows (then no T-learner)
    evals: Evaluations
    shares: dict[str, dict[str, np.ndarray]]
    kinds: dict[str, str]  # policy -> "agent" | "uplift" | "always"
    best_always_push: dict[str, str]
    ope: pd.DataFrame
    qini: QiniResult
    best_learned: dict[str, str]
    best_refit: dict[str, str]
    fidelity: pd.DataFrame
    quality_bar: dict[str, Any]
    timings: dict[str, float]
    n_folds: int
    fidelity_epochs: int

    @property
    def fidelity_policy(self) -> str:
        """The best learned policy of the pipeline's objective that can be re-learned per fold."""
        return self.best_refit[self.pipeline_objective.name]

    @property
    def fidelity_trained_for(self) -> str:
        return trained_for(self.fidelity_policy, self.pipeline_objective.name)


def is_learned(name: str) -> bool:
    """Whether a policy name is a learned one (not a baseline agent; always-X names are never agents)."""
    return name not in BASELINES


def fit_t_learner(split: Split, arms: Arms, config: ResponseModelConfig) -> tuple[TLearner | None, list[str]]:
    """(the T-learner on the training split, []), or (None, the actions without training rows)."""
    counts = np.bincount(split.train.action, minlength=len(arms.ids))
    if (counts > 0).all():
        return TLearner.fit(split.train, split.validation, config), []
    return None, [str(a) for a in arms.ids[counts == 0]]


def uplift_policies(t_learner: TLearner | None, pooled: ResponseModel, objective: Objective,
                    arms: Arms) -> dict[str, Policy]:
    """{name: policy} of the uplift baselines for `objective` (no T-learner when `t_learner` is None)."""
    out: dict[str, Policy] = {}
    if t_learner is not None:
        out[T_LEARNER] = TLearnerPolicy(t_learner, pooled.encoder, objective)
    out[UPLIFT_PAYS] = UpliftPaysPolicy(pooled, pooled.encoder, objective, arms.ids, arms.no_push_id)
    return out


def evaluate_all(settings: UpliftSettings, data: LoggedData, test: LoggedData, arms: Arms,
                 objectives: dict[str, Objective], policies: dict[str, Policy], uplift: dict[str, dict[str, Policy]],
                 features_test: np.ndarray, pred_test: dict[str, np.ndarray], identified: bool, seed: int
                 ) -> tuple[Evaluations, dict[str, dict[str, np.ndarray]], dict[str, str]]:
    """({objective: {policy: PolicyEvaluation}}, {objective: {policy: (A,) shares}}, {policy: kind}) on `test`."""
    n_test, n_actions = test.n_rounds, data.n_actions
    fixed = {name: np.asarray(p.action_probabilities(features_test), dtype=np.float64) for name, p in policies.items()}
    always = arms.always()
    first = next(iter(uplift.values()))
    kinds = {n: "agent" for n in fixed} | {n: "uplift" for n in first} | {n: "always" for n in always}
    pscore = logged_pscore(test)
    evals: Evaluations = {}
    shares: dict[str, dict[str, np.ndarray]] = {}
    for o, obj in objectives.items():
        probs = dict(fixed)
        probs |= {n: p.action_probabilities(features_test) for n, p in uplift[o].items()}
        probs |= {n: always_probabilities(n_test, n_actions, i) for n, i in always.items()}
        q_hat = to_action_dist(obj.expected(pred_test, data.action_ids), 1)
        reward = obj.logged(test)
        evals[o], shares[o] = {}, {}
        for name, p in probs.items():
            shares[o][name] = p.mean(axis=0)
            evals[o][name] = evaluate_policy(
                policy=name, data=data.name, split="test", action_dist=to_action_dist(p, 1), reward=reward,
                action=test.action, pscore=pscore, position=test.position, estimated_rewards=q_hat,
                recommended="snips", settings=settings.estimators, n_bootstrap=settings.n_bootstrap,
                alpha=settings.alpha, seed=seed, identified=identified)
    return evals, shares, kinds


def qini_analysis(settings: UpliftSettings, test: LoggedData, arms: Arms, score_policies: dict[str, Policy],
                  policies: dict[str, Policy], objective: Objective, features_test: np.ndarray, seed: int) -> QiniResult:
    """Qini rows of every model-based "any push vs no push" score on `test`: the uplift baselines' on every
    reward, and learned agents exposing reward estimates (linear bandits) on `objective`'s reward."""
    n_test = test.n_rounds
    treated = test.action != arms.no_push
    weight = qini_weights(logged_pscore(test))
    boot = np.random.default_rng(np.random.SeedSequence([int(seed), 7])).integers(
        0, n_test, size=(int(settings.n_bootstrap), n_test))  # one set of resamples for every score
    rows, curves = [], {}

    def add(r: str, label: str, score: np.ndarray, outcome: np.ndarray) -> None:
        if np.ptp(score) == 0:  # e.g. per-action models that kept their base rates: it ranks nobody
            label += " (constant score: no targeting signal, Qini 0 by construction)"
        c, lo, hi = qini_with_ci(score, treated, outcome, weight, boot, settings.alpha)
        curves[(r, label)] = c
        rows.append({"reward": r, "score": label, "coefficient": c.coefficient, "ci_low": lo, "ci_high": hi,
                     "overall_gain_per_customer": float(c.gain[-1] / n_test)})

    for r in test.reward_names:
        outcome = test.reward(r)
        for name, pol in score_policies.items():
            add(r, QINI_SOURCES[name], pol.uplift_score(features_test, r, arms.no_push_id), outcome)
    for name, pol in policies.items():
        if is_learned(name) and callable(getattr(pol, "estimates", None)):
            est = np.asarray(pol.estimates(features_test), dtype=np.float64)
            score = est[:, arms.pushes].max(axis=1) - est[:, arms.no_push]
            add(objective.reward, f"{name} (its {objective.name} estimates)", score, test.reward(objective.reward))
    return QiniResult(pd.DataFrame(rows, columns=QINI_COLUMNS) if rows else pd.DataFrame(columns=QINI_COLUMNS), curves)


def best_learned(settings: UpliftSettings, evals: Evaluations, learned: list[str], estimator: str
                 ) -> tuple[dict[str, str], dict[str, str]]:
    """({objective: best learned policy}, {objective: best one that can be re-learned per fold}) by `estimator`."""
    retrainable = [n for n in learned if n in (T_LEARNER, UPLIFT_PAYS) or (n in BANDITS and n in settings.agent_specs)]
    return best_by(evals, learned, estimator), best_by(evals, retrainable, estimator)


def _fit_fold(settings: UpliftSettings, data: LoggedData, rows: np.ndarray, rng: np.random.Generator, seed: int
              ) -> tuple[LoggedData, LoggedData, ResponseModel]:
    """Split `rows` (the other folds) into fit / validation, stratified by action; fit the simulator."""
    val = []
    for a in range(data.n_actions):
        r = rows[data.action[rows] == a]
        val.append(rng.choice(r, size=int(round(VALIDATION_SHARE * len(r))), replace=False))
    val_rows = np.sort(np.concatenate(val))
    fit_rows = np.setdiff1d(rows, val_rows, assume_unique=True)
    fit, validation = data.subset(fit_rows), data.subset(val_rows)
    return fit, validation, ResponseModel.fit(fit, validation, settings.model_config(seed, settings.fidelity_epochs))


def train_bandit(settings: UpliftSettings, name: str, fit: LoggedData, sim: ResponseModel, objective: Objective,
                 seed: int) -> Policy:
    """Re-learn agent `name` as the pipeline does (offline IPS on the logged propensities, then online in the
    fold's simulator)."""
    x, recent = sim.encode(fit)
    f = with_intercept(x)
    pos = fit.position

    def expected(rows: np.ndarray) -> np.ndarray:
        return objective.expected(sim.predict(x[rows], recent[rows], pos[rows]), fit.action_ids)

    z_actions = catalogue_features(sim, fit.catalogue)[0] if name in SHARED else None
    logged_shares = np.bincount(fit.action, minlength=fit.n_actions) / fit.n_rounds  # only a replay baseline reads it
    agents = train_agents({name: settings.agent_specs[name]}, n_actions=fit.n_actions, train_features=f,
                          train_action=fit.action, train_reward=objective.logged(fit), train_pscore=logged_pscore(fit),
                          logging_probabilities=logged_shares, simulator=ResponseBandit(f, expected),
                          online_rounds=settings.online_rounds, batch_size=settings.batch_size, seed=seed,
                          progress=lambda _m: None, action_features=z_actions)
    return agents[name].policy


def _fold_policy(settings: UpliftSettings, name: str, obj: Objective, t_k: TLearner | None, sim: ResponseModel,
                 fit: LoggedData, data: LoggedData, arms: Arms, pipeline_obj: Objective, seed: int) -> Policy:
    if name == T_LEARNER:
        return TLearnerPolicy(t_k, sim.encoder, obj)
    if name == UPLIFT_PAYS:
        return UpliftPaysPolicy(sim, sim.encoder, obj, data.action_ids, arms.no_push_id)
    return train_bandit(settings, name, fit, sim, pipeline_obj, seed)


def cross_fit(settings: UpliftSettings, data: LoggedData, arms: Arms, objectives: dict[str, Objective],
              pipeline_obj: Objective, recipes: set[tuple[str, str]], seed: int) -> dict[FoldKey, FoldValues]:
    """{(policy label, trained-for objective, evaluated objective): per-row values over the whole log}.

    Always-X policies get the label `always X` and trained-for "-". Each fold's simulator and every
    learned policy are fitted on the other folds only; values are for the held-out fold's rows.
    """
    n = data.n_rounds
    folds = kfold_indices(n, settings.n_folds, seed)
    everything = np.arange(n)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), FOLD_SEED_TAG]))
    always = arms.always()
    labels = [(a_name, "-") for a_name in always] + sorted(recipes)
    out = {(lab, tf, o): FoldValues(np.full(n, np.nan), np.full(n, np.nan)) for lab, tf in labels for o in objectives}
    need_t = any(name == T_LEARNER for name, _ in recipes)
    for k, held in enumerate(folds):
        others = np.setdiff1d(everything, held, assume_unique=True)
        fit, validation, sim = _fit_fold(settings, data, others, rng, seed + k)
        held_data = data.subset(held)
        x_held, recent_held = sim.encode(held_data)
        pred = sim.predict(x_held, recent_held, held_data.position)
        f_held = with_intercept(x_held)
        t_k = TLearner.fit(fit, validation, settings.model_config(seed + k, settings.fidelity_epochs)) if need_t else None
        probs = {(a, "-"): always_probabilities(len(held), data.n_actions, i) for a, i in always.items()}
        for name, tf in sorted(recipes):
            pol = _fold_policy(settings, name, objectives[tf], t_k, sim, fit, data, arms, pipeline_obj, seed + k)
            probs[(name, tf)] = np.asarray(pol.action_probabilities(f_held), dtype=np.float64)
        held_pscore = logged_pscore(held_data)
        for (lab, tf), p in probs.items():
            for o, obj in objectives.items():
                sim_v = (p * obj.expected(pred, data.action_ids)).sum(axis=1)
                ips = obj.logged(held_data) * (p[np.arange(len(held)), held_data.action] / held_pscore)
                fv = out[(lab, tf, o)]
                fv.sim[held], fv.ips[held] = sim_v, ips
                fv.folds.append({"fold": k, "rows": len(held), "sim": float(sim_v.mean()), "ips_terms": ips})
    return out


def analyse_uplift(settings: UpliftSettings, *, data: LoggedData, split: Split, model: ResponseModel,
                   arms: Arms, objectives: dict[str, Objective], pipeline_objective: Objective,
                   bar_objectives: tuple[str, str | None], identified: tuple[bool, str], policies: dict[str, Policy],
                   features_test: np.ndarray, seed: int, test_predictions: dict[str, np.ndarray] | None = None,
                   say: Callable[[str], Any] = lambda _m: None) -> UpliftAnalysis:
    """Run the analysis (module docstring) and return its results.

    `model`: the pipeline's response model (fitted on `split.train`); `policies`: its trained agents by
    name, taking `features_test` ((n_test, d + 1): `model.encode(split.test)` plus an intercept column);
    `bar_objectives`: (outcome, value or None) objective names; `identified`: (whether IPS identifies
    other policies on `data`, why not). `test_predictions`: `model`'s predictions for `split.test` if known.
    """
    test, timings = split.test, {}
    ok, why_not = identified
    outcome_obj, value_obj = bar_objectives
    say("T-learner (one response model per action) ...")
    t = time.perf_counter()
    t_learner, missing = fit_t_learner(split, arms, settings.model_config(seed))
    timings["t_learner_fit"] = time.perf_counter() - t
    uplift = {o: uplift_policies(t_learner, model, obj, arms) for o, obj in objectives.items()}

    t = time.perf_counter()
    if test_predictions is None:
        x_test, recent_test = model.encode(test)
        test_predictions = model.predict(x_test, recent_test, test.position)
    evals, shares, kinds = evaluate_all(settings, data, test, arms, objectives, policies, uplift, features_test,
                                        test_predictions, ok, seed)
    ref_label = best_always_push(evals, arms, "snips" if ok else "dm")
    table = ope_table(evals, shares, kinds, arms, ref_label)
    timings["ope"] = time.perf_counter() - t

    t = time.perf_counter()
    qini = QiniResult(pd.DataFrame(columns=QINI_COLUMNS))
    if ok:
        qini = qini_analysis(settings, test, arms, uplift[outcome_obj], policies, pipeline_objective, features_test,
                             seed)
    timings["qini"] = time.perf_counter() - t

    learned = [n for n in policies if is_learned(n)] + list(uplift[outcome_obj])
    best, best_refit = best_learned(settings, evals, learned, "ips" if ok else "dm")
    name = pipeline_objective.name
    fid, bar = pd.DataFrame(), {}
    if ok:
        say(f"{settings.n_folds}-fold cross-fitted simulator fidelity ({data.n_rounds:,} rows) ...")
        t = time.perf_counter()
        fid_best, fid_for = best_refit[name], trained_for(best_refit[name], name)
        recipes = {(fid_best, fid_for)} | {(best_refit[o], trained_for(best_refit[o], o, name))
                                           for o in (outcome_obj, value_obj) if o is not None}
        fold_values = cross_fit(settings, data, arms, objectives, pipeline_objective, recipes, seed)
        fid = fidelity_table(fold_values, arms, objectives, fid_best, fid_for, settings.alpha)
        timings["fidelity"] = time.perf_counter() - t
        bar = quality_bar(evals, best, best_refit, fold_values, data, arms, objectives, pipeline_objective, ref_label,
                          outcome_obj, value_obj, settings.alpha)
    return UpliftAnalysis(data, split, arms, objectives, pipeline_objective, outcome_obj, value_obj, ok, why_not,
                          missing, evals, shares, kinds, ref_label, table, qini, best, best_refit, fid, bar, timings,
                          settings.n_folds, settings.fidelity_epochs)
