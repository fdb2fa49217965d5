"""Off-policy estimators of a policy's value from logged bandit feedback.

Each estimator is a frozen dataclass whose fields are its hyperparameters,
checked in `__post_init__`. One interface (the Open Bandit Pipeline's):

    estimate_round_rewards(...) -> (n,)   per-row estimates
    estimate_policy_value(...)  -> float  their mean
    estimate_interval(...)      -> Interval(value, ci_low, ci_high)  Poisson bootstrap

All take keyword-only arrays (n = n_rounds, A = n_actions, L = len_list):

    action_dist                     (n, A, L)  pi_e(a | x_i, k), evaluation policy
    reward                          (n,)       r_i
    action                          (n,) int   a_i
    pscore                          (n,)       pi_b(a_i | x_i, k_i), logging propensity
    position                        (n,) int   k_i, 0-based (optional when L == 1)
    estimated_rewards_by_reg_model  (n, A, L)  q_hat(x_i, a, k)   (DM and the DR family)
    n_actions                       int        the log's action count (optional check)

Multiple positions follow obp exactly: the importance weight of row i is
w_i = pi_e(a_i | x_i, k_i) / pscore_i (the evaluation probability of the logged
action at the logged position), the model term is
q_hat(x_i, pi_e) = sum_a pi_e(a | x_i, k_i) q_hat(x_i, a, k_i), and the value is
the mean over rows. With r'_i = r_i - q_hat(x_i, a_i, k_i):

    dm         mean q_hat(x_i, pi_e)
    ips        mean min(w_i, clip) r_i
    snips      sum w_i r_i / sum w_i
    dr         mean q_hat(x_i, pi_e) + min(w_i, clip) r'_i
    sndr       mean q_hat(x_i, pi_e) + sum w_i r'_i / sum w_i
    switch-dr  mean q_hat(x_i, pi_e) + 1[w_i <= threshold] w_i r'_i
    dr-os      mean q_hat(x_i, pi_e) + lambda_ w_i / (w_i^2 + lambda_) w_i r'_i

Every estimator also exposes `row_terms(inputs) -> RowTerms`, the per-row
sums that the bootstrap, the streaming accumulator and estimator selection
work on.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pushrl.policies.ope.bootstrap import Interval, RowTerms, Seed, estimate_intervals
from pushrl.policies.ope.validation import OPEInputs


def _check_hyperparameter(
    owner: object, field: str, value: object, *, minimum: float, inclusive: bool, allow_none: bool
) -> None:
    bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
    expected = f"{'None or ' if allow_none else ''}a number {bound} (inf allowed)"
    if value is None and allow_none:
        return
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    ok = ok and not math.isnan(value) and (value >= minimum if inclusive else value > minimum)
    if not ok:
        raise ValueError(f"{type(owner).__name__}.{field} must be {expected}, got {value!r}")


@dataclass(frozen=True)
class BaseEstimator(ABC):
    """Shared interface; subclasses define `row_terms` and the arrays they need."""

    name: ClassVar[str]
    needs: ClassVar[tuple[str, ...]]

    @abstractmethod
    def _terms(self, inputs: OPEInputs) -> RowTerms: ...

    def row_terms(self, inputs: OPEInputs) -> RowTerms:
        """Per-row terms of this estimator on validated inputs (see `bootstrap.RowTerms`)."""
        inputs.require(type(self).__name__, *self.needs)
        return self._terms(inputs)

    def estimate_round_rewards(
        self,
        *,
        action_dist: np.ndarray,
        reward: np.ndarray | None = None,
        action: np.ndarray | None = None,
        pscore: np.ndarray | None = None,
        position: np.ndarray | None = None,
        estimated_rewards_by_reg_model: np.ndarray | None = None,
        n_actions: int | None = None,
    ) -> np.ndarray:
        """(n,) per-row estimates; their mean is the policy value."""
        inputs = OPEInputs(
            action_dist, reward, action, pscore, position, estimated_rewards_by_reg_model, n_actions
        )
        return self.row_terms(inputs).round_rewards()

    def estimate_policy_value(
        self,
        *,
        action_dist: np.ndarray,
        reward: np.ndarray | None = None,
        action: np.ndarray | None = None,
        pscore: np.ndarray | None = None,
        position: np.ndarray | None = None,
        estimated_rewards_by_reg_model: np.ndarray | None = None,
        n_actions: int | None = None,
    ) -> float:
        """The estimated value of the evaluation policy (mean over logged rows)."""
        inputs = OPEInputs(
            action_dist, reward, action, pscore, position, estimated_rewards_by_reg_model, n_actions
        )
        return self.row_terms(inputs).value()

    def estimate_interval(
        self,
        *,
        action_dist: np.ndarray,
        reward: np.ndarray | None = None,
        action: np.ndarray | None = None,
        pscore: np.ndarray | None = None,
        position: np.ndarray | None = None,
        estimated_rewards_by_reg_model: np.ndarray | None = None,
        n_actions: int | None = None,
        n_bootstrap: int = 1000,
        alpha: float = 0.05,
        seed: Seed = None,
    ) -> Interval:
        """Point estimate and (1 - alpha) Poisson-bootstrap percentile interval.

        `n_bootstrap` resamples, seeded by `seed` (int or SeedSequence; None
        draws fresh entropy). Same seed, same inputs => identical interval.
        """
        inputs = OPEInputs(
            action_dist, reward, action, pscore, position, estimated_rewards_by_reg_model, n_actions
        )
        result = estimate_intervals(
            {self.name: self}, inputs, n_bootstrap=n_bootstrap, alpha=alpha, seed=seed
        )
        return result[self.name]


_LOG = ("reward", "action", "pscore")
_MODEL = ("estimated_rewards_by_reg_model",)


@dataclass(frozen=True)
class DirectMethod(BaseEstimator):
    """DM: the reward model's value of the evaluation policy, mean_i sum_a pi_e q_hat."""

    name: ClassVar[str] = "dm"
    needs: ClassVar[tuple[str, ...]] = _MODEL

    def _terms(self, inputs: OPEInputs) -> RowTerms:
        return RowTerms(mean_term=inputs.policy_estimated_reward)


