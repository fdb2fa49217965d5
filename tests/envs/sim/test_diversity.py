"""Diversity metrics against brute-force Python versions, and against the env's own diversity term."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from pushrl.envs.sim import diversity as dv
from pushrl.envs.sim.batched_env import BatchedPushEnv

N_ACTIONS = 9
CATEGORIES = np.array([0, 1, 2, 0, 1, 2, 0, 1, 3])


def random_log(seed: int, k: int, n: int = 12, steps: int = 15) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, N_ACTIONS, size=(n, steps, k))
    a[rng.random(a.shape) < 0.35] = -1
    a[0] = -1  # a user never pushed
    return a if k > 1 else a[:, :, 0]


def pushes(log: np.ndarray) -> list[list[list[int]]]:
    """users -> days -> pushed promotions (plain lists)."""
    a = log if log.ndim == 3 else log[:, :, None]
    return [[[int(x) for x in day if x >= 0] for day in user] for user in a.tolist()]


def brute_coverage(log: np.ndarray) -> float:
    return len({p for user in pushes(log) for day in user for p in day}) / N_ACTIONS


def brute_gini(log: np.ndarray) -> float:
    counts = [0] * N_ACTIONS
    for user in pushes(log):
        for day in user:
            for p in day:
                counts[p] += 1
    mean = sum(counts) / N_ACTIONS
    return sum(abs(x - y) for x in counts for y in counts) / (2 * N_ACTIONS**2 * mean)


def brute_ild(log: np.ndarray, distance) -> float:
    scores = []
    for user in pushes(log):
        for day in user:
            pairs = list(itertools.combinations(day, 2))
            if pairs:
                scores.append(sum(distance(a, b) for a, b in pairs) / len(pairs))
    return sum(scores) / len(scores) if scores else math.nan


def brute_novelty(log: np.ndarray, decay: float) -> float:
    values = []
    for user in pushes(log):
        for t, day in enumerate(user):
            for j, p in enumerate(day):
                c = CATEGORIES[p]
                h = sum(decay ** (t - 1 - s) for s in range(t) for q in user[s] if CATEGORIES[q] == c)
                h += sum(1 for q in day[:j] if CATEGORIES[q] == c)
                values.append(1 / (1 + h))
    return sum(values) / len(values)


def brute_pushes_per_user(log: np.ndarray) -> float:
    users = pushes(log)
    return sum(sum(1 for day in user if day) for user in users) / len(users)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_brute_force(k: int, seed: int) -> None:
    log = random_log(seed, k)
    assert dv.catalogue_coverage(log, N_ACTIONS) == pytest.approx(brute_coverage(log))
    assert dv.exposure_gini(log, N_ACTIONS) == pytest.approx(brute_gini(log))
    assert dv.pushes_per_user(log) == pytest.approx(brute_pushes_per_user(log))
    assert dv.category_novelty(log, CATEGORIES, 0.7) == pytest.approx(brute_novelty(log, 0.7))
    if k > 1:
        same = dv.intra_list_diversity(log, categories=CATEGORIES)
        assert same == pytest.approx(brute_ild(log, lambda a, b: float(CATEGORIES[a] != CATEGORIES[b])))
        feats = np.random.default_rng(seed).normal(size=(N_ACTIONS, 4))

        def cosine(a: int, b: int) -> float:
            fa, fb = feats[a], feats[b]
            return 1 - float(fa @ fb) / math.sqrt(float(fa @ fa) * float(fb @ fb))

        assert dv.intra_list_diversity(log, features=feats) == pytest.approx(brute_ild(log, cosine))
    else:
        assert math.isnan(dv.intra_list_diversity(log, categories=CATEGORIES))  # no slate of two


def test_edge_cases() -> None:
    nothing = np.full((3, 4), -1)
    assert dv.catalogue_coverage(nothing, 5) == 0.0
    assert math.isnan(dv.exposure_gini(nothing, 5))
    assert math.isnan(dv.category_novelty(nothing, np.zeros(5, dtype=int)))
    assert dv.pushes_per_user(nothing) == 0.0
    one = np.array([[2, 2, 2]])
    assert dv.exposure_gini(one, 5) == pytest.approx(4 / 5)  # all exposure on one of five
    assert dv.exposure_gini(np.array([[0, 1, 2, 3, 4]]), 5) == pytest.approx(0.0)
    assert dv.unsubscribe_rate(np.array([True, False, False, False])) == 0.25
    assert dv.unsubscribe_rate(np.array([[False, True], [False, False]])) == 0.5
    report = dv.diversity_report(random_log(0, 2), CATEGORIES, unsubscribed=np.zeros(12, dtype=bool))
    assert set(report) == {"catalogue_coverage", "intra_list_diversity", "category_novelty", "exposure_gini",
                           "pushes_per_user", "unsubscribe_rate"}


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match=r"actions must be \(n_users, T\) or \(n_users, T, k\), got shape \(3,\)"):
        dv.pushes_per_user(np.zeros(3, dtype=int))
    with pytest.raises(TypeError, match="actions must be integers"):
        dv.pushes_per_user(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="actions must be >= -1"):
        dv.pushes_per_user(np.full((2, 2), -2))
    with pytest.raises(ValueError, match="actions must be < n_actions=3, got maximum 5"):
        dv.catalogue_coverage(np.array([[5]]), 3)
    with pytest.raises(ValueError, match="exactly one of categories"):
        dv.intra_list_diversity(np.zeros((1, 1, 2), dtype=int))
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\)"):
        dv.category_novelty(np.zeros((1, 1), dtype=int), CATEGORIES, decay=1.0)


@pytest.mark.parametrize("k", [1, 3])
def test_category_novelty_equals_the_env_diversity_term(k: int) -> None:
    env = BatchedPushEnv(num_envs=50, slate_size=k, diversity_weight=1.0, frequency_cap=4,
                         churn_logit=-50.0, churn_slope=0.0)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    log, div, items = [], 0.0, 0
    for _ in range(20):
        _, _, _, _, info = env.step(rng.integers(0, 11, size=(50, k)))
        log.append(info["promotions"])
        div += info["diversity"].sum()
        items += int((info["promotions"] >= 0).sum())
    actions = np.stack(log, axis=1)  # (n_users, T, k)
    novelty = dv.category_novelty(actions, env.shop.categories, env.config.history_decay)
    assert novelty == pytest.approx(div / items)
