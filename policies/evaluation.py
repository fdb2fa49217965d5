"""Evaluate one policy on a log with every OPE estimator: values, CIs, lift, support.

This is what `pushrl evaluate` writes as `evaluation.json` and what `pushrl run`
tabulates for every agent. The logging policy's own value is the mean logged
reward (on-policy) with a bootstrap CI on the same resamples' seed.

Given K bootstrap refits of the reward model (`estimated_rewards_refits`), every
model-based estimator's CI also includes the refits' spread, and DM's CI is the
hull of its own and the DR one, so that it also covers the model's bias
(`pushrl.policies.ope.model_interval` has the formula and why).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pushrl.policies.ope import (
    ESTIMATORS,
    BaseEstimator,
    Interval,
    OPEInputs,
    RowTerms,
    SupportDiagnostics,
    estimate_intervals,
    support_diagnostics,
)
from pushrl.policies.ope.model_interval import model_based_interval, with_model_variance

ESTIMATOR_KEYS = tuple(ESTIMATORS)  # the order of evaluation.json's "estimates"


@dataclass(frozen=True)
class EstimatorSettings:
    """Hyperparameters of the estimators used by default (see docs for the choice)."""

    clip: float | None = None
    switch_threshold: float = 50.0
    dros_lambda: float = 100.0

    def build(self) -> dict[str, BaseEstimator]:
        cls = ESTIMATORS
        return {
            "dm": cls["dm"](),
            "ips": cls["ips"](clip=self.clip),
            "snips": cls["snips"](),
            "dr": cls["dr"](),
            "sndr": cls["sndr"](),
            "switch-dr": cls["switch-dr"](threshold=self.switch_threshold),
            "dr-os": cls["dr-os"](lambda_=self.dros_lambda),
        }


@dataclass
class PolicyEvaluation:
    """OPE of one policy on one log split."""

    policy: str
    data: str
    split: str
    n_rounds: int
    logging: Interval
    estimates: dict[str, Interval]
    diagnostics: SupportDiagnostics
    recommended: str
    identified: bool = True
    notes: list[str] = field(default_factory=list)
    unsupported_actions: list[int] = field(default_factory=list)  # never logged in the evaluated rows
    unsupported_mass: float = 0.0  # the policy's mass on them

    def lift(self, estimator: str | None = None) -> float:
        """Relative lift of the estimate over the logging policy's on-policy value."""
        v = self.estimates[estimator or self.recommended].value
        base = self.logging.value
        return (v - base) / abs(base) if base != 0 else math.nan

    def to_json(self) -> dict[str, Any]:
        """The `evaluation.json` document (exactly the documented keys, plus `policy`, `identified`, `notes`)."""

        def iv(i: Interval) -> dict[str, float]:
            return {"value": float(i.value), "ci_low": float(i.ci_low), "ci_high": float(i.ci_high)}

        d = self.diagnostics
        return {
            "data": self.data,
            "split": self.split,
            "n_rounds": int(self.n_rounds),
            "policy": self.policy,
            "logging_policy_value": iv(self.logging),
            "estimates": {k: iv(self.estimates[k]) for k in ESTIMATOR_KEYS if k in self.estimates},
            "recommended_estimator": self.recommended,
            "identified": self.identified,
            "diagnostics": {
                "ess": float(d.effective_sample_size),
                "max_weight": float(d.max_weight),
                "low_support_mass": float(d.low_support_mass),
                "unsupported_actions": list(self.unsupported_actions),
                "unsupported_mass": float(self.unsupported_mass),
                "warnings": list(d.warnings),
            },
            "notes": list(self.notes),
        }

    def table_rows(self) -> list[dict[str, Any]]:
        rows = []
        for k, i in self.estimates.items():
            rows.append({"policy": self.policy, "estimator": k, "value": i.value, "ci_low": i.ci_low,
                         "ci_high": i.ci_high, "lift": self.lift(k)})
        return rows


class OnPolicyMean:
    """The logging policy's on-policy value, the mean logged reward, as one more column of the shared bootstrap."""

    def row_terms(self, inputs: OPEInputs) -> RowTerms:
        return RowTerms(mean_term=inputs.reward)


LOGGING = "__logging__"  # its key among the estimators resampled together