@dataclass(frozen=True)
class InverseProbabilityWeighting(BaseEstimator):
    """IPS: mean_i min(w_i, clip) r_i.

    clip: upper bound on the importance weight (obp's `lambda_`); None means
    no clipping. Clipping trades variance for downward bias.
    """

    clip: float | None = None
    name: ClassVar[str] = "ips"
    needs: ClassVar[tuple[str, ...]] = _LOG

    def __post_init__(self) -> None:
        _check_hyperparameter(
            self, "clip", self.clip, minimum=0.0, inclusive=False, allow_none=True
        )

    def _weights(self, inputs: OPEInputs) -> np.ndarray:
        w = inputs.importance_weight
        return w if self.clip is None else np.minimum(w, self.clip)

    def _terms(self, inputs: OPEInputs) -> RowTerms:
        return RowTerms(mean_term=self._weights(inputs) * inputs.reward)


@dataclass(frozen=True)
class SelfNormalizedIPS(BaseEstimator):
    """SNIPS: sum_i w_i r_i / sum_i w_i (no clipping, as in obp)."""

    name: ClassVar[str] = "snips"
    needs: ClassVar[tuple[str, ...]] = _LOG

    def _terms(self, inputs: OPEInputs) -> RowTerms:
        w = inputs.importance_weight
        return RowTerms(ratio_numerator=w * inputs.reward, ratio_denominator=w)


def _residual(inputs: OPEInputs) -> np.ndarray:
    """(n,) r_i - q_hat(x_i, a_i, k_i)."""
    return inputs.reward - inputs.factual_estimated_reward


