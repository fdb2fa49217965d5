"""Collapsed and baseline-duplicating candidates: notes, inclusive bounds, a brute-force TV check, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.policies.degenerate import degenerate_notes, mean_tv_distance

IDS = ["clearance30", "new_in", "free_ship", "no_push"]


def one_hot(actions: np.ndarray, n_actions: int = 4) -> np.ndarray:
    return np.eye(n_actions)[actions]


def random_probabilities(rng: np.random.Generator, n: int, n_actions: int = 4) -> np.ndarray:
    return rng.dirichlet(np.ones(n_actions), size=n)


def brute_force_tv(p: np.ndarray, q: np.ndarray) -> float:
    """Mean TV distance as sup over events: max over subsets S of |P(S) - Q(S)|, row by row."""
    total = 0.0
    for row_p, row_q in zip(p.tolist(), q.tolist(), strict=True):
        best = 0.0
        for mask in range(2 ** len(row_p)):
            diff = sum(a - b for j, (a, b) in enumerate(zip(row_p, row_q, strict=True)) if mask >> j & 1)
            best = max(best, abs(diff))
        total += best
    return total / len(p)


def test_mean_tv_distance_matches_brute_force_over_events():
    rng = np.random.default_rng(0)
    for n_actions in (2, 3, 5):
        p, q = random_probabilities(rng, 40, n_actions), random_probabilities(rng, 40, n_actions)
        assert mean_tv_distance(p, q) == pytest.approx(brute_force_tv(p, q), abs=1e-12)
    p = random_probabilities(rng, 10)
    assert mean_tv_distance(p, p) == 0.0
    assert mean_tv_distance(one_hot(np.zeros(5, int)), one_hot(np.ones(5, int))) == pytest.approx(1.0)


def test_collapsed_candidate_is_named_with_its_share_and_action():
    rng = np.random.default_rng(1)
    actions = np.where(rng.random(1000) < 0.997, 0, rng.integers(1, 4, 1000))
    probs = {"uniform": np.full((1000, 4), 0.25), "linucb": one_hot(actions), "softmax": random_probabilities(rng, 1000)}
    notes = degenerate_notes(probs, ["uniform"], IDS)
    share = (actions == 0).mean()
    assert share >= 0.99
    assert notes == {"linucb": f"collapsed: puts {share:.1%} of its pushes on 'clearance30'"}


def test_duplicate_names_the_nearest_baseline_and_its_distance():
    rng = np.random.default_rng(2)
    n = 500
    popular = one_hot(np.full(n, 2))
    uniform = np.full((n, 4), 0.25)
    # a candidate 0.4% of the time off most_popular's action, and otherwise spread
    near = 0.996 * popular + 0.004 * random_probabilities(rng, n)
    probs = {"most_popular": popular, "uniform": uniform, "lints": near,
             "eps_uniform": 0.99 * uniform + 0.01 * random_probabilities(rng, n)}
    notes = degenerate_notes(probs, {"most_popular", "uniform"}, IDS)
    tv_popular = brute_force_tv(near, popular)
    assert tv_popular <= 0.01
    assert notes["lints"] == (f"collapsed: puts {near.mean(axis=0)[2]:.1%} of its pushes on 'free_ship'; "
                              f"duplicates baseline most_popular (TV distance {tv_popular:.3f})")
    tv_uniform = brute_force_tv(probs["eps_uniform"], uniform)
    assert notes["eps_uniform"] == f"duplicates baseline uniform (TV distance {tv_uniform:.3f})"
    assert set(notes) == {"lints", "eps_uniform"}  # baselines are never flagged


def test_bounds_are_inclusive_and_just_outside_is_not_flagged():
    n = 100
    on_bound = one_hot(np.r_[np.zeros(99, int), [1]])  # exactly 99% on action 0
    below = np.vstack([one_hot(np.zeros(98, int)), np.full((2, 4), 0.25)])  # 98% + 2 * 0.25 / 100 = 98.5%
    base = one_hot(np.full(n, 3))
    tv_on = 0.99 * base + 0.01 * one_hot(np.zeros(n, int))  # TV to base 0.01, 99% on no_push: both bounds
    tv_off = 0.9899 * base + 0.0101 * one_hot(np.zeros(n, int))  # TV 0.0101, 98.99% on no_push: neither
    probs = {"base": base, "on": on_bound, "below": below, "tv_on": tv_on, "tv_off": tv_off}
    for name, p in probs.items():  # the premises, computed independently
        assert max(p[:, a].sum() / n for a in range(4)) == pytest.approx(
            {"base": 1, "on": 0.99, "below": 0.985, "tv_on": 0.99, "tv_off": 0.9899}[name], abs=1e-12)
    assert brute_force_tv(tv_on, base) == pytest.approx(0.01, abs=1e-12)
    assert brute_force_tv(tv_off, base) == pytest.approx(0.0101, abs=1e-12)
    notes = degenerate_notes(probs, ["base"], IDS)
    assert notes == {
        "on": "collapsed: puts 99.0% of its pushes on 'clearance30'",
        "tv_on": "collapsed: puts 99.0% of its pushes on 'no_push'; duplicates baseline base (TV distance 0.010)",
    }
    strict = degenerate_notes(probs, ["base"], IDS, collapse_share=0.995, duplicate_tv=0.005)
    assert strict == {}


def test_no_baselines_present_and_healthy_candidates_give_no_notes():
    rng = np.random.default_rng(3)
    probs = {"a": random_probabilities(rng, 200), "b": random_probabilities(rng, 200)}
    assert degenerate_notes(probs, ["uniform", "logging"], IDS) == {}
    assert degenerate_notes(probs, [], IDS) == {}


@pytest.mark.parametrize(("probs", "match"), [
    ({"a": np.full((3, 3), 1 / 3)}, r"probabilities\['a'\] must have shape \(n >= 1, 4\).*\(3, 3\)"),
    ({"a": np.full(4, 0.25)}, r"probabilities\['a'\] must have shape"),
    ({"a": np.full((3, 4), 0.25), "b": np.full((2, 4), 0.25)}, r"probabilities\['b'\] has 2 rows but .*'a'.* has 3"),
    ({"a": np.array([[0.5, 0.5, np.nan, 0.0]])}, r"probabilities\['a'\] has nan at row 0, action 2"),
    ({"a": np.array([[1.5, -0.5, 0.0, 0.0]])}, r"probabilities\['a'\] has -0.5 at row 0, action 1"),
    ({"a": np.array([[0.5, 0.4, 0.0, 0.0]])}, r"probabilities\['a'\] row 0 sums to 0.9, expected 1"),
])
def test_bad_probabilities_are_refused_by_name(probs, match):
    with pytest.raises(ValueError, match=match):
        degenerate_notes(probs, [], IDS)


@pytest.mark.parametrize("kw", [{"collapse_share": 1.5}, {"duplicate_tv": -0.1}, {"collapse_share": True}])
def test_bad_bounds_are_refused(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        degenerate_notes({"a": np.full((2, 4), 0.25)}, [], IDS, **kw)
