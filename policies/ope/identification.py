"""Is a policy's value identified by the log's propensities (the IPS family)?

Not when logging was deterministic (the log never shows what another action would have done), nor when
the candidate puts more than MAX_LOW_MASS of its mass where the estimated logging probability is below
LOW_PROPENSITY (no support). Model-based values (DM, the simulator) remain, labelled model-only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pushrl.envs.data.regime import LoggingRegime

LOW_PROPENSITY = 0.01
MAX_LOW_MASS = 0.05
UNIDENTIFIED_HELP = ("What to do: read DM and the simulator's value (both rest on a reward model, so treat them "
                     "as model-based guesses), or collect exploratory data first: serve with exploration (an "
                     "epsilon or softmax artifact, or shadow mode beside the current policy) and evaluate again.")


@dataclass(frozen=True)
class Identification:
    """Whether IPS-family estimates of one policy are identified, and why not."""

    identified: bool
    why: str = ""


def identification(regime: LoggingRegime, dist: np.ndarray, logging_probabilities: np.ndarray | None = None
                   ) -> Identification:
    """Identification of a policy with action distribution `dist` (n, A, P) on the log's rows.

    regime: the log's `classify_regime`; logging_probabilities: (n, A) estimated logging probabilities of every
    action on the same rows (from `data.propensity=estimate`), or None when the propensities were logged.
    """
    if regime.regime == "deterministic":
        return Identification(False, f"IPS-family estimates are not identified: logging was deterministic "
                                     f"({regime.evidence}), so the log never shows what other actions would have "
                                     "done. " + UNIDENTIFIED_HELP)
    if logging_probabilities is not None:
        per_action = dist.sum(axis=2) / dist.shape[2]
        mass = float((per_action * (logging_probabilities < LOW_PROPENSITY)).sum(axis=1).mean())
        if mass > MAX_LOW_MASS:
            return Identification(False, f"IPS-family estimates are not identified: the candidate puts {mass:.1%} of "
                                         f"its mass on actions whose estimated logging probability is below "
                                         f"{LOW_PROPENSITY}. " + UNIDENTIFIED_HELP)
    return Identification(True)
