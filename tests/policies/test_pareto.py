"""The accuracy–diversity front: non-dominated marking against a brute-force check, per group, and the
shape of one agent's sweep (flat, monotone, not monotone)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pushrl.policies.pareto import (
    FLAT,
    MONOTONE,
    NOT_MONOTONE,
    front_shape,
    mark_front,
    non_dominated,
)


def brute_force_front(points: np.ndarray) -> np.ndarray:
    """Plain loops: i is on the front unless some j is >= everywhere and > somewhere (NaN rows never are)."""
    n = len(points)
    out = np.zeros(n, dtype=bool)
    for i in range(n):
        if not np.isfinite(points[i]).all():
            continue
        dominated = False
        for j in range(n):
            if j == i or not np.isfinite(points[j]).all():
                continue
            if all(points[j, k] >= points[i, k] for k in range(points.shape[1])) and \
                    any(points[j, k] > points[i, k] for k in range(points.shape[1])):
                dominated = True
                break
        out[i] = not dominated
    return out


@pytest.mark.parametrize("seed", range(8))
def test_non_dominated_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    # a coarse grid gives ties and duplicates; some NaN rows
    points = rng.integers(0, 6, size=(n, 2)).astype(float) if seed % 2 else rng.normal(size=(n, 3))
    points[rng.random(n) < 0.1, 0] = np.nan
    np.testing.assert_array_equal(non_dominated(points), brute_force_front(points))


def test_non_dominated_edge_cases() -> None:
    assert non_dominated(np.zeros((0, 2))).shape == (0,)
    np.testing.assert_array_equal(non_dominated(np.array([[1.0, 1.0], [1.0, 1.0]])), [True, True])  # equal: both stay
    np.testing.assert_array_equal(non_dominated(np.array([[1.0, 2.0], [2.0, 1.0], [0.5, 0.5]])), [True, True, False])
    with pytest.raises(ValueError, match="2-D"):
        non_dominated(np.array([1.0, 2.0]))


def test_mark_front_per_group() -> None:
    frame = pd.DataFrame({"g": ["a", "a", "b", "b"], "objective_per_push": [1.0, 2.0, 0.1, 0.1],
                          "category_novelty": [1.0, 2.0, 0.5, 0.4]})
    marked = mark_front(frame, group="g")
    assert marked["non_dominated"].tolist() == [False, True, True, False]
    with pytest.raises(ValueError, match="missing"):
        mark_front(frame.drop(columns="objective_per_push"))


def _sweep(acc: list[float], div: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"objective_per_push": acc, "category_novelty": div})


def test_front_shape_tells_flat_monotone_and_not_monotone_apart() -> None:
    shape, rho = front_shape(_sweep([0.3, 0.3, 0.3], [0.2, 0.5, 0.9]))
    assert shape == FLAT and np.isnan(rho)
    shape, rho = front_shape(_sweep([0.3, 0.2, 0.1], [0.2, 0.5, 0.9]))  # diversity costs accuracy
    assert shape == MONOTONE and rho == pytest.approx(-1.0)
    shape, rho = front_shape(_sweep([0.3, 0.1, 0.2], [0.2, 0.5, 0.9]))  # accuracy rises again with diversity
    assert shape == NOT_MONOTONE and rho == pytest.approx(-0.5)
    # NaN points are left out; one point left is flat
    assert front_shape(_sweep([0.3, np.nan], [0.2, 0.5]))[0] == FLAT
    # order of the rows does not matter: the sweep is sorted by diversity
    assert front_shape(_sweep([0.1, 0.3, 0.2], [0.9, 0.2, 0.5]))[0] == MONOTONE
