"""The ship rule: which policy replaces the logging policy, if any, and why.

A candidate ships when, with the recommended estimator `e`,

    ci_low_e(objective) > logging value of the objective             (a confident gain), and
    ci_low_e(g) >= (1 - margin_g) x logging value of g, for every guardrail g (a bounded loss),

and its effect is identified (logged or estimated propensities with support where it puts mass).
Among the candidates that pass, the highest point estimate of the objective ships; if none passes,
the logging policy stays, and the reason names the best candidate and what stopped it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pushrl.policies.evaluation import PolicyEvaluation

LOGGING = "logging"


@dataclass(frozen=True)
class Guardrail:
    """At most `margin` (a share: 0.02 = 2%) below the logging policy on `reward`'s CI lower bound."""

    reward: str
    margin: float

    def __post_init__(self) -> None:
        if isinstance(self.margin, bool) or not isinstance(self.margin, int | float) or not 0 <= self.margin < 1:
            raise ValueError(f"objective.guardrails.{self.reward}: expected a share in [0, 1) (0.02 = 2%), got {self.margin!r}")

    def floor(self, logging_value: float) -> float:
        """The lowest acceptable CI lower bound."""
        return logging_value - self.margin * abs(logging_value)


def make_guardrails(spec: Mapping[str, float] | None, declared: Sequence[str]) -> tuple[Guardrail, ...]:
    """Guardrails from `objective.guardrails`; a reward the log does not declare is refused by name."""
    out = []
    for reward, margin in dict(spec or {}).items():
        if reward not in declared:
            raise ValueError(f"objective.guardrails.{reward}: {reward!r} is not a declared reward of the log; "
                             f"declared: {list(declared)}")
        out.append(Guardrail(str(reward), margin))
    return tuple(out)


@dataclass(frozen=True)
class Verdict:
    """One candidate against the rule."""

    policy: str
    value: float
    ci_low: float
    gain: bool
    identified: bool
    guardrails: dict[str, bool] = field(default_factory=dict)

    @property
    def passes(self) -> bool:
        return self.gain and self.identified and all(self.guardrails.values())

    def blocker(self, estimator: str, logging_value: float) -> str:
        """Why the candidate does not ship (empty if it does)."""
        if not self.identified:
            return "its effect is not identified from this log"
        if not self.gain:
            return (f"its {estimator} 95% CI lower bound ({self.ci_low:.5g}) is not above the logging policy's "
                    f"value ({logging_value:.5g})")
        failed = [g for g, ok in self.guardrails.items() if not ok]
        return (f"its guardrail(s) {failed} are not shown to hold (their CI lower bound is more than the margin below "
                f"the logging policy; with a wide CI that means not demonstrated, not necessarily a loss)"
                if failed else "")


@dataclass(frozen=True)
class ShipDecision:
    chosen: str
    why: str
    verdicts: dict[str, Verdict]


def decide(objective_evals: Mapping[str, PolicyEvaluation], reward_evals: Mapping[str, Mapping[str, PolicyEvaluation]],
           estimator: str, candidates: Sequence[str], guardrails: Sequence[Guardrail],
           identified: Mapping[str, bool]) -> ShipDecision:
    """Apply the rule to `candidates` (names in `objective_evals`; "logging" is never a candidate).

    reward_evals: {reward: {policy: evaluation of that reward}} for every guardrail reward.
    identified: {policy: whether its IPS-family estimates are identified}; missing means True.
    """
    if not objective_evals:
        raise ValueError("decide needs at least one evaluated policy")
    logging_value = next(iter(objective_evals.values())).logging.value
    verdicts: dict[str, Verdict] = {}
    for name in candidates:
        if name == LOGGING:
            continue
        est = objective_evals[name].estimates[estimator] if estimator in objective_evals[name].estimates \
            else objective_evals[name].estimates["dm"]
        checks = {}
        for g in guardrails:
            ev = reward_evals[g.reward][name]
            low = ev.estimates[estimator].ci_low if estimator in ev.estimates else math.nan
            checks[g.reward] = bool(low >= g.floor(ev.logging.value))
        verdicts[name] = Verdict(name, float(est.value), float(est.ci_low), bool(est.ci_low > logging_value),
                                 bool(identified.get(name, True)), checks)
    ranked = sorted(verdicts.values(), key=lambda v: v.value, reverse=True)
    passing = [v for v in ranked if v.passes]
    if passing:
        best = passing[0]
        why = (f"highest {estimator} value ({best.value:.5g}) with its 95% CI lower bound ({best.ci_low:.5g}) "
               f"above the logging policy's value ({logging_value:.5g})")
        if guardrails:
            why += f", within every guardrail ({', '.join(f'{g.reward} -{g.margin:.0%}' for g in guardrails)})"
        return ShipDecision(best.policy, why, verdicts)
    if not ranked:
        return ShipDecision(LOGGING, "no candidate policy was evaluated", verdicts)
    top = ranked[0]
    why = (f"no candidate passes the ship rule; the best point estimate is {top.policy} ({top.value:.5g}), but "
           f"{top.blocker(estimator, logging_value)}; keep the logging policy")
    return ShipDecision(LOGGING, why, verdicts)
