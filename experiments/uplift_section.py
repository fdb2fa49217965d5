"""The uplift part of the `pushrl run` report, for any single-slot log with a no-push action.

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
from dataclasses import dataclass, field, replace
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
from pushrl.envs.logged_data import LoggedData  # noqa: E402
from pushrl.envs.objectives import (  # noqa: E402
    DEFAULT_MARGIN,
    DEFAULT_PUSH_COST,
    Objective,
    find_no_push,  # noqa: E402
    make_objective,
)
from pushrl.envs.objectives import money_reward as objective_money  # noqa: E402
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
from pushrl.experiments.builders import response_model_config  # noqa: E402
from pushrl.experiments.outputs import RunFolder  # noqa: E402
from pushrl.experiments.plots import save_figure  # noqa: E402
from pushrl.policies.evaluation import EstimatorSettings, PolicyEvaluation, evaluate_policy  # noqa: E402
from pushrl.policies.ope import kfold_indices  # noqa: E402
from pushrl.policies.policy import Policy, to_action_dist  # noqa: E402
from pushrl.policies.uplift import qini_curve  # noqa: E402

ESTIMATORS = ("ips", "snips", "dr", "sndr")
T_LEARNER, UPLIFT_PAYS = "t_learner", "uplift_pays"
N_FOLDS = 5
FIDELITY_EPOCHS = 10
VALIDATION_SHARE = 0.15
MAX_SHARE_COLUMNS = 6  # the report's share column lists every action up to this many, else no push + top push
_FOLD_SEED_TAG = 20080320  # spawns the fold-validation draws (kept: the section's numbers stay reproducible)


def _fmt(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.4g}"


def _pct(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:+.1%}"


def _lift(v: float, base: float) -> float:
    return (v - base) / abs(base) if base != 0 else float("nan")


@dataclass(frozen=True)
class Arms:
    """The log's actions as the section sees them: the no-push action and the pushes.

    Attributes:
        ids: (A,) action ids in the log's order.
        no_push: index of the no-push action in `ids`.
    """

    ids: np.ndarray
    no_push: int

    @property
    def no_push_id(self) -> object:
        return self.ids.tolist()[self.no_push]

    @property
    def pushes(self) -> list[int]:
        """Indices of the push actions, in the log's order."""
        return [i for i in range(len(self.ids)) if i != self.no_push]

    def always(self) -> dict[str, int]:
        """{"always X": index}: every push in the log's order, then the no-push action."""
        ids = self.ids.tolist()
        return {f"always {ids[i]}": i for i in (*self.pushes, self.no_push)}

    @property
    def no_push_label(self) -> str:
        return f"always {self.no_push_id}"


def ips_identified(data: LoggedData) -> tuple[bool, str]:
    """Whether IPS identifies other policies' values on this log, and why not when it does not."""
    from pushrl.envs.regime import (
        classify_regime,  # the one regime rule (pushrl evaluate and run use it too)
    )

    if data.pscore is None:
        return False, "the log has no propensities"
    regime = classify_regime(data)
    if regime.regime == "deterministic":
        return False, f"logging is deterministic ({regime.evidence})"
    return True, ""


def _pscore(data: LoggedData) -> np.ndarray:
    return data.pscore if data.pscore is not None else np.ones(data.n_rounds)


def money_reward(cfg: DictConfig, data: LoggedData) -> str | None:
    """The reward profit is made of (`objective.money`, else the log's one non-binary reward; None: no profit)."""
    return objective_money(data, OmegaConf.select(cfg, "objective.money", default=None))


def analysed_objectives(cfg: DictConfig, data: LoggedData, objective: Objective, no_push_id: object
                        ) -> dict[str, Objective]:
    """Every declared reward, profit when the log has a money reward, and the pipeline's objective."""
    ids = data.action_ids
    out = {r: make_objective(r, ids, no_push_action=no_push_id) for r in data.reward_names}
    money = money_reward(cfg, data)
    if money is not None:
        out["profit"] = make_objective("profit", ids, margin=cfg.objective.margin, push_cost=cfg.objective.push_cost,
                                       no_push_action=no_push_id, money=money)
    out[objective.name] = objective
    return out


def bar_objectives(cfg: DictConfig, data: LoggedData, objective: Objective, objectives: dict[str, Objective]
                   ) -> tuple[str, str | None]:
    """(outcome objective, value objective or None) that the quality bar is stated for."""
    if objective.is_plain:
        return objective.name, ("profit" if "profit" in objectives else None)
    default = OmegaConf.select(cfg, "data.default_objective", default=None)
    return (str(default) if default in data.reward_names else data.reward_names[0]), objective.name


@dataclass
class _FoldValues:
    """Per-row simulator values and IPS terms of one (policy, objective) over the whole log."""

    sim: np.ndarray
    ips: np.ndarray
    folds: list[dict[str, Any]] = field(default_factory=list)


