"""Offline policy evaluation: trust a policy on the real logs before it ships.

Estimators agree with the Open Bandit Pipeline's on the same inputs; arrays
use its vocabulary (see `validation`). Pure numpy: no torch here.
"""

from pushrl.policies.ope.bootstrap import (
    BootstrapAccumulator,
    Interval,
    RowTerms,
    estimate_intervals,
    stream_intervals,
    stream_policy_values,
)
from pushrl.policies.ope.crossfit import (
    MeanRewardModel,
    cross_fit_estimated_rewards,
    cross_fit_mean_rewards,
    kfold_indices,
)
from pushrl.policies.ope.diagnostics import SupportDiagnostics, support_diagnostics
from pushrl.policies.ope.estimators import (
    ESTIMATORS,
    BaseEstimator,
    DirectMethod,
    DoublyRobust,
    DoublyRobustWithShrinkage,
    InverseProbabilityWeighting,
    SelfNormalizedDoublyRobust,
    SelfNormalizedIPS,
    SwitchDoublyRobust,
)
from pushrl.policies.ope.selection import SelectionResult, select_estimator
from pushrl.policies.ope.trajectory import (
    TRAJECTORY_ESTIMATORS,
    PerDecisionDoublyRobust,
    PerDecisionIS,
    TrajectoryEstimator,
    TrajectoryInputs,
    TrajectoryWeightDiagnostics,
    WeightedDoublyRobust,
    WeightedPerDecisionIS,
    trajectory_bootstrap_values,
    trajectory_diagnostics,
    trajectory_intervals,
    trajectory_policy_values,
    user_bootstrap_counts,
)
from pushrl.policies.ope.validation import SUM_ATOL, OPEInputs, check_action_dist

__all__ = [
    "ESTIMATORS",
    "SUM_ATOL",
    "BaseEstimator",
    "BootstrapAccumulator",
    "DirectMethod",
    "DoublyRobust",
    "DoublyRobustWithShrinkage",
    "Interval",
    "InverseProbabilityWeighting",
    "MeanRewardModel",
    "OPEInputs",
    "RowTerms",
    "SelectionResult",
    "SelfNormalizedDoublyRobust",
    "SelfNormalizedIPS",
    "SupportDiagnostics",
    "SwitchDoublyRobust",
    "check_action_dist",
    "cross_fit_estimated_rewards",
    "cross_fit_mean_rewards",
    "estimate_intervals",
    "kfold_indices",
    "select_estimator",
    "stream_intervals",
    "stream_policy_values",
    "support_diagnostics",
    "TRAJECTORY_ESTIMATORS",
    "PerDecisionDoublyRobust",
    "PerDecisionIS",
    "TrajectoryEstimator",
    "TrajectoryInputs",
    "TrajectoryWeightDiagnostics",
    "WeightedDoublyRobust",
    "WeightedPerDecisionIS",
    "trajectory_bootstrap_values",
    "trajectory_diagnostics",
    "trajectory_intervals",
    "trajectory_policy_values",
    "user_bootstrap_counts",
]
