"""The estimator interface: registry, bootstrap intervals, streaming over chunks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pushrl.policies.ope import (
    ESTIMATORS,
    BootstrapAccumulator,
    DoublyRobust,
    DoublyRobustWithShrinkage,
    InverseProbabilityWeighting,
    OPEInputs,
    SwitchDoublyRobust,
    estimate_intervals,
    stream_intervals,
    stream_policy_values,
)
from pushrl.policies.ope.bootstrap import _PoissonCounts

N_ACTIONS, LEN_LIST = 6, 2
EVAL_PROBS = np.array([0.3, 0.25, 0.2, 0.1, 0.1, 0.05])
Q_TRUE = np.linspace(0.2, 0.7, N_ACTIONS)  # context-free Bernoulli click rates


def make_log(n: int, seed: int) -> OPEInputs:
    """Uniform logging over 6 actions in 2 positions; evaluation policy EVAL_PROBS in every slot."""
    rng = np.random.default_rng(seed)
    action = rng.integers(0, N_ACTIONS, n)
    position = rng.integers(0, LEN_LIST, n)
    reward = (rng.random(n) < Q_TRUE[action]).astype(float)
    dist = np.broadcast_to(EVAL_PROBS[None, :, None], (n, N_ACTIONS, LEN_LIST)).copy()
    q_hat = Q_TRUE[None, :, None] + 0.05 + rng.normal(0.0, 0.05, (n, N_ACTIONS, LEN_LIST))
    return OPEInputs(
        action_dist=dist,
        reward=reward,
        action=action,
        pscore=np.full(n, 1.0 / N_ACTIONS),
        position=position,
        estimated_rewards_by_reg_model=q_hat,
    )


TRUE_VALUE = float(EVAL_PROBS @ Q_TRUE)

ALL = {
    **{name: cls() for name, cls in ESTIMATORS.items()},
    "ips-clip": InverseProbabilityWeighting(clip=1.5),
    "dr-clip": DoublyRobust(clip=1.5),
    "switch-dr-1.5": SwitchDoublyRobust(threshold=1.5),
    "dr-os-2": DoublyRobustWithShrinkage(lambda_=2.0),
}


def test_registry_has_exactly_the_seven_estimators() -> None:
    assert set(ESTIMATORS) == {"dm", "ips", "snips", "dr", "sndr", "switch-dr", "dr-os"}
    for name, cls in ESTIMATORS.items():
        assert cls.name == name
        cls()  # default-constructible


@pytest.mark.parametrize("name", sorted(ALL))
def test_round_rewards_average_to_the_policy_value(name: str) -> None:
    inputs = make_log(500, seed=1)
    kwargs = inputs.as_kwargs()
    rounds = ALL[name].estimate_round_rewards(**kwargs)
    assert rounds.shape == (500,)
    assert math.isclose(rounds.mean(), ALL[name].estimate_policy_value(**kwargs), rel_tol=1e-12)


@pytest.mark.parametrize("name", sorted(ALL))
def test_interval_contains_estimate_and_shrinks_with_n(name: str) -> None:
    small = ALL[name].estimate_interval(
        **make_log(500, seed=2).as_kwargs(), n_bootstrap=300, seed=0
    )
    large = ALL[name].estimate_interval(
        **make_log(8000, seed=3).as_kwargs(), n_bootstrap=300, seed=0
    )
    for interval in (small, large):
        assert interval.ci_low <= interval.value <= interval.ci_high
    assert large.width < 0.5 * small.width, (small, large)


@pytest.mark.parametrize("name", sorted(ALL))
def test_same_seed_same_interval(name: str) -> None:
    kwargs = make_log(400, seed=4).as_kwargs()
    first = ALL[name].estimate_interval(**kwargs, n_bootstrap=100, seed=123)
    assert ALL[name].estimate_interval(**kwargs, n_bootstrap=100, seed=123) == first
    assert ALL[name].estimate_interval(**kwargs, n_bootstrap=100, seed=124) != first


def test_all_estimators_share_the_same_resamples() -> None:
    inputs = make_log(3000, seed=5)
    together = estimate_intervals(ALL, inputs, n_bootstrap=200, seed=9)
    for name, estimator in ALL.items():
        alone = estimate_intervals({name: estimator}, inputs, n_bootstrap=200, seed=9)[name]
        assert together[name].value == alone.value
        assert math.isclose(together[name].ci_low, alone.ci_low, rel_tol=1e-12, abs_tol=1e-15)
        assert math.isclose(together[name].ci_high, alone.ci_high, rel_tol=1e-12, abs_tol=1e-15)
    acc = BootstrapAccumulator({"a": ALL["dr"], "b": ALL["dr-os-2"]}, n_bootstrap=50, seed=1)
    acc.update(inputs)
    boot = acc.bootstrap_values()
    assert np.corrcoef(boot["a"], boot["b"])[0, 1] > 0.5  # same resamples => correlated replicates


def test_bootstrap_matches_normal_approximation_on_a_large_sample() -> None:
    inputs = make_log(200_000, seed=6)
    ips = InverseProbabilityWeighting()
    rounds = ips.row_terms(inputs).round_rewards()
    half = 1.959963984540054 * rounds.std(ddof=1) / math.sqrt(rounds.size)
    boot = estimate_intervals({"ips": ips}, inputs, n_bootstrap=1000, seed=0)["ips"]
    assert boot.width == pytest.approx(2 * half, rel=0.1)
    assert abs((boot.ci_low + boot.ci_high) / 2 - rounds.mean()) < 0.1 * half


def test_bootstrap_coverage_is_close_to_nominal_and_to_the_normal_interval() -> None:
    """200 independent logs of 2000 rows: both 95% intervals cover the true value 88-99% of the time."""
    ips = InverseProbabilityWeighting()
    boot_hits, normal_hits, reps = 0, 0, 200
    for seed in range(reps):
        inputs = make_log(2000, seed=1000 + seed)
        interval = estimate_intervals({"ips": ips}, inputs, n_bootstrap=200, seed=seed)["ips"]
        rounds = ips.row_terms(inputs).round_rewards()
        half = 1.959963984540054 * rounds.std(ddof=1) / math.sqrt(rounds.size)
        boot_hits += interval.ci_low <= TRUE_VALUE <= interval.ci_high
        normal_hits += abs(rounds.mean() - TRUE_VALUE) <= half
    assert 0.88 <= boot_hits / reps <= 0.99
    assert abs(boot_hits - normal_hits) / reps <= 0.05


def chunks_of(inputs: OPEInputs, cuts: list[int]) -> list[OPEInputs]:
    edges = [0, *cuts, inputs.n_rounds]
    return [
        OPEInputs(
            action_dist=inputs.action_dist[a:b],
            reward=inputs.reward[a:b],
            action=inputs.action[a:b],
            pscore=inputs.pscore[a:b],
            position=inputs.position[a:b],
            estimated_rewards_by_reg_model=inputs.estimated_rewards_by_reg_model[a:b],
        )
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]


def random_policy_log(n: int, seed: int) -> OPEInputs:
    """Per-row random policies, so every estimator's terms vary from row to row."""
    rng = np.random.default_rng(seed)
    dist = rng.dirichlet(np.ones(N_ACTIONS), size=(n, LEN_LIST)).transpose(0, 2, 1)
    logging = rng.dirichlet(np.full(N_ACTIONS, 2.0), size=n)
    action = np.array([rng.choice(N_ACTIONS, p=p) for p in logging])
    return OPEInputs(
        action_dist=dist,
        reward=rng.normal(size=n) + 2,
        action=action,
        pscore=logging[np.arange(n), action],
        position=rng.integers(0, LEN_LIST, n),
        estimated_rewards_by_reg_model=rng.random((n, N_ACTIONS, LEN_LIST)),
    )


