"""Uplift statistics: the Qini curve and coefficient (Radcliffe, 2007), and the pure statistics of
the run report's uplift analysis (`pushrl.agents.uplift_analysis` fits the models they read).

For a score ranking users by predicted uplift of treatment (e.g. "any push")
over control ("no push"), target the top-scored users first. At each cut
(after all users sharing a score), with treated/control counts N_T, N_C and
outcome sums Y_T, Y_C among the targeted:

    Q = Y_T − Y_C × N_T / N_C          (0 where N_C = 0)

The curve starts at (0, 0) and ends at the overall incremental gain. The Qini
coefficient is the area between the curve and the straight line to its end
point (random targeting), divided by the squared number of users, so it is
comparable across samples; positive means better than random.

Optional row weights (for a log that was not randomised uniformly: inverse
logged propensities) make a row count as `weight` users in every count and
sum, the x axis included: integer weights give exactly the curve of the log
with each row repeated that many times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pushrl.envs.common.stats import mean_ci
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.regime import classify_regime
from pushrl.envs.objectives import DEFAULT_MARGIN, DEFAULT_PUSH_COST, Objective, make_objective
from pushrl.policies.evaluation import PolicyEvaluation

ESTIMATORS = ("ips", "snips", "dr", "sndr")
"""The estimators the uplift analysis reports, in this order (DM alone when IPS is not identified)."""
T_LEARNER, UPLIFT_PAYS = "t_learner", "uplift_pays"
"""Names of the two uplift baselines (`pushrl.agents.uplift`), re-derived per objective."""

Evaluations = dict[str, dict[str, PolicyEvaluation]]
"""{objective: {policy: PolicyEvaluation}}."""


@dataclass(frozen=True)
class QiniCurve:
    n_targeted: np.ndarray  # (k,) users targeted at each cut, starting at 0
    gain: np.ndarray  # (k,) incremental outcome at each cut
    coefficient: float

    @property
    def fraction_targeted(self) -> np.ndarray:
        return self.n_targeted / self.n_targeted[-1]


def _check_weight(weight: np.ndarray | None, n: int) -> np.ndarray | None:
    if weight is None:
        return None
    w = np.asarray(weight, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"weight must be 1-D with one value per user ({n}), got shape {w.shape}")
    bad = np.flatnonzero(~np.isfinite(w) | (w <= 0))
    if len(bad):
        raise ValueError(f"weight must be finite and > 0; index {int(bad[0])} has {w[bad[0]]!r}")
    return w


def _check(score: np.ndarray, treated: np.ndarray, outcome: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s, t, y = (np.asarray(a) for a in (score, treated, outcome))
    if not (s.ndim == t.ndim == y.ndim == 1 and len(s) == len(t) == len(y)):
        raise ValueError(f"score, treated and outcome must be 1-D of equal length, got {s.shape}, {t.shape}, {y.shape}")
    if not np.isin(t, (0, 1)).all():
        raise ValueError("treated must be 0/1 (or bool)")
    for name, a in (("score", s), ("outcome", y)):
        if not np.isfinite(a.astype(float)).all():
            raise ValueError(f"{name} has NaN or inf at index {int(np.flatnonzero(~np.isfinite(a.astype(float)))[0])}")
    return s.astype(float), t.astype(bool), y.astype(float)


def qini_curve(score: np.ndarray, treated: np.ndarray, outcome: np.ndarray,
               weight: np.ndarray | None = None) -> QiniCurve:
    """Qini curve and coefficient of `score` (higher = target first); vectorised, ties grouped.

    weight: optional (n,) positive row weights (a row counts as `weight` users); None: all 1.
    """
    s, t, y = _check(score, treated, outcome)
    w = _check_weight(weight, len(s))
    order = np.argsort(-s, kind="mergesort")
    s, t, y = s[order], t[order], y[order]
    cuts = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    if w is None:
        n_t = np.cumsum(t)[cuts]
        n_c = (cuts + 1) - n_t
        y_t = np.cumsum(np.where(t, y, 0.0))[cuts]
        y_c = np.cumsum(np.where(t, 0.0, y))[cuts]
        n = np.r_[0, cuts + 1].astype(float)
    else:
        w = w[order]
        n_t = np.cumsum(np.where(t, w, 0.0))[cuts]
        n_c = np.cumsum(np.where(t, 0.0, w))[cuts]
        y_t = np.cumsum(np.where(t, w * y, 0.0))[cuts]
        y_c = np.cumsum(np.where(t, 0.0, w * y))[cuts]
        n = np.r_[0.0, np.cumsum(w)[cuts]]
    ratio = np.divide(n_t, n_c, out=np.zeros(len(cuts)), where=n_c > 0)
    gain = np.r_[0.0, y_t - y_c * ratio]
    area = np.trapezoid(gain, n)
    random_area = 0.5 * n[-1] * gain[-1]
    return QiniCurve(n_targeted=n, gain=gain, coefficient=float((area - random_area) / (n[-1] ** 2)))


def qini_weights(pscore: np.ndarray) -> np.ndarray | None:
    """(n,) inverse propensities normalised to mean 1 (as if logged uniformly at random); None on a uniform log."""
    p = np.asarray(pscore, dtype=np.float64)
    return None if np.all(p == p[0]) else (1.0 / p) / np.mean(1.0 / p)


def qini_with_ci(score: np.ndarray, treated: np.ndarray, outcome: np.ndarray, weight: np.ndarray | None,
                 resamples: np.ndarray, alpha: float) -> tuple[QiniCurve, float, float]:
    """The Qini curve of `score` and a percentile (1 − alpha) CI of its coefficient over `resamples`
    ((B, n) row indices, one bootstrap resample per row)."""
    c = qini_curve(score, treated, outcome, weight)
    coefs = [qini_curve(score[b], treated[b], outcome[b], None if weight is None else weight[b]).coefficient
             for b in resamples]
    lo, hi = np.percentile(coefs, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return c, float(lo), float(hi)


# the uplift analysis: the log's arms, its objectives, and the statistics over OPE results ----------
@dataclass(frozen=True)
class Arms:
    """The log's actions as the uplift analysis sees them: the no-push action and the pushes.

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
    if data.pscore is None:
        return False, "the log has no propensities"
    regime = classify_regime(data)  # the one regime rule (pushrl evaluate and run use it too)
    if regime.regime == "deterministic":
        return False, f"logging is deterministic ({regime.evidence})"
    return True, ""


