"""IPS and DR are unbiased with exact propensities: checked on a bandit whose truth we know.

The bandit: 5 context types, 4 actions, 2 positions, Bernoulli rewards with a
known click rate q(x, a, k). Two logging policies with exact propensities
(uniform, and a softmax of its own scores) and one softmax evaluation policy.
Over 200 seeds of 400 rows, the mean IPS and DR estimates must lie within 3
standard errors of the mean (sd over seeds / sqrt(200)) of the true value. DR
uses a deliberately wrong reward model (fixed, not fitted on the data), so it
stays unbiased; DM with that model must be detectably biased, which shows the
check has the power to fail.
"""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.policies.ope import DirectMethod, DoublyRobust, InverseProbabilityWeighting

N_CONTEXTS, N_ACTIONS, LEN_LIST = 5, 4, 2
N_ROWS, N_SEEDS, N_SE = 400, 200, 3.0

_world = np.random.default_rng(12345)
CONTEXT_P = _world.dirichlet(np.full(N_CONTEXTS, 5.0))
Q = 1 / (1 + np.exp(-_world.normal(-1.0, 1.0, (N_CONTEXTS, N_ACTIONS, LEN_LIST))))  # q(x, a, k)
Q_HAT = np.clip(
    Q + 0.15 + _world.normal(0, 0.05, Q.shape), 0, 1
)  # biased model, independent of data


def softmax(scores: np.ndarray) -> np.ndarray:
    z = np.exp(scores - scores.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


PI_E = softmax(2.0 * _world.normal(size=(N_CONTEXTS, N_ACTIONS, LEN_LIST)))  # (x, a, k)
LOGGING = {
    "uniform": np.full((N_CONTEXTS, N_ACTIONS, LEN_LIST), 1 / N_ACTIONS),
    "softmax": softmax(1.0 * _world.normal(size=(N_CONTEXTS, N_ACTIONS, LEN_LIST))),
}
# positions are drawn uniformly, so the value averages over them as the estimators do
TRUE_VALUE = float(np.einsum("x,xak,xak->", CONTEXT_P, PI_E, Q) / LEN_LIST)


def simulate(logging: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.choice(N_CONTEXTS, size=N_ROWS, p=CONTEXT_P)
    k = rng.integers(0, LEN_LIST, N_ROWS)
    probs = logging[x, :, k]  # (n, A)
    action = (rng.random((N_ROWS, 1)) > np.cumsum(probs, axis=1)).sum(axis=1)
    action = np.minimum(action, N_ACTIONS - 1)
    reward = (rng.random(N_ROWS) < Q[x, action, k]).astype(float)
    return {
        "reward": reward,
        "action": action,
        "position": k,
        "pscore": probs[np.arange(N_ROWS), action],
        "action_dist": PI_E[x],
        "estimated_rewards_by_reg_model": Q_HAT[x],
    }


def estimates_over_seeds(logging: str) -> dict[str, np.ndarray]:
    estimators = {"ips": InverseProbabilityWeighting(), "dr": DoublyRobust(), "dm": DirectMethod()}
    out = {name: np.empty(N_SEEDS) for name in estimators}
    for seed in range(N_SEEDS):
        inputs = simulate(LOGGING[logging], seed)
        for name, estimator in estimators.items():
            out[name][seed] = estimator.estimate_policy_value(**inputs)
    return out


@pytest.fixture(scope="module", params=sorted(LOGGING))
def estimates(request: pytest.FixtureRequest) -> dict[str, np.ndarray]:
    return estimates_over_seeds(request.param)


@pytest.mark.parametrize("name", ["ips", "dr"])
def test_mean_estimate_is_within_three_standard_errors(
    estimates: dict[str, np.ndarray], name: str
) -> None:
    values = estimates[name]
    standard_error = values.std(ddof=1) / np.sqrt(values.size)
    assert abs(values.mean() - TRUE_VALUE) <= N_SE * standard_error, (
        values.mean(),
        TRUE_VALUE,
        standard_error,
    )


def test_biased_model_makes_dm_fail_the_same_check(estimates: dict[str, np.ndarray]) -> None:
    values = estimates["dm"]
    standard_error = values.std(ddof=1) / np.sqrt(values.size)
    assert abs(values.mean() - TRUE_VALUE) > 10 * N_SE * standard_error


def test_dr_has_lower_variance_than_ips(estimates: dict[str, np.ndarray]) -> None:
    assert estimates["dr"].var() < estimates["ips"].var()
