"""Trajectory OPE checked against the exact value of a small sequential shop.

The shop (a tabular MDP, horizon H): the state is the last W = 2 push flags
(s = 2 * pushed_{t-1} + pushed_{t-2}); actions 0 = no push, 1 = push a,
2 = push b. A push's purchase rate falls with the pushes in the window
(fatigue) and raises the churn probability, and churn ends the trajectory.
Rewards are Bernoulli. The log comes from a non-uniform stochastic policy
that plays no-push often; targets are stochastic and deterministic timing
policies. True values come from backward induction and, independently, from
an exhaustive sum over every action sequence.
"""

from __future__ import annotations

import itertools
from functools import cache

import numpy as np
import pytest

from pushrl.policies.ope import (
    DoublyRobust,
    InverseProbabilityWeighting,
    SelfNormalizedDoublyRobust,
    SelfNormalizedIPS,
)
from pushrl.policies.ope.trajectory import (
    PerDecisionDoublyRobust,
    PerDecisionIS,
    TrajectoryInputs,
    WeightedDoublyRobust,
    WeightedPerDecisionIS,
    trajectory_bootstrap_values,
    trajectory_diagnostics,
    trajectory_intervals,
    trajectory_policy_values,
    user_bootstrap_counts,
)

H, N_STATES, N_ACTIONS, GAMMA = 5, 4, 3, 0.9
POP = np.array([0, 1, 1, 2])  # pushes in the window
P0 = np.array([0.55, 0.15, 0.2, 0.1])
BASE = np.array([0.05, 0.35, 0.25])
R = np.array([[BASE[0]] + [BASE[a] * (1 - 0.4 * POP[s]) for a in (1, 2)] for s in range(N_STATES)])
CHURN = np.array([[0.05] + [0.08 + 0.18 * POP[s]] * 2 for s in range(N_STATES)])
NEXT = np.array([[(int(a > 0) << 1) | (s >> 1) for a in range(N_ACTIONS)] for s in range(N_STATES)])
MU = np.array([[0.40, 0.35, 0.25], [0.50, 0.30, 0.20], [0.55, 0.25, 0.20], [0.70, 0.15, 0.15]])
TARGETS = {
    "aggressive": np.tile([0.1, 0.8, 0.1], (N_STATES, 1)),
    "spaced": np.array([[0.05, 0.9, 0.05]] + [[0.9, 0.05, 0.05]] * 3),
    "never": np.tile([1.0, 0.0, 0.0], (N_STATES, 1)),  # deterministic: zero weights on pushes
}