def logged_pscore(data: LoggedData) -> np.ndarray:
    """(n,) the logged propensities, all 1.0 when the log has none."""
    return data.pscore if data.pscore is not None else np.ones(data.n_rounds)


def always_probabilities(n: int, n_actions: int, index: int) -> np.ndarray:
    """(n, n_actions) the policy that always sends action `index`."""
    p = np.zeros((n, n_actions))
    p[:, index] = 1.0
    return p


def lift(value: float, base: float) -> float:
    """(value − base) / |base|; NaN when base is 0."""
    return (value - base) / abs(base) if base != 0 else float("nan")


def analysed_objectives(data: LoggedData, objective: Objective, no_push_id: object, money: str | None,
                        margin: float, push_cost: float) -> dict[str, Objective]:
    """Every declared reward, profit (margin × `money` − `push_cost` per push) when `money` is not None, and
    `objective` (the pipeline's, under its own name)."""
    ids = data.action_ids
    out = {r: make_objective(r, ids, no_push_action=no_push_id) for r in data.reward_names}
    if money is not None:
        out["profit"] = make_objective("profit", ids, margin=margin, push_cost=push_cost, no_push_action=no_push_id,
                                       money=money)
    out[objective.name] = objective
    return out


def bar_objectives(objective: Objective, objectives: dict[str, Objective], reward_names: tuple[str, ...],
                   default_objective: str | None) -> tuple[str, str | None]:
    """(outcome objective, value objective or None) that the quality bar is stated for: a plain pipeline
    objective is the outcome (profit the value, if analysed); else the log's default reward (its first when
    `default_objective` is not a reward) is the outcome and the pipeline's objective the value."""
    if objective.is_plain:
        return objective.name, ("profit" if "profit" in objectives else None)
    return (str(default_objective) if default_objective in reward_names else reward_names[0]), objective.name


def trained_for(name: str, objective_name: str, pipeline_objective: str | None = None) -> str:
    """The objective a learned policy is trained for: the uplift baselines per objective, agents the pipeline's."""
    if name in (T_LEARNER, UPLIFT_PAYS):
        return objective_name
    return pipeline_objective or objective_name


def estimators_of(evals: Evaluations) -> tuple[str, ...]:
    """The `ESTIMATORS` the evaluations hold, in order; ("dm",) when they hold none of them."""
    first = next(iter(next(iter(evals.values())).values()))
    return tuple(k for k in ESTIMATORS if k in first.estimates) or ("dm",)


def best_always_push(evals: Evaluations, arms: Arms, estimator: str) -> dict[str, str]:
    """{objective: "always X"} for the push X whose always-policy has the highest `estimator` value."""
    ids = arms.ids.tolist()
    return {o: max((f"always {ids[i]}" for i in arms.pushes), key=lambda n, e=by_policy: e[n].estimates[estimator].value)
            for o, by_policy in evals.items()}