def _model_config(cfg: DictConfig, seed: int, epochs: int | None = None) -> ResponseModelConfig:
    """The pipeline's response-model settings (the log's reward chain included), at most `epochs` epochs."""
    if epochs is not None:
        epochs = min(int(OmegaConf.select(cfg, "model.epochs", default=epochs)), epochs)
    return replace(response_model_config(cfg, progress=False, epochs=epochs), seed=int(seed))


def _is_learned(name: str) -> bool:
    return name not in BASELINES


def _always_probs(n: int, n_actions: int, index: int) -> np.ndarray:
    p = np.zeros((n, n_actions))
    p[:, index] = 1.0
    return p


def _uplift_policies(outcomes_t: TLearner | None, pooled: ResponseModel, encoder, objective: Objective,
                     arms: Arms) -> dict[str, Policy]:
    out: dict[str, Policy] = {}
    if outcomes_t is not None:
        out[T_LEARNER] = TLearnerPolicy(outcomes_t, encoder, objective)
    out[UPLIFT_PAYS] = UpliftPaysPolicy(pooled, encoder, objective, arms.ids, arms.no_push_id)
    return out


def _skip(run: RunFolder, key: str, say: Callable[[str], Any], why: str) -> dict[str, Any]:
    run.add_section(f"{key}: uplift over sending nothing", f"Not run: {why}.")
    say(f"[bold]{key}[/bold]: uplift section skipped: {why}")
    run.add_metrics(f"{key}/uplift", {"skipped": why})
    return {"skipped": why}


# --------------------------------------------------------------------------------------------------
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
    test = split.test
    if features_test.shape[0] != test.n_rounds:
        raise ValueError(f"features_test has {features_test.shape[0]} rows, the test split {test.n_rounds}")
    identified, why_not = ips_identified(data)
    timings: dict[str, float] = {}
    out_dir = run.path(key)
    objectives = analysed_objectives(cfg, data, objective, arms.no_push_id)
    outcome_obj, value_obj = bar_objectives(cfg, data, objective, objectives)
    notes = [] if identified else [f"IPS is not identified on this log ({why_not}): values are DM (the response "
                                   "model's, model-only); the Qini curves, the cross-fitted IPS comparison and the "
                                   "quality bar are skipped."]

    # 1. uplift baselines on the training split --------------------------------------------------
    say(f"[bold]{key}[/bold]: uplift section: T-learner (one response model per action) ...")
    t = time.perf_counter()
    t_learner = _fit_t_learner(cfg, split, arms, seed, notes)
    timings["t_learner_fit"] = time.perf_counter() - t
    uplift = {o: _uplift_policies(t_learner, model, model.encoder, obj, arms) for o, obj in objectives.items()}

    # 2. OPE on the test split, every policy x every objective -----------------------------------
    t = time.perf_counter()
    if test_predictions is None:
        x_test, recent_test = model.encode(test)
        test_predictions = model.predict(x_test, recent_test, test.position)
    evals, shares, kinds = _ope(cfg, data, test, arms, objectives, policies, uplift, features_test, test_predictions,
                                identified, seed)
    ref_label = _best_always_push(evals, arms, "snips" if identified else "dm")
    write_text(out_dir / "uplift_ope.csv", _ope_table(evals, shares, kinds, arms, ref_label).to_csv(index=False))
    timings["ope"] = time.perf_counter() - t

    # 3. Qini on the test split ------------------------------------------------------------------
    t = time.perf_counter()
    qini = pd.DataFrame(columns=["reward", "score", "coefficient", "ci_low", "ci_high", "overall_gain_per_customer"])
    if identified:
        qini = _qini(cfg, test, arms, uplift[outcome_obj], policies, objective, features_test, seed, out_dir / "qini.png",
                     f"{key}: Qini curves, any push vs no push (test split, {test.n_rounds:,} rows)")
    write_text(out_dir / "uplift_qini.csv", qini.to_csv(index=False))
    timings["qini"] = time.perf_counter() - t

    # 4. which learned policy is best (test IPS; DM when IPS is not identified), per objective ------
    learned = [n for n in policies if _is_learned(n)] + list(uplift[outcome_obj])
    best, best_refit = _best_learned(cfg, evals, learned, "ips" if identified else "dm")
    fid_best, fid_for = best_refit[objective.name], _trained_for(best_refit[objective.name], objective.name)
    fid_note = "" if fid_best == best[objective.name] else (
        f"`{best[objective.name]}` (the best learned policy) cannot be re-learned per fold here; the fidelity check "
        f"uses the best one that can, `{fid_best}`.")

    # 5. cross-fitted fidelity on the whole log, 6. quality bar ------------------------------------
    fid, bar = pd.DataFrame(), {}
    if identified:
        say(f"[bold]{key}[/bold]: uplift section: {n_folds}-fold cross-fitted simulator fidelity "
            f"({data.n_rounds:,} rows) ...")
        t = time.perf_counter()
        recipes = {(fid_best, fid_for)} | {(best_refit[o], _trained_for(best_refit[o], o, objective.name))
                                           for o in (outcome_obj, value_obj) if o is not None}
        fold_values = _cross_fit(cfg, data, arms, objectives, objective, recipes, n_folds, fidelity_epochs, seed)
        fid = _fidelity_table(fold_values, arms, objectives, fid_best, fid_for, cfg.eval.alpha)
        write_text(out_dir / "uplift_fidelity.csv", fid.to_csv(index=False))
        _fidelity_plot(fid[fid["scope"] == "pooled"], out_dir / "uplift_fidelity.png",
                       f"{key}: simulator (cross-fitted) vs IPS, {n_folds} folds, {data.n_rounds:,} rows")
        timings["fidelity"] = time.perf_counter() - t
        bar = _quality_bar(evals, best, best_refit, fold_values, data, arms, objectives, objective, ref_label,
                           outcome_obj, value_obj, cfg.eval.alpha)
    timings["total"] = time.perf_counter() - start

    # 7. report -----------------------------------------------------------------------------------
    ctx = _Context(run, key, data, split, arms, objectives, objective, identified, notes, timings, n_folds,
                   fidelity_epochs)
    run.add_section(f"{key}: uplift quality bar", _bar_markdown(ctx, bar, outcome_obj, value_obj))
    run.add_section(f"{key}: uplift over sending nothing: OPE, every policy x every objective (test split)",
                    _ope_markdown(ctx, evals, shares, ref_label))
    run.add_section(f"{key}: uplift over sending nothing (Qini)", _qini_markdown(ctx, qini))
    run.add_section(f"{key}: uplift simulator fidelity (cross-fitted, whole log)",
                    _fidelity_markdown(ctx, fid, fid_best, fid_for, fid_note))
    headline = _headline(evals, qini, fid, bar, timings, best, arms, ref_label, identified)
    # wall-clock seconds stay in the report text and the returned headline: metrics.json holds reproducible numbers
    run.add_metrics(f"{key}/uplift", {k: v for k, v in headline.items() if k != "seconds"})
    say(f"[bold]{key}[/bold]: uplift section done in {timings['total']:.1f} s")
    return headline


