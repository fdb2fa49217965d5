"""What the simulated shop assumes about timing: fatigue and churn by recent pushes, and where they come from.

For r = 0..window pushes in the fatigue window, over the pool's users u and the pushable promotions a:

    fatigue_multiplier(r)        = mean_{u,a} E[objective | push a to u after r pushes]
                                   / mean_{u,a} E[objective | push a to u after 0 pushes]
    unsubscribe_probability(r)   = mean_u P(unsubscribe | push, r)     (a learned head: also averaged over a)

(gross of push costs, at display slot 0). `source` is "learned" when both come from the log (the response
model reacts to recent pushes, and an unsubscribe head drives churn), else "assumed" (the config constants
`sequential.fatigue_factor`, `sequential.churn_logit`, `sequential.churn_slope`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pushrl.envs.sim.push_env import PushDynamics

LEARNED, ASSUMED = "learned", "assumed"


@dataclass(frozen=True)
class DynamicsSummary:
    """Fatigue and churn of a simulated shop by recent pushes r = 0..window, and their sources."""

    fatigue_source: str
    churn_source: str
    fatigue_multiplier: dict[int, float]
    unsubscribe_probability: dict[int, float]

    @property
    def source(self) -> str:
        """"learned" when fatigue and churn both come from the log, else "assumed"."""
        return LEARNED if self.fatigue_source == self.churn_source == LEARNED else ASSUMED

    @property
    def assumed_parts(self) -> tuple[str, ...]:
        """Which of ("fatigue", "churn") are config assumptions."""
        return tuple(p for p, s in (("fatigue", self.fatigue_source), ("churn", self.churn_source)) if s == ASSUMED)

    def metrics(self) -> dict[str, object]:
        """`<key>/dynamics/...` metrics: source, fatigue_source, churn_source, fatigue_multiplier/<r>,
        unsubscribe_probability/<r>."""
        return {"source": self.source, "fatigue_source": self.fatigue_source, "churn_source": self.churn_source,
                "fatigue_multiplier": {str(r): v for r, v in self.fatigue_multiplier.items()},
                "unsubscribe_probability": {str(r): v for r, v in self.unsubscribe_probability.items()}}


def dynamics_sources(dynamics: PushDynamics) -> dict[str, str]:
    """{"fatigue": ..., "churn": ...}, each LEARNED or ASSUMED."""
    return dict(dynamics.dynamics_source)


def summarise_dynamics(dynamics: PushDynamics, contexts: np.ndarray, window: int | None = None) -> DynamicsSummary:
    """The fatigue multipliers and unsubscribe probabilities for r = 0..window (default: the env's window)."""
    window = dynamics.config.fatigue_window if window is None else int(window)
    contexts = np.asarray(contexts, dtype=np.float64)
    n = len(contexts)
    if n == 0:
        raise ValueError("summarise_dynamics needs at least one context")
    gross, unsub = {}, {}
    for r in range(window + 1):
        recent = np.full(n, float(r))
        value = dynamics.expected_values(contexts, recent)[:, dynamics.promotion_index]
        gross[r] = float((value * dynamics.fatigue_scale(recent)[:, None]).mean())
        unsub[r] = float(np.mean(dynamics.unsubscribe_probability(recent, contexts)))
    base = gross[0]
    multiplier = {r: (g / base if base > 0 else float("nan")) for r, g in gross.items()}
    sources = dynamics_sources(dynamics)
    return DynamicsSummary(sources["fatigue"], sources["churn"], multiplier, unsub)