def best_by(evals: Evaluations, names: list[str], estimator: str) -> dict[str, str]:
    """{objective: the policy among `names` with the highest `estimator` value} (the first on ties)."""
    return {o: max(names, key=lambda n, e=by_policy: e[n].estimates[estimator].value) for o, by_policy in evals.items()}


def ope_table(evals: Evaluations, shares: dict[str, dict[str, np.ndarray]], kinds: dict[str, str], arms: Arms,
              ref_label: dict[str, str]) -> pd.DataFrame:
    """One row per (objective, policy, estimator): value, CI, lifts over logging / best always-push / no push,
    ESS and the policy's action shares (`share_<id>`)."""
    rows = []
    ids = arms.ids.tolist()
    for o, by_policy in evals.items():
        for name, e in by_policy.items():
            for est in estimators_of(evals):
                i = e.estimates[est]
                ref = by_policy[ref_label[o]].estimates[est].value
                none = by_policy[arms.no_push_label].estimates[est].value
                row = {"objective": o, "policy": name, "kind": kinds[name], "estimator": est, "value": i.value,
                       "ci_low": i.ci_low, "ci_high": i.ci_high, "logging_value": e.logging.value,
                       "lift_vs_logging": e.lift(est), "best_always_push": ref_label[o],
                       "lift_vs_best_always_push": lift(i.value, ref), "lift_vs_no_push": lift(i.value, none),
                       "ess": e.diagnostics.effective_sample_size}
                row |= {f"share_{a}": float(s) for a, s in zip(ids, shares[o][name], strict=True)}
                rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class FoldValues:
    """Per-row simulator values and IPS terms of one (policy, objective) over the whole log, and per fold
    {"fold", "rows", "sim" (the fold's mean simulated value), "ips_terms" (its rows' IPS terms)}."""

    sim: np.ndarray
    ips: np.ndarray
    folds: list[dict[str, Any]] = field(default_factory=list)


FoldKey = tuple[str, str, str]
"""(policy label, trained-for objective ("-" for always-X), evaluated objective)."""


def fidelity_table(values: dict[FoldKey, FoldValues], arms: Arms, objectives, best: str, best_for: str,
                   alpha: float) -> pd.DataFrame:
    """Simulated value vs IPS (1 − alpha CI, normal approximation) per fold and pooled, for every always-X
    policy and the best learned one, on every objective."""
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


def _bar_checks(kind: str, d: dict[str, Any], low: float, point: float) -> None:
    if kind == "outcome":
        d |= {"ci_low_above_logging": low > d["logging"], "at_least_best_always_push": point >= d["best_always_push"]}
        d["met"] = d["ci_low_above_logging"] and d["at_least_best_always_push"]
    else:
        d |= {"beats_best_always_push": point > d["best_always_push"], "beats_no_push": point > d["no_push"]}
        d["met"] = d["beats_best_always_push"] and d["beats_no_push"]


def quality_bar(evals: Evaluations, best: dict[str, str], best_refit: dict[str, str],
                fold_values: dict[FoldKey, FoldValues], data: LoggedData, arms: Arms, objectives: dict[str, Objective],
                pipeline_obj: Objective, ref_label: dict[str, str], outcome_obj: str, value_obj: str | None,
                alpha: float) -> dict[str, Any]:
    """{objective: bar}: the outcome bar (IPS CI lower bound above logging, point >= best always-push) and the
    value bar (point beats the best always-push and sending nothing), each also cross-fitted on the whole log
    (`cross_fitted`: the same recipe learned on the other folds)."""
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
        r = best_refit[o]
        tf = trained_for(r, o, pipeline_obj.name)
        m, lo, hi = mean_ci(fold_values[(r, tf, o)].ips, alpha, binary=False)
        cf = {"policy": r, "trained_for": tf, "ips": m, "ci_low": lo, "ci_high": hi,
              "logging": float(objectives[o].logged(data).mean()),
              "best_always_push": float(fold_values[(ref_label[o], "-", o)].ips.mean()),
              "no_push": float(fold_values[(none, "-", o)].ips.mean()), "rows": data.n_rounds}
        if kind == "value":
            obj = objectives[o]
            entry |= {"no_push": ev[none].estimates["ips"].value, "margin": obj.margin, "money": obj.reward,
                      "push_cost": float(obj.cost_vector(data.action_ids).max())}
        _bar_checks(kind, entry, e.ci_low, e.value)
        _bar_checks(kind, cf, lo, m)
        if kind == "value":
            entry["default_costs"] = bool(np.isclose(entry["margin"], DEFAULT_MARGIN)
                                          and np.isclose(entry["push_cost"], DEFAULT_PUSH_COST))
        bar[o] = entry | {"cross_fitted": cf}
    return bar