def _fit_t_learner(cfg: DictConfig, split: Split, arms: Arms, seed: int, notes: list[str]) -> TLearner | None:
    """The T-learner on the training split, or None (and a note) when an action has no training rows."""
    counts = np.bincount(split.train.action, minlength=len(arms.ids))
    if (counts > 0).all():
        return TLearner.fit(split.train, split.validation, _model_config(cfg, seed))
    missing = [str(a) for a in arms.ids[counts == 0]]
    notes.append(f"No T-learner: action(s) {missing} have no training rows (a T-learner needs rows of every action).")
    return None


def _best_always_push(evals, arms: Arms, estimator: str) -> dict[str, str]:
    """{objective: "always X"} for the push X whose always-policy has the highest `estimator` value."""
    ids = arms.ids.tolist()
    return {o: max((f"always {ids[i]}" for i in arms.pushes), key=lambda n, e=by_policy: e[n].estimates[estimator].value)
            for o, by_policy in evals.items()}


def _best_learned(cfg: DictConfig, evals, learned: list[str], estimator: str) -> tuple[dict[str, str], dict[str, str]]:
    """({objective: best learned policy}, {objective: best one that can be re-learned per fold}) by `estimator`."""
    retrainable = [n for n in learned if n in (T_LEARNER, UPLIFT_PAYS) or (n in BANDITS and n in cfg.agents)]

    def pick(names: list[str], by_policy) -> str:
        return max(names, key=lambda n: by_policy[n].estimates[estimator].value)

    return ({o: pick(learned, e) for o, e in evals.items()}, {o: pick(retrainable, e) for o, e in evals.items()})


def _trained_for(name: str, objective_name: str, pipeline_objective: str | None = None) -> str:
    """The objective a learned policy is trained for: the uplift baselines per objective, agents the pipeline's."""
    if name in (T_LEARNER, UPLIFT_PAYS):
        return objective_name
    return pipeline_objective or objective_name


