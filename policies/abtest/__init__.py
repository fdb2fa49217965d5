"""Online A/B testing of a candidate policy against control: plan it, simulate it, analyse it.

Planning (`plan`): users per arm, days needed, minimum detectable effect and a
power curve for the two-proportion z-test (clicks, conversions) and Welch's
t-test (spend, profit). Simulation (`simulate`): outcome samplers, the
fixed-horizon analysis with CIs, and thousands of experiments at once for the
false-positive rate, power and, with the group-sequential design of
`sequential` (Lan–DeMets O'Brien–Fleming-type spending), the sample size at stop.
"""

from pushrl.policies.abtest.plan import (
    PlanInputs,
    TestPlan,
    mean_power,
    plan_mean_test,
    plan_proportion_test,
    proportion_power,
)
from pushrl.policies.abtest.sequential import (
    GroupSequentialDesign,
    boundary_crossing_probabilities,
    obrien_fleming_spending,
)
from pushrl.policies.abtest.simulate import (
    ABResult,
    ArmStats,
    BatchedSampler,
    BernoulliSampler,
    NormalSampler,
    OutcomeSampler,
    SequentialResult,
    SimulationResult,
    ZeroInflatedLogNormalSampler,
    analyze,
    analyze_sequential,
    draw_stats,
    simulate_many,
    welch_test,
    z_test,
)

__all__ = [
    "ABResult",
    "ArmStats",
    "BatchedSampler",
    "BernoulliSampler",
    "GroupSequentialDesign",
    "NormalSampler",
    "OutcomeSampler",
    "PlanInputs",
    "SequentialResult",
    "SimulationResult",
    "TestPlan",
    "ZeroInflatedLogNormalSampler",
    "analyze",
    "analyze_sequential",
    "boundary_crossing_probabilities",
    "draw_stats",
    "mean_power",
    "obrien_fleming_spending",
    "plan_mean_test",
    "plan_proportion_test",
    "proportion_power",
    "simulate_many",
    "welch_test",
    "z_test",
]