@dataclass(frozen=True)
class DoublyRobust(BaseEstimator):
    """DR: mean_i q_hat(x_i, pi_e) + min(w_i, clip) (r_i - q_hat(x_i, a_i, k_i)).

    clip: upper bound on the importance weight (obp's `lambda_`); None means none.
    """

    clip: float | None = None
    name: ClassVar[str] = "dr"
    needs: ClassVar[tuple[str, ...]] = _LOG + _MODEL

    def __post_init__(self) -> None:
        _check_hyperparameter(
            self, "clip", self.clip, minimum=0.0, inclusive=False, allow_none=True
        )

    def _terms(self, inputs: OPEInputs) -> RowTerms:
        w = inputs.importance_weight
        if self.clip is not None:
            w = np.minimum(w, self.clip)
        return RowTerms(mean_term=inputs.policy_estimated_reward + w * _residual(inputs))


@dataclass(frozen=True)
class SelfNormalizedDoublyRobust(BaseEstimator):
    """SNDR: mean_i q_hat(x_i, pi_e) + sum_i w_i r'_i / sum_i w_i (no clipping, as in obp)."""

    name: ClassVar[str] = "sndr"
    needs: ClassVar[tuple[str, ...]] = _LOG + _MODEL

    def _terms(self, inputs: OPEInputs) -> RowTerms:
        w = inputs.importance_weight
        return RowTerms(
            mean_term=inputs.policy_estimated_reward,
            ratio_numerator=w * _residual(inputs),
            ratio_denominator=w,
        )


@dataclass(frozen=True)
class SwitchDoublyRobust(BaseEstimator):
    """Switch-DR: the DR correction only on rows with w_i <= threshold, DM elsewhere.

    threshold: importance-weight cut-off (obp's `lambda_`), >= 0; inf is plain DR.
    """

    threshold: float = math.inf
    name: ClassVar[str] = "switch-dr"
    needs: ClassVar[tuple[str, ...]] = _LOG + _MODEL

    def __post_init__(self) -> None:
        _check_hyperparameter(
            self, "threshold", self.threshold, minimum=0.0, inclusive=True, allow_none=False
        )

    def _terms(self, inputs: OPEInputs) -> RowTerms:
        w = inputs.importance_weight
        correction = np.where(w <= self.threshold, w * _residual(inputs), 0.0)
        return RowTerms(mean_term=inputs.policy_estimated_reward + correction)


@dataclass(frozen=True)
class DoublyRobustWithShrinkage(BaseEstimator):
    """DR-OS (optimistic shrinkage, Su et al. 2020): w_i -> lambda_ w_i / (w_i^2 + lambda_).

    lambda_: shrinkage, >= 0. 0 gives DM, inf gives plain DR. The default 0.0
    is obp's; tune it (e.g. with `selection.select_estimator`).
    """

    lambda_: float = 0.0
    name: ClassVar[str] = "dr-os"
    needs: ClassVar[tuple[str, ...]] = _LOG + _MODEL

    def __post_init__(self) -> None:
        _check_hyperparameter(
            self, "lambda_", self.lambda_, minimum=0.0, inclusive=True, allow_none=False
        )

    def _terms(self, inputs: OPEInputs) -> RowTerms:
        w = inputs.importance_weight
        if self.lambda_ == 0:
            shrunk = np.zeros_like(w)
        elif math.isinf(self.lambda_):
            shrunk = w
        else:
            shrunk = self.lambda_ * w / (w**2 + self.lambda_)
        return RowTerms(mean_term=inputs.policy_estimated_reward + shrunk * _residual(inputs))


#: Registry: short name -> estimator class (default-constructible).
ESTIMATORS: dict[str, type[BaseEstimator]] = {
    cls.name: cls
    for cls in (
        DirectMethod,
        InverseProbabilityWeighting,
        SelfNormalizedIPS,
        DoublyRobust,
        SelfNormalizedDoublyRobust,
        SwitchDoublyRobust,
        DoublyRobustWithShrinkage,
    )
}