# --------------------------------------------------------------------------------------------------
def _ope(cfg, data: LoggedData, test: LoggedData, arms: Arms, objectives: dict[str, Objective],
         policies: dict[str, Policy], uplift: dict[str, dict[str, Policy]], features_test: np.ndarray,
         pred_test: dict[str, np.ndarray], identified: bool, seed: int):
    """({objective: {policy: PolicyEvaluation}}, {objective: {policy: (A,) shares}}, {policy: kind})."""
    n_test, n_actions = test.n_rounds, data.n_actions
    fixed = {name: np.asarray(p.action_probabilities(features_test), dtype=np.float64) for name, p in policies.items()}
    settings = EstimatorSettings(clip=cfg.eval.clip, switch_threshold=cfg.eval.switch_threshold,
                                 dros_lambda=cfg.eval.dros_lambda)
    always = arms.always()
    first = next(iter(uplift.values()))
    kinds = {n: "agent" for n in fixed} | {n: "uplift" for n in first} | {n: "always" for n in always}
    pscore = _pscore(test)
    evals: dict[str, dict[str, PolicyEvaluation]] = {}
    shares: dict[str, dict[str, np.ndarray]] = {}
    for o, obj in objectives.items():
        probs = dict(fixed)
        probs |= {n: p.action_probabilities(features_test) for n, p in uplift[o].items()}
        probs |= {n: _always_probs(n_test, n_actions, i) for n, i in always.items()}
        q_hat = to_action_dist(obj.expected(pred_test, data.action_ids), 1)
        reward = obj.logged(test)
        evals[o], shares[o] = {}, {}
        for name, p in probs.items():
            shares[o][name] = p.mean(axis=0)
            evals[o][name] = evaluate_policy(
                policy=name, data=data.name, split="test", action_dist=to_action_dist(p, 1), reward=reward,
                action=test.action, pscore=pscore, position=test.position, estimated_rewards=q_hat,
                recommended="snips", settings=settings, n_bootstrap=cfg.eval.n_bootstrap, alpha=cfg.eval.alpha,
                seed=seed, identified=identified)
    return evals, shares, kinds


def _estimators(evals) -> tuple[str, ...]:
    first = next(iter(next(iter(evals.values())).values()))
    return tuple(k for k in ESTIMATORS if k in first.estimates) or ("dm",)


def _ope_table(evals, shares, kinds, arms: Arms, ref_label: dict[str, str]) -> pd.DataFrame:
    rows = []
    ids = arms.ids.tolist()
    for o, by_policy in evals.items():
        for name, e in by_policy.items():
            for est in _estimators(evals):
                i = e.estimates[est]
                ref = by_policy[ref_label[o]].estimates[est].value
                none = by_policy[arms.no_push_label].estimates[est].value
                row = {"objective": o, "policy": name, "kind": kinds[name], "estimator": est, "value": i.value,
                       "ci_low": i.ci_low, "ci_high": i.ci_high, "logging_value": e.logging.value,
                       "lift_vs_logging": e.lift(est), "best_always_push": ref_label[o],
                       "lift_vs_best_always_push": _lift(i.value, ref), "lift_vs_no_push": _lift(i.value, none),
                       "ess": e.diagnostics.effective_sample_size}
                row |= {f"share_{a}": float(s) for a, s in zip(ids, shares[o][name], strict=True)}
                rows.append(row)
    return pd.DataFrame(rows)


def _qini(cfg, test: LoggedData, arms: Arms, score_policies: dict[str, Policy], policies: dict[str, Policy],
          objective: Objective, features_test: np.ndarray, seed: int, plot_path, title: str) -> pd.DataFrame:
    """Qini rows of every model-based "any push vs no push" score on the test split (and the plot)."""
    n_test = test.n_rounds
    treated = test.action != arms.no_push
    p = _pscore(test)
    weight = None if np.all(p == p[0]) else (1.0 / p) / np.mean(1.0 / p)  # as if logged uniformly at random
    boot = np.random.default_rng(np.random.SeedSequence([int(seed), 7])).integers(
        0, n_test, size=(int(cfg.eval.n_bootstrap), n_test))  # one set of resamples for every score
    rows, curves = [], {}

    def add(r: str, label: str, score: np.ndarray, outcome: np.ndarray) -> None:
        if np.ptp(score) == 0:  # e.g. per-action models that kept their base rates: it ranks nobody
            label += " (constant score: no targeting signal, Qini 0 by construction)"
        c = qini_curve(score, treated, outcome, weight)
        coefs = [qini_curve(score[b], treated[b], outcome[b], None if weight is None else weight[b]).coefficient
                 for b in boot]
        lo, hi = np.percentile(coefs, [100 * cfg.eval.alpha / 2, 100 * (1 - cfg.eval.alpha / 2)])
        curves[(r, label)] = c
        rows.append({"reward": r, "score": label, "coefficient": c.coefficient, "ci_low": float(lo),
                     "ci_high": float(hi), "overall_gain_per_customer": float(c.gain[-1] / n_test)})

    sources = {T_LEARNER: "t_learner (per-action models)", UPLIFT_PAYS: "uplift_pays (pooled response model)"}
    for r in test.reward_names:
        outcome = test.reward(r)
        for name, pol in score_policies.items():
            add(r, sources[name], pol.uplift_score(features_test, r, arms.no_push_id), outcome)
    for name, pol in policies.items():  # learned agents exposing their reward estimates (linear bandits)
        if _is_learned(name) and callable(getattr(pol, "estimates", None)):
            est = np.asarray(pol.estimates(features_test), dtype=np.float64)
            score = est[:, arms.pushes].max(axis=1) - est[:, arms.no_push]
            add(objective.reward, f"{name} (its {objective.name} estimates)", score, test.reward(objective.reward))
    _qini_plot(curves, plot_path, title)
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