def evaluate_policy(
    *,
    policy: str,
    data: str,
    split: str,
    action_dist: np.ndarray,
    reward: np.ndarray,
    action: np.ndarray,
    pscore: np.ndarray,
    position: np.ndarray,
    estimated_rewards: np.ndarray,
    recommended: str = "snips",
    settings: EstimatorSettings | None = None,
    n_bootstrap: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    tau: float = 0.01,
    identified: bool = True,
    estimated_rewards_refits: np.ndarray | None = None,
) -> PolicyEvaluation:
    """All seven estimators with bootstrap CIs on the same resamples, plus support diagnostics.

    When `identified` is False (deterministic logging, see the regime check) only DM is
    computed and the IPS family is left out, with a note saying why.
    estimated_rewards_refits (K, n, A, L), K >= 2: `estimated_rewards` of K bootstrap refits
    of the reward model (`pushrl.envs.model.model_uncertainty`); None keeps the row-bootstrap CIs.
    """
    settings = settings or EstimatorSettings()
    estimators = settings.build()
    notes: list[str] = []
    if not identified:
        estimators = {"dm": estimators["dm"]}
        notes.append("IPS-family estimates are not identified: only DM is reported")
        recommended = "dm"
    if recommended not in estimators:
        raise ValueError(f"recommended estimator {recommended!r} is not one of {sorted(estimators)}")
    inputs = OPEInputs(action_dist, reward, action, pscore, position, estimated_rewards, action_dist.shape[1])
    estimates = estimate_intervals({**estimators, LOGGING: OnPolicyMean()}, inputs, n_bootstrap=n_bootstrap,
                                   alpha=alpha, seed=seed)  # one pass: every estimator and the logging value
    logging = estimates.pop(LOGGING)
    if estimated_rewards_refits is not None:
        estimates = _with_model_uncertainty(estimates, estimators, inputs, estimated_rewards_refits, alpha)
        notes.append(_refit_note(len(estimated_rewards_refits), "dr" in estimates))
    diag = support_diagnostics(inputs=inputs, tau=tau)  # the inputs validated once above
    # cold start: promotions with no logged row here cannot be valued by the IPS family
    logged_rows = np.bincount(np.asarray(action), minlength=action_dist.shape[1])
    unsupported = np.flatnonzero(logged_rows == 0)
    unsupported_mass = float(action_dist[:, unsupported, :].sum(axis=1).mean()) if len(unsupported) else 0.0
    if unsupported_mass > 0:
        notes.append(f"{len(unsupported)} promotion(s) (action indices {unsupported[:10].tolist()}) have no logged rows "
                     f"(cold start): the policy puts {unsupported_mass:.1%} of its mass on them, which IPS-family "
                     "estimators value at 0 and only DM or the simulator can score")
    return PolicyEvaluation(
        policy=policy,
        data=data,
        split=split,
        n_rounds=len(reward),
        logging=logging,
        estimates=estimates,
        diagnostics=diag,
        recommended=recommended,
        identified=identified,
        notes=notes + list(diag.warnings),
        unsupported_actions=unsupported.tolist(),
        unsupported_mass=unsupported_mass,
    )


def _with_model_uncertainty(estimates: dict[str, Interval], estimators: dict[str, BaseEstimator], inputs: OPEInputs,
                            refits: np.ndarray, alpha: float) -> dict[str, Interval]:
    """Model-based estimators' CIs widened by K refits' values; DM's also spans the DR CI."""
    q = np.asarray(refits, dtype=np.float64)
    if q.ndim != 4 or q.shape[0] < 2 or q.shape[1:] != inputs.action_dist.shape:
        raise ValueError(f"estimated_rewards_refits must be (K >= 2, n, A, L) = (K, {', '.join(map(str, inputs.action_dist.shape))}), "
                         f"got shape {q.shape}")
    model_based = [k for k, e in estimators.items() if "estimated_rewards_by_reg_model" in e.needs]
    values = {k: np.empty(q.shape[0]) for k in model_based}
    for j, q_j in enumerate(q):
        refit = OPEInputs(inputs.action_dist, inputs.reward, inputs.action, inputs.pscore, inputs.position, q_j,
                          inputs.n_actions)
        for k in model_based:
            values[k][j] = estimators[k].row_terms(refit).value()
    out = dict(estimates)
    for k in model_based:
        if k != "dm":
            out[k] = with_model_variance(estimates[k], values[k], alpha)
    if "dm" in out:
        out["dm"] = model_based_interval(estimates["dm"], values["dm"], alpha, corrected=out.get("dr"))
    return out


def _refit_note(n_refits: int, checked: bool) -> str:
    if checked:
        return (f"DM and DR-family CIs include {n_refits} bootstrap refits of the reward model; DM's also spans the "
                "DR CI, which corrects the model's bias on the logged rows")
    return (f"DM's CI includes {n_refits} bootstrap refits of the reward model (its variance) but not its bias, "
            "which cannot be checked without randomised propensities (model-only)")