def backward_induction(pi: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Q_t(s, a) (H, S, A) and V_t(s) (H + 1, S) of policy pi."""
    q, v = np.zeros((H, N_STATES, N_ACTIONS)), np.zeros((H + 1, N_STATES))
    for t in reversed(range(H)):
        q[t] = R + gamma * (1 - CHURN) * v[t + 1][NEXT]
        v[t] = (pi * q[t]).sum(axis=1)
    return q, v


def exhaustive_value(pi: np.ndarray, gamma: float) -> float:
    """Sum over every start state and action sequence of P(sequence) E[discounted return]."""
    total = 0.0
    for s0, seq in itertools.product(range(N_STATES), itertools.product(range(N_ACTIONS), repeat=H)):
        s, prob, alive, ret = s0, P0[s0], 1.0, 0.0
        for t, a in enumerate(seq):
            prob *= pi[s, a]
            ret += gamma**t * alive * R[s, a]
            alive *= 1 - CHURN[s, a]
            s = NEXT[s, a]
        total += prob * ret
    return total


def true_value(pi: np.ndarray, gamma: float = GAMMA) -> float:
    return float(P0 @ backward_induction(pi, gamma)[1][0])


def simulate(n_users: int, seed: int, logging: np.ndarray = MU, noise: str = "bernoulli") -> dict[str, np.ndarray]:
    """A log of n_users trajectories (rows in step-major order).

    noise: "bernoulli" (purchases) or "uniform" (R(s, a) + U(-0.1, 0.1): same means, less noise).
    """
    rng = np.random.default_rng(seed)
    state = rng.choice(N_STATES, size=n_users, p=P0)
    alive = np.ones(n_users, dtype=bool)
    rows: dict[str, list[np.ndarray]] = {k: [] for k in ("user", "step", "state", "action", "reward")}
    for t in range(H):
        users = np.flatnonzero(alive)
        s = state[users]
        action = (rng.random((users.size, 1)) > np.cumsum(logging[s], axis=1)).sum(axis=1)
        action = np.minimum(action, N_ACTIONS - 1)
        u = rng.random(users.size)
        reward = (u < R[s, action]).astype(float) if noise == "bernoulli" else R[s, action] + 0.2 * u - 0.1
        for k, v in zip(rows, (users, np.full(users.size, t), s, action, reward), strict=True):
            rows[k].append(v)
        alive[users[rng.random(users.size) < CHURN[s, action]]] = False
        state[users] = NEXT[s, action]
    return {k: np.concatenate(v) for k, v in rows.items()}


def make_inputs(
    log: dict[str, np.ndarray], pi: np.ndarray, *, q: str = "true", pscore: np.ndarray = MU, gamma: float = GAMMA
) -> TrajectoryInputs:
    s, a, t = log["state"], log["action"], log["step"]
    if q == "true":
        q_tab = backward_induction(pi, gamma)[0]
        q_hat, v_hat = q_tab[t, s, a], (pi[s] * q_tab[t, s]).sum(axis=1)
    elif q == "wrong":  # a fixed model, off by a state-dependent amount
        q_tab = np.clip(backward_induction(pi, gamma)[0] + 0.3 - 0.1 * POP[None, :, None], 0, None)
        q_hat, v_hat = q_tab[t, s, a], (pi[s] * q_tab[t, s]).sum(axis=1)
    else:
        q_hat = v_hat = np.zeros(s.size)
    return TrajectoryInputs(
        user=log["user"], step=t, pscore=pscore[s, a], evaluation_pscore=pi[s, a],
        reward=log["reward"], q_hat_logged=q_hat, v_hat=v_hat,
    )


PDIS, WPDIS = PerDecisionIS(gamma=GAMMA), WeightedPerDecisionIS(gamma=GAMMA)
PDDR, WDR = PerDecisionDoublyRobust(gamma=GAMMA), WeightedDoublyRobust(gamma=GAMMA)
ALL = {"pdis": PDIS, "wpdis": WPDIS, "pddr": PDDR, "wdr": WDR}
N_LOGS, N_USERS = 300, 200
UNIFORM = np.full((N_STATES, N_ACTIONS), 1 / N_ACTIONS)


@cache
def replicated(target: str, q: str, pscore: str = "true", noise: str = "bernoulli") -> dict[str, np.ndarray]:
    """(N_LOGS,) estimates of every estimator over independent logs."""
    pi, mu = TARGETS[target], MU if pscore == "true" else UNIFORM
    out: dict[str, list[float]] = {name: [] for name in ALL}
    for seed in range(N_LOGS):
        log = simulate(N_USERS, seed, noise=noise)
        values = trajectory_policy_values(ALL, make_inputs(log, pi, q=q, pscore=mu))
        for name, value in values.items():
            out[name].append(value)
    return {name: np.array(v) for name, v in out.items()}


def z_score(estimates: np.ndarray, truth: float) -> float:
    return float((estimates.mean() - truth) / (estimates.std(ddof=1) / np.sqrt(estimates.size)))


# ------------------------------------------------------------ the reference
@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("gamma", [1.0, GAMMA])
def test_backward_induction_matches_exhaustive_sum(target: str, gamma: float) -> None:
    assert true_value(TARGETS[target], gamma) == pytest.approx(exhaustive_value(TARGETS[target], gamma), rel=1e-12)


def test_targets_differ_so_the_checks_have_power() -> None:
    values = sorted(true_value(pi) for pi in TARGETS.values())
    assert min(np.diff(values)) > 0.05


# ------------------------------------------------------------ unbiasedness
@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize("q", ["true", "wrong"])
def test_pdis_and_dr_are_unbiased(target: str, q: str) -> None:
    est, truth = replicated(target, q), true_value(TARGETS[target])
    for name in ("pdis", "pddr"):
        assert abs(z_score(est[name], truth)) < 3.5, (name, est[name].mean(), truth)


@pytest.mark.parametrize("target", ["aggressive", "spaced"])
def test_weighted_estimators_are_nearly_unbiased(target: str) -> None:
    """Self-normalised: bias O(1/N); with 200 users it is within a few standard errors."""
    est, truth = replicated(target, "wrong"), true_value(TARGETS[target])
    for name in ("wpdis", "wdr"):
        se = est[name].std(ddof=1) / np.sqrt(N_LOGS)
        assert abs(est[name].mean() - truth) < 4 * se + 0.005, (name, est[name].mean(), truth)


@pytest.mark.parametrize("target", ["aggressive", "spaced"])
def test_dr_with_a_good_model_has_lower_variance(target: str) -> None:
    """DR removes the variance the weights carry through the expected return, not the reward
    noise: a large cut with low-noise rewards, still a cut with Bernoulli purchases."""
    low_noise, purchases = replicated(target, "true", noise="uniform"), replicated(target, "true")
    truth = true_value(TARGETS[target])
    assert abs(z_score(low_noise["pddr"], truth)) < 3.5
    assert low_noise["pddr"].var() < 0.3 * low_noise["pdis"].var()
    assert low_noise["wdr"].var() < 0.7 * low_noise["wpdis"].var()
    assert purchases["pddr"].var() < 0.95 * purchases["pdis"].var()


@pytest.mark.parametrize("target", ["aggressive", "spaced"])
def test_double_robustness_under_wrong_propensities(target: str) -> None:
    """Uniform propensities in place of the true ones: PDIS is biased, DR with the true Q is not,
    and DR with a wrong Q too is biased (so the unbiasedness checks can fail)."""
    truth = true_value(TARGETS[target])
    good_q, bad_q = replicated(target, "true", "uniform"), replicated(target, "wrong", "uniform")
    assert abs(z_score(good_q["pdis"], truth)) > 6
    assert abs(z_score(good_q["pddr"], truth)) < 3.5
    assert abs(z_score(bad_q["pddr"], truth)) > 6


# ------------------------------------------------------------ equalities
def one_step_log(seed: int = 3, n: int = 500) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    s = rng.choice(N_STATES, size=n, p=P0)
    a = np.minimum((rng.random((n, 1)) > np.cumsum(MU[s], axis=1)).sum(axis=1), N_ACTIONS - 1)
    return {"state": s, "action": a, "reward": (rng.random(n) < R[s, a]).astype(float)}


@pytest.mark.parametrize("clip", [None, 2.0])
def test_one_step_gamma_one_equals_the_bandit_estimators(clip: float | None) -> None:
    log, pi = one_step_log(), TARGETS["aggressive"]
    s, a, n = log["state"], log["action"], log["state"].size
    q_tab = np.random.default_rng(0).random((N_STATES, N_ACTIONS))
    inputs = TrajectoryInputs.from_action_dist(
        user=np.arange(n)[::-1], step=np.zeros(n, dtype=int), action=a, pscore=MU[s, a],
        reward=log["reward"], action_dist=pi[s], estimated_rewards=q_tab[s],
    )
    bandit = dict(
        action_dist=pi[s][:, :, None], action=a, pscore=MU[s, a], reward=log["reward"],
        estimated_rewards_by_reg_model=q_tab[s][:, :, None],
    )
    assert PerDecisionIS(clip=clip).estimate_policy_value(inputs) == pytest.approx(
        InverseProbabilityWeighting(clip=clip).estimate_policy_value(**bandit), rel=1e-12
    )
    assert PerDecisionDoublyRobust(clip=clip).estimate_policy_value(inputs) == pytest.approx(
        DoublyRobust(clip=clip).estimate_policy_value(**bandit), rel=1e-12
    )
    if clip is None:
        assert WeightedPerDecisionIS().estimate_policy_value(inputs) == pytest.approx(
            SelfNormalizedIPS().estimate_policy_value(**bandit), rel=1e-12
        )
        assert WeightedDoublyRobust().estimate_policy_value(inputs) == pytest.approx(
            SelfNormalizedDoublyRobust().estimate_policy_value(**bandit), rel=1e-12
        )


def discounted_returns(log: dict[str, np.ndarray], gamma: float) -> np.ndarray:
    return np.bincount(log["user"], weights=gamma ** log["step"] * log["reward"])


def test_on_policy_pdis_is_the_mean_discounted_return() -> None:
    log = simulate(300, seed=7)
    inputs = make_inputs(log, MU)
    values = trajectory_policy_values(ALL, inputs)
    expected = discounted_returns(log, GAMMA).mean()
    for name in ("pdis", "wpdis"):
        assert values[name] == pytest.approx(expected, rel=1e-12)
    diag = trajectory_diagnostics(inputs)
    assert diag.effective_sample_size == pytest.approx(300) and diag.max_weight == pytest.approx(1.0)


def test_dr_with_a_zero_model_is_pdis() -> None:
    log = simulate(300, seed=8)
    values = trajectory_policy_values(ALL, make_inputs(log, TARGETS["spaced"], q="zero"))
    assert values["pddr"] == pytest.approx(values["pdis"], rel=1e-12)
    assert values["wdr"] == pytest.approx(values["wpdis"], rel=1e-12)


def brute_force(inputs: TrajectoryInputs, gamma: float, clip: float | None) -> dict[str, float]:
    """A loop over users and steps, written straight from the module docstring's formulas."""
    users: dict[object, list[int]] = {}
    for i in np.argsort(inputs.step, kind="stable"):
        users.setdefault(inputs.user[i], []).append(int(i))
    horizon = max(len(v) for v in users.values())
    n = len(users)
    pdis = pddr = 0.0
    num = np.zeros(horizon)
    num_dr = np.zeros(horizon)
    base = np.zeros(horizon)
    den = np.zeros(horizon)
    den_prev = np.zeros(horizon)
    for rows in users.values():
        rho_raw, prev = 1.0, 1.0
        for t in range(horizon):
            if t < len(rows):
                i = rows[t]
                rho_raw *= inputs.evaluation_pscore[i] / inputs.pscore[i]
                rho = rho_raw if clip is None else min(rho_raw, clip)
                g, r, qh, vh = gamma**t, inputs.reward[i], inputs.q_hat_logged[i], inputs.v_hat[i]
                pdis += g * rho * r / n
                pddr += g * (rho * (r - qh) + prev * vh) / n
                num[t] += g * rho * r
                num_dr[t] += g * rho * (r - qh)
                base[t] += g * prev * vh
            else:
                rho = prev  # absorbed: weight frozen, reward 0
            den[t] += rho
            den_prev[t] += prev
            prev = rho
    ok = den > 0
    wpdis = float(np.sum(num[ok] / den[ok]))
    wdr = float(np.sum(num_dr[ok] / den[ok]) + np.sum(base[den_prev > 0] / den_prev[den_prev > 0]))
    return {"pdis": pdis, "wpdis": wpdis, "pddr": pddr, "wdr": wdr}


@pytest.mark.parametrize("clip", [None, 3.0])
@pytest.mark.parametrize("gamma", [1.0, 0.7])
def test_matches_a_loop_over_users_in_shuffled_row_order(clip: float | None, gamma: float) -> None:
    log = simulate(60, seed=11)
    perm = np.random.default_rng(1).permutation(log["user"].size)
    shuffled = {k: v[perm] for k, v in log.items()}
    shuffled["user"] = np.array([f"u{u:03d}" for u in shuffled["user"]])  # string labels
    inputs = make_inputs(shuffled, TARGETS["aggressive"], q="wrong", gamma=gamma)
    estimators = {c.name: c(gamma=gamma, clip=clip) for c in (PerDecisionIS, WeightedPerDecisionIS,
                                                              PerDecisionDoublyRobust, WeightedDoublyRobust)}
    got = trajectory_policy_values(estimators, inputs)
    expected = brute_force(inputs, gamma, clip)
    for name in expected:
        assert got[name] == pytest.approx(expected[name], rel=1e-10, abs=1e-12), name


def test_float_timestamps_order_within_users() -> None:
    log = simulate(80, seed=12)
    inputs = make_inputs(log, TARGETS["spaced"])
    stamps = log["step"] * 3600.0 + np.random.default_rng(2).random(log["step"].size) * 100 + 1e9
    timed = TrajectoryInputs(
        user=inputs.user, step=stamps, pscore=inputs.pscore, evaluation_pscore=inputs.evaluation_pscore,
        reward=inputs.reward, q_hat_logged=inputs.q_hat_logged, v_hat=inputs.v_hat,
    )
    assert trajectory_policy_values(ALL, timed) == pytest.approx(trajectory_policy_values(ALL, inputs))


# ------------------------------------------------------------ bootstrap
def test_bootstrap_resamples_users_and_recomputes() -> None:
    log = simulate(40, seed=13)
    inputs = make_inputs(log, TARGETS["aggressive"], q="wrong")
    boot = trajectory_bootstrap_values(ALL, inputs, n_bootstrap=5, seed=99)
    counts = user_bootstrap_counts(40, 5, np.random.SeedSequence(99).spawn(1)[0])
    assert counts.sum(axis=1) == pytest.approx(np.full(5, 40))
    for b in range(5):
        copies = counts[b].astype(int)[log["user"]]  # rows of user u repeated copies[u] times
        rows = np.repeat(np.arange(log["user"].size), copies)
        copy_id = np.concatenate([np.arange(c) for c in copies])
        resampled = {k: v[rows] for k, v in log.items()}
        resampled["user"] = resampled["user"] * 100 + copy_id
        values = trajectory_policy_values(ALL, make_inputs(resampled, TARGETS["aggressive"], q="wrong"))
        for name in ALL:
            assert boot[name][b] == pytest.approx(values[name], rel=1e-10)


def test_intervals_are_seeded_and_bracket_the_estimate() -> None:
    inputs = make_inputs(simulate(200, seed=14), TARGETS["spaced"])
    a = trajectory_intervals(ALL, inputs, n_bootstrap=300, seed=5)
    assert a == trajectory_intervals(ALL, inputs, n_bootstrap=300, seed=5)
    assert a != trajectory_intervals(ALL, inputs, n_bootstrap=300, seed=6)
    for name, interval in a.items():
        assert interval.ci_low < interval.value < interval.ci_high, name
    assert PDDR.estimate_interval(inputs, n_bootstrap=300, seed=5) == a["pddr"]
    assert a["pddr"].width < a["pdis"].width


def coverage(n_reps: int, target: str = "spaced", n_users: int = 1000) -> dict[str, float]:
    """Share of replications whose 95% user-bootstrap interval covers the true value.

    Measured over 1000 replications: pdis 0.931, wpdis 0.932, pddr 0.946, wdr 0.946 (ESS ~ 67 of
    1000 users). With 200 users, or the "aggressive" target (heavier weight tails), PDIS's
    percentile interval under-covers (0.87-0.89): a known small-ESS limit, not checked here.
    """
    truth, pi = true_value(TARGETS[target]), TARGETS[target]
    hits = dict.fromkeys(ALL, 0)
    for rep in range(n_reps):
        inputs = make_inputs(simulate(n_users, 10_000 + rep), pi, q="wrong")
        for name, iv in trajectory_intervals(ALL, inputs, n_bootstrap=400, seed=rep).items():
            hits[name] += iv.ci_low <= truth <= iv.ci_high
    return {name: h / n_reps for name, h in hits.items()}


def test_user_bootstrap_covers_the_truth_about_95_percent() -> None:
    """200 replications (about 3 s, so in the default run); binomial sd of a rate ~ 0.016."""
    for name, rate in coverage(200).items():
        assert 0.90 <= rate <= 0.99, (name, rate)


# ------------------------------------------------------------ diagnostics and errors
def test_diagnostics_of_final_trajectory_weights() -> None:
    log = simulate(150, seed=15)
    inputs = make_inputs(log, TARGETS["never"])
    diag = trajectory_diagnostics(inputs)
    rho, _ = inputs.cumulative_weights()
    final = rho[np.cumsum(inputs.lengths) - 1]
    assert diag.effective_sample_size == pytest.approx(final.sum() ** 2 / (final**2).sum())
    assert diag.max_weight == pytest.approx(final.max())
    assert diag.zero_weight_fraction == pytest.approx(np.mean(final == 0)) and diag.zero_weight_fraction > 0.5
    # expected final weight is 1 with true propensities: brute-force check of one user's product
    u0 = np.flatnonzero(log["user"] == 0)
    assert final[0] == pytest.approx(np.prod(inputs.evaluation_pscore[u0] / inputs.pscore[u0]))


def base_kwargs() -> dict[str, np.ndarray]:
    return dict(
        user=np.array([0, 0, 1, 1, 1]), step=np.array([0, 1, 0, 1, 2]), pscore=np.full(5, 0.5),
        evaluation_pscore=np.full(5, 0.5), reward=np.ones(5),
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pscore": np.array([0.5, 0.5, 0.5, 0.0, 0.5])}, r"pscore\[3\] = 0.0 is outside \(0, 1\]"),
        ({"evaluation_pscore": np.array([0.5, 1.5, 0.5, 0.5, 0.5])}, r"evaluation_pscore\[1\] = 1.5"),
        ({"reward": np.array([1.0, 1.0, np.nan, 1.0, 1.0])}, r"reward\[2\] = nan"),
        ({"step": np.array([0, 1, 0, 1, 1])}, r"step\[3\] and step\[4\] are both 1 for user 1"),
        ({"step": np.array([0, 1, 0, 1, 3])}, r"step\[4\] = 3 follows step 1 for user 1"),
        ({"reward": np.ones(4)}, r"reward has 4 rows, expected 5"),
        ({"q_hat_logged": np.ones(5)}, r"q_hat_logged and v_hat must be given together"),
        ({"step": np.array(["a"] * 5)}, r"step must be an int step index or float timestamp"),
    ],
)
def test_bad_inputs_name_field_and_row(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrajectoryInputs(**{**base_kwargs(), **change})


def test_bad_hyperparameters_and_missing_model() -> None:
    with pytest.raises(ValueError, match=r"PerDecisionIS.gamma must be a number in \[0, 1\]"):
        PerDecisionIS(gamma=1.5)
    with pytest.raises(ValueError, match=r"WeightedDoublyRobust.clip"):
        WeightedDoublyRobust(clip=0.0)
    inputs = TrajectoryInputs(**base_kwargs())
    with pytest.raises(ValueError, match="PerDecisionDoublyRobust needs q_hat_logged and v_hat"):
        PerDecisionDoublyRobust().estimate_policy_value(inputs)
    with pytest.raises(ValueError, match="n_bootstrap must be an int >= 1"):
        PerDecisionIS().estimate_interval(inputs, n_bootstrap=0)
    zero = TrajectoryInputs(**{**base_kwargs(), "evaluation_pscore": np.zeros(5)})
    assert PerDecisionIS().estimate_policy_value(zero) == 0.0
    with pytest.raises(ValueError, match="wpdis: self-normalised estimate undefined"):
        WeightedPerDecisionIS().estimate_policy_value(zero)


def test_unsorted_rows_give_the_same_answer() -> None:
    kwargs = base_kwargs()
    kwargs["evaluation_pscore"] = np.array([0.2, 0.9, 0.4, 0.6, 0.3])
    kwargs["reward"] = np.array([1.0, 0.0, 2.0, 1.0, 3.0])
    perm = np.array([4, 2, 0, 3, 1])
    shuffled = TrajectoryInputs(**{k: v[perm] for k, v in kwargs.items()})
    sorted_values = trajectory_policy_values({"pdis": PDIS, "wpdis": WPDIS}, TrajectoryInputs(**kwargs))
    assert trajectory_policy_values({"pdis": PDIS, "wpdis": WPDIS}, shuffled) == pytest.approx(sorted_values)
    # by hand: user 0 weights 0.4, 0.4*1.8; user 1 weights 0.8, 0.8*1.2, 0.8*1.2*0.6
    by_hand = (0.4 * 1 + 0 + 0.8 * 2 + GAMMA * 0.96 * 1 + GAMMA**2 * 0.576 * 3) / 2
    assert sorted_values["pdis"] == pytest.approx(by_hand)