def _cross_fit(cfg, data: LoggedData, arms: Arms, objectives: dict[str, Objective], pipeline_obj: Objective,
               recipes: set[tuple[str, str]], n_folds: int, epochs: int, seed: int
               ) -> dict[tuple[str, str, str], _FoldValues]:
    """{(policy label, trained-for objective, evaluated objective): per-row values over the whole log}.

    Always-X policies get the label `always X` and trained-for "-". Each fold's simulator and every
    learned policy are fitted on the other folds only; values are for the held-out fold's rows.
    """
    n = data.n_rounds
    folds = kfold_indices(n, n_folds, seed)
    everything = np.arange(n)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), _FOLD_SEED_TAG]))
    always = arms.always()
    labels = [(a_name, "-") for a_name in always] + sorted(recipes)
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
        probs = {(a, "-"): _always_probs(len(held), data.n_actions, i) for a, i in always.items()}
        for name, trained_for in sorted(recipes):
            obj = objectives[trained_for]
            if name == T_LEARNER:
                pol = TLearnerPolicy(t_k, sim.encoder, obj)
            elif name == UPLIFT_PAYS:
                pol = UpliftPaysPolicy(sim, sim.encoder, obj, data.action_ids, arms.no_push_id)
            else:
                pol = _train_bandit(cfg, name, agent_specs[name], fit, sim, pipeline_obj, seed + k)
            probs[(name, trained_for)] = np.asarray(pol.action_probabilities(f_held), dtype=np.float64)
        held_pscore = _pscore(held_data)
        for (lab, tf), p in probs.items():
            for o, obj in objectives.items():
                sim_v = (p * obj.expected(pred, data.action_ids)).sum(axis=1)
                w = p[np.arange(len(held)), held_data.action] / held_pscore
                ips = obj.logged(held_data) * w
                fv = out[(lab, tf, o)]
                fv.sim[held], fv.ips[held] = sim_v, ips
                fv.folds.append({"fold": k, "rows": len(held), "sim": float(sim_v.mean()), "ips_terms": ips})
    return out


def _train_bandit(cfg, name: str, spec: dict, fit: LoggedData, sim: ResponseModel, objective: Objective, seed: int):
    """Re-learn agent `name` as the pipeline does (offline IPS on the logged propensities, then online in the
    fold's simulator)."""
    x, recent = sim.encode(fit)
    f = with_intercept(x)
    pos = fit.position

    def expected(rows: np.ndarray) -> np.ndarray:
        return objective.expected(sim.predict(x[rows], recent[rows], pos[rows]), fit.action_ids)

    bandit = ResponseBandit(f, expected)
    z_actions = catalogue_features(sim, fit.catalogue)[0] if name in SHARED else None
    logged_shares = np.bincount(fit.action, minlength=fit.n_actions) / fit.n_rounds  # only a replay baseline reads it
    agents = train_agents({name: spec}, n_actions=fit.n_actions, train_features=f, train_action=fit.action,
                          train_reward=objective.logged(fit), train_pscore=_pscore(fit),
                          logging_probabilities=logged_shares, simulator=bandit,
                          online_rounds=cfg.train.online_rounds, batch_size=cfg.train.batch_size, seed=seed,
                          progress=lambda _m: None, action_features=z_actions)
    return agents[name].policy


def _fidelity_table(values, arms: Arms, objectives, best: str, best_for: str, alpha: float) -> pd.DataFrame:
    rows = []
    wanted = [(a, "-") for a in arms.always()] + [(best, best_for)]
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