def test_streaming_point_estimates_equal_in_memory() -> None:
    inputs = random_policy_log(5000, seed=7)
    chunks = chunks_of(inputs, [1, 2, 700, 701, 2500, 4999])
    streamed = stream_policy_values(ALL, iter(chunks))
    for name, estimator in ALL.items():
        in_memory = estimator.estimate_policy_value(**inputs.as_kwargs())
        assert math.isclose(streamed[name], in_memory, rel_tol=1e-12), name


def test_streaming_intervals_do_not_depend_on_chunking() -> None:
    inputs = random_policy_log(3000, seed=8)
    in_memory = estimate_intervals(ALL, inputs, n_bootstrap=101, seed=5)  # odd B: spare random bits
    streamed = stream_intervals(
        ALL, chunks_of(inputs, [3, 1000, 1001, 2222]), n_bootstrap=101, seed=5
    )
    for name in ALL:
        for field in ("value", "ci_low", "ci_high"):
            assert math.isclose(
                getattr(streamed[name], field), getattr(in_memory[name], field), rel_tol=1e-9
            )


def test_chunks_must_share_actions_and_positions() -> None:
    acc = BootstrapAccumulator({"ips": InverseProbabilityWeighting()}, n_bootstrap=10, seed=0)
    acc.update(make_log(50, seed=0))
    rng = np.random.default_rng(0)
    other = OPEInputs(
        action_dist=rng.dirichlet(np.ones(3), size=50)[:, :, None],
        reward=np.ones(50),
        action=np.zeros(50, dtype=int),
        pscore=np.full(50, 0.5),
    )
    with pytest.raises(ValueError, match=r"chunk 1 has \(n_actions, len_list\)=\(3, 1\)"):
        acc.update(other)


def test_poisson_counts_have_the_poisson_1_distribution() -> None:
    counts = _PoissonCounts(n_bootstrap=1000, seed=0)
    size = 1000 * 1000
    draws = counts.draw(1000, np.empty(size, dtype=np.intp), np.empty(size)).ravel()
    assert draws.min() == 0 and np.all(draws == np.round(draws))
    for k in range(6):
        p = math.exp(-1) / math.factorial(k)
        assert abs(np.mean(draws == k) - p) < 5 * math.sqrt(p * (1 - p) / size), k
    assert abs(draws.mean() - 1) < 5e-3 and abs(draws.var() - 1) < 1e-2


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"n_bootstrap": -1}, "n_bootstrap"), ({"seed": -4}, "seed")]
)
def test_bootstrap_arguments_are_checked(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BootstrapAccumulator({"ips": InverseProbabilityWeighting()}, **kwargs)
    with pytest.raises(ValueError, match="alpha"):
        InverseProbabilityWeighting().estimate_interval(**make_log(20, 0).as_kwargs(), alpha=1.5)