def _quality_bar(evals, best, best_refit, fold_values, data: LoggedData, arms: Arms, objectives, pipeline_obj,
                 ref_label: dict[str, str], outcome_obj: str, value_obj: str | None, alpha: float) -> dict[str, Any]:
    """{objective: bar}: the outcome bar (CI above logging, >= best always-push) and the value bar
    (beats the best always-push and sending nothing), each also cross-fitted on the whole log."""
    none = arms.no_push_label
    bar: dict[str, Any] = {}
    for o, kind in ((outcome_obj, "outcome"), (value_obj, "value")):
        if o is None:
            continue
        ev, b = evals[o], best[o]
        e = ev[b].estimates["ips"]
        entry = {"kind": kind, "best": b, "ips": e.value, "ci_low": e.ci_low, "ci_high": e.ci_high,
                 "logging": ev[b].logging.value, "best_always_push_action": ref_label[o],
                 "best_always_push": ev[ref_label[o]].estimates["ips"].value}
        # the same recipe cross-fitted on the whole log (policy learned on the other folds)
        r = best_refit[o]
        tf = _trained_for(r, o, pipeline_obj.name)
        m, lo, hi = mean_ci(fold_values[(r, tf, o)].ips, alpha, binary=False)
        cf = {"policy": r, "trained_for": tf, "ips": m, "ci_low": lo, "ci_high": hi,
              "logging": float(objectives[o].logged(data).mean()),
              "best_always_push": float(fold_values[(ref_label[o], "-", o)].ips.mean()),
              "no_push": float(fold_values[(none, "-", o)].ips.mean()), "rows": data.n_rounds}
        if kind == "outcome":
            for d, low, point in ((entry, e.ci_low, e.value), (cf, lo, m)):
                d |= {"ci_low_above_logging": low > d["logging"], "at_least_best_always_push": point >= d["best_always_push"]}
                d["met"] = d["ci_low_above_logging"] and d["at_least_best_always_push"]
        else:
            obj = objectives[o]
            entry |= {"no_push": ev[none].estimates["ips"].value, "margin": obj.margin, "money": obj.reward,
                      "push_cost": float(obj.cost_vector(data.action_ids).max())}
            for d, point in ((entry, e.value), (cf, m)):
                d |= {"beats_best_always_push": point > d["best_always_push"], "beats_no_push": point > d["no_push"]}
                d["met"] = d["beats_best_always_push"] and d["beats_no_push"]
            entry["default_costs"] = bool(np.isclose(entry["margin"], DEFAULT_MARGIN)
                                          and np.isclose(entry["push_cost"], DEFAULT_PUSH_COST))
        bar[o] = entry | {"cross_fitted": cf}
    return bar


# plots --------------------------------------------------------------------------------------------
def _qini_plot(curves, path, title: str) -> None:
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
@dataclass
class _Context:
    """What every report section of the uplift analysis reads."""

    run: RunFolder
    key: str
    data: LoggedData
    split: Split
    arms: Arms
    objectives: dict[str, Objective]
    pipeline_obj: Objective
    identified: bool
    notes: list[str]
    timings: dict[str, float]
    n_folds: int
    epochs: int


_YES = {True: "**yes**", False: "**no**"}


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _bar_markdown(ctx: _Context, bar: dict[str, Any], outcome_obj: str, value_obj: str | None) -> str:
    n_test = ctx.split.test.n_rounds
    how = ("random split stratified by action; the log has no timestamps" if ctx.split.method == "random-stratified"
           else "the latest rows of the log")
    md = [f"Held-out test split: {n_test:,} rows ({how}). No-push action: `{ctx.arms.no_push_id}`."]
    md += ctx.notes
    if not bar:
        return "\n".join([*md, "", "Quality bar not assessed: it is stated on IPS, which this log does not identify."])
    md += ["\"Best\" = the learned policy (the pipeline's agents and the uplift baselines) with the highest IPS "
           "value on these same rows, so its estimate is optimistic (picked on the data that scores it). \"Best "
           "always-push\" = the push whose always-policy has the highest SNIPS value on these rows.", ""]
    c = bar[outcome_obj]
    md += [f"**{outcome_obj.capitalize()}** — best: `{c['best']}`, IPS {_fmt(c['ips'])} [95% CI {_fmt(c['ci_low'])}, "
           f"{_fmt(c['ci_high'])}]; logging policy {_fmt(c['logging'])}; best always-push "
           f"({c['best_always_push_action']}) {_fmt(c['best_always_push'])}.",
           f"- CI lower bound above the logging policy's value: {_YES[c['ci_low_above_logging']]} "
           f"({_fmt(c['ci_low'])} vs {_fmt(c['logging'])})",
           f"- point estimate >= the best always-push: {_YES[c['at_least_best_always_push']]} ({_fmt(c['ips'])} vs "
           f"{_fmt(c['best_always_push'])})",
           f"- bar {_met(c['met'])} on the test split.", ""]
    if value_obj is not None:
        p = bar[value_obj]
        costs = ", the default costs" if p["default_costs"] else ", NOT the default costs"
        what = (f"margin {p['margin']:.2f} × {p['money']} − {p['push_cost']:.2f} per push{costs}"
                if value_obj == "profit" else f"{p['push_cost']:.2f} per push")
        md += [f"**{value_obj.capitalize()}** ({what}) — best: `{p['best']}`, IPS {_fmt(p['ips'])} [95% CI "
               f"{_fmt(p['ci_low'])}, {_fmt(p['ci_high'])}]; best always-push ({p['best_always_push_action']}) "
               f"{_fmt(p['best_always_push'])}; sending nothing ({ctx.arms.no_push_label}) {_fmt(p['no_push'])}; "
               f"logging {_fmt(p['logging'])}.",
               f"- beats the best always-push: {_YES[p['beats_best_always_push']]}; beats sending nothing: "
               f"{_YES[p['beats_no_push']]}",
               f"- bar {_met(p['met'])} on the test split (point estimates; the CI says how sure).", ""]
    ccf = c["cross_fitted"]
    md += [f"Cross-fitted check on the whole log ({ccf['rows']:,} rows, {ctx.n_folds} folds; each fold's policy "
           "learned on the other folds, so no row scores a policy that saw it):",
           f"- {outcome_obj}, `{ccf['policy']}`: IPS {_fmt(ccf['ips'])} [{_fmt(ccf['ci_low'])}, {_fmt(ccf['ci_high'])}] "
           f"vs logging {_fmt(ccf['logging'])} (CI above: {_YES[ccf['ci_low_above_logging']]}), best always-push "
           f"{_fmt(ccf['best_always_push'])} (>=: {_YES[ccf['at_least_best_always_push']]}): {_met(ccf['met'])}"]
    if value_obj is not None:
        pcf = bar[value_obj]["cross_fitted"]
        md.append(f"- {value_obj}, `{pcf['policy']}`: IPS {_fmt(pcf['ips'])} [{_fmt(pcf['ci_low'])}, "
                  f"{_fmt(pcf['ci_high'])}] vs best always-push {_fmt(pcf['best_always_push'])} "
                  f"({_YES[pcf['beats_best_always_push']]}), sending nothing {_fmt(pcf['no_push'])} "
                  f"({_YES[pcf['beats_no_push']]}): {_met(pcf['met'])}")
    return "\n".join(md)


def _share_cells(ctx: _Context) -> tuple[str, Callable[[np.ndarray], str]]:
    """The share column's header and a formatter of one policy's (A,) shares."""
    ids = ctx.arms.ids.tolist()
    order = [ctx.arms.no_push, *ctx.arms.pushes]
    if len(ids) <= MAX_SHARE_COLUMNS:
        return ("shares " + " / ".join(str(ids[i]) for i in order),
                lambda s: "/".join(f"{s[i]:.0%}" for i in order))

    def top(s: np.ndarray) -> str:
        i = max(ctx.arms.pushes, key=lambda j: s[j])
        return f"{s[ctx.arms.no_push]:.0%} / {ids[i]} {s[i]:.0%}"

    return "share of no push / top push", top


def _ope_markdown(ctx: _Context, evals, shares, ref_label: dict[str, str]) -> str:
    n_test = ctx.split.test.n_rounds
    estimators = _estimators(evals)
    main = "snips" if ctx.identified else "dm"
    how = "with the logged propensities" if ctx.identified else "by the response model (DM)"
    md = [f"Every policy on every objective, on the {n_test:,} held-out test rows, valued {how}. Values per customer with 95% bootstrap CIs; lifts (relative, {main.upper()}) over the "
          "logging policy, the best always-push policy (named per objective) and sending nothing "
          f"({ctx.arms.no_push_label}). `t_learner` and `uplift_pays` are re-derived for each objective (per-action "
          f"response models / the pooled response model); the pipeline's agents were trained for "
          f"`{ctx.pipeline_obj.name}`. Every estimator and lift: `{ctx.key}/uplift_ope.csv`.", ""]
    if not ctx.identified:
        md += [ctx.notes[0], ""]
    header, share = _share_cells(ctx)
    for o, by_policy in evals.items():
        lv = next(iter(by_policy.values())).logging
        md += [f"**{o}** (logging policy: {_fmt(lv.value)} [{_fmt(lv.ci_low)}, {_fmt(lv.ci_high)}]; best always-push: "
               f"{ref_label[o]})", "",
               "| policy | " + " | ".join(f"{k.upper()} [95% CI]" for k in estimators)
               + f" | lift vs logging / best push / no push | {header} |",
               "|---|" + "---|" * (len(estimators) + 2)]
        ref = by_policy[ref_label[o]].estimates[main].value
        none = by_policy[ctx.arms.no_push_label].estimates[main].value
        for name, e in by_policy.items():
            cells = [f"{_fmt(e.estimates[k].value)} [{_fmt(e.estimates[k].ci_low)}, {_fmt(e.estimates[k].ci_high)}]"
                     for k in estimators]
            v = e.estimates[main].value
            md.append(f"| {name} | " + " | ".join(cells) + f" | {_pct(e.lift(main))} / {_pct(_lift(v, ref))} / "
                      f"{_pct(_lift(v, none))} | {share(shares[o][name])} |")
        md.append("")
    return "\n".join(md)


def _qini_markdown(ctx: _Context, qini: pd.DataFrame) -> str:
    if not ctx.identified:
        return ("Not computed: a Qini curve compares pushed and not-pushed customers, which a log whose propensities "
                "are all 1.0 never logs side by side (IPS is not identified).")
    weighted = not np.all(_pscore(ctx.split.test) == _pscore(ctx.split.test)[0])
    how = (" Rows are weighted by their inverse logged propensity (normalised to mean 1), as if the log had been "
           "randomised uniformly." if weighted else "")
    md = [f"Any push (treated: every action but `{ctx.arms.no_push_id}`) vs no push on the test split; score = "
          "predicted outcome of the best push minus that of no push; coefficient = area between the Qini curve and "
          "random targeting per customer (positive: better than random), with a 95% bootstrap CI (resampled "
          "customers). For scale: the incremental outcome per customer with everyone targeted is in the last "
          f"column.{how}", "",
          "| outcome | score | Qini coefficient [95% CI] | incremental per customer, all targeted |", "|---|---|---|---|"]
    md += [f"| {r['reward']} | {r['score']} | {r['coefficient']:+.4g} [{r['ci_low']:+.4g}, {r['ci_high']:+.4g}] | "
           f"{_fmt(r['overall_gain_per_customer'])} |" for r in qini.to_dict("records")]
    md += ["", f"![Qini]({ctx.key}/qini.png)"]
    return "\n".join(md)


def _fidelity_markdown(ctx: _Context, fid: pd.DataFrame, fid_best: str, fid_best_for: str, fid_note: str) -> str:
    run_time = "Section run time: " + ", ".join(f"{k} {v:.1f} s" for k, v in ctx.timings.items()) + "."
    if not ctx.identified:
        return ("Skipped: the cross-fitted check compares the simulator with IPS per fold, and IPS is not "
                f"identified on this log ({ips_identified(ctx.data)[1]}).\n\n{run_time}")
    pooled = fid[fid["scope"] == "pooled"]
    md = [f"{ctx.n_folds}-fold cross-fitting on the whole log ({ctx.data.n_rounds:,} rows): per fold a response model "
          f"with the pipeline's settings (at most {ctx.epochs} epochs; {VALIDATION_SHARE:.0%} of the other folds for "
          "early stopping) fitted on the other folds is the simulator; the always-X policies and the best learned "
          f"policy (`{fid_best}`, trained for `{fid_best_for}` and re-learned on the other folds) are valued by it on "
          "the held-out fold and compared with the fold's IPS estimate (logged propensities; 95% CI, normal "
          "approximation). Pooled: each row valued by the model that did not see it, over all rows.", ""]
    if fid_note:
        md += [fid_note, ""]
    md += ["| objective | policy | simulator | IPS [95% CI] | inside CI (pooled) | folds inside CI |",
           "|---|---|---|---|---|---|"]
    for r in pooled.to_dict("records"):
        md.append(f"| {r['objective']} | {r['policy']} | {_fmt(r['simulated'])} | {_fmt(r['ips'])} "
                  f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] | {'yes' if r['inside_ci'] else '**no**'} | "
                  f"{r['folds_inside']} |")
    n_in = int(pooled["inside_ci"].sum())
    md += ["", f"Pooled: {n_in}/{len(pooled)} inside the CI. Per fold: `{ctx.key}/uplift_fidelity.csv`.", "",
           f"![fidelity]({ctx.key}/uplift_fidelity.png)", "", run_time]
    return "\n".join(md)


def _plain(d: dict) -> dict:
    return {k: (_plain(v) if isinstance(v, dict) else (bool(v) if isinstance(v, np.bool_) else v)) for k, v in d.items()}


def _headline(evals, qini: pd.DataFrame, fid: pd.DataFrame, bar, timings, best, arms: Arms,
              ref_label: dict[str, str], identified: bool) -> dict[str, Any]:
    estimators = _estimators(evals)
    ope = {o: {n: {k: float(e.estimates[k].value) for k in estimators}
               | ({"ips_ci_low": float(e.estimates["ips"].ci_low), "ips_ci_high": float(e.estimates["ips"].ci_high)}
                  if identified else {})
               for n, e in by_policy.items()} for o, by_policy in evals.items()}
    logging = {o: float(next(iter(by_policy.values())).logging.value) for o, by_policy in evals.items()}
    q = {f"{r['reward']}/{r['score'].split(' ')[0]}": {k: float(r[k]) for k in ("coefficient", "ci_low", "ci_high")}
         for r in qini.to_dict("records")}
    f = {}
    if len(fid):
        pooled = fid[fid["scope"] == "pooled"]
        f = {f"{r['objective']}/{r['policy']}": {"simulated": float(r["simulated"]), "ips": float(r["ips"]),
                                                 "ci_low": float(r["ci_low"]), "ci_high": float(r["ci_high"]),
                                                 "inside_ci": bool(r["inside_ci"]), "folds_inside": r["folds_inside"]}
             for r in pooled.to_dict("records")}
    return {"no_push_action": str(arms.no_push_id), "identified": identified, "ope": ope, "logging_value": logging,
            "best_learned": dict(best), "best_always_push": dict(ref_label), "qini": q, "fidelity": f,
            "quality_bar": _plain(bar), "seconds": {k: round(float(v), 2) for k, v in timings.items()}}
