"""Policies from other systems: .npy (OBP layout, full or context-free) and long-form tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pushrl.policies.external import load_external_policy

N, A, L = 50, 4, 2


def _dist(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.ones(A), size=(N, L)).transpose(0, 2, 1)


def test_npy_full_and_memory_mapped(tmp_path):
    d = _dist()
    np.save(tmp_path / "p.npy", d)
    pol = load_external_policy(tmp_path / "p.npy", N, A, L)
    assert isinstance(pol.action_dist, np.memmap)
    np.testing.assert_array_equal(pol.rows(np.arange(N)), d)
    np.testing.assert_array_equal(pol.rows(slice(10, 20)), d[10:20])


def test_npy_context_free_broadcasts(tmp_path):
    d = _dist()[:1]
    np.save(tmp_path / "p.npy", d)
    pol = load_external_policy(tmp_path / "p.npy", N, A, L)
    assert pol.context_free
    out = pol.rows(np.array([0, 7, 49]))
    assert out.shape == (3, A, L)
    np.testing.assert_array_equal(out[2], d[0])


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_long_form_equals_dense(tmp_path, fmt):
    d = _dist(1)
    r, a, p = np.nonzero(d)
    long = pd.DataFrame({"row": r, "action": a, "position": p, "probability": d[r, a, p]})
    path = tmp_path / f"p.{fmt}"
    long.to_csv(path, index=False) if fmt == "csv" else long.to_parquet(path)
    np.testing.assert_allclose(load_external_policy(path, N, A, L).rows(np.arange(N)), d, rtol=1e-15)


def _bad_npy(tmp_path, arr):
    np.save(tmp_path / "bad.npy", arr)
    return tmp_path / "bad.npy"


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda d: d[:, :3], r"has shape \(50, 3, 2\); expected \(50, 4, 2\) or \(1, 4, 2\)"),
        (lambda d: d[:10], r"has shape \(10, 4, 2\)"),
        (lambda d: d[:, :, 0], "must be 3-D"),
        (lambda d: np.where(np.arange(N)[:, None, None] == 7, -d, d), r"bad.npy\[7, 0, 0\].*>= 0"),
        (lambda d: d * np.where(np.arange(N)[:, None, None] == 3, 1.5, 1.0), r"bad.npy\[3, :, 0\] sums to"),
        (lambda d: np.where(np.arange(N)[:, None, None] == 2, np.nan, d), r"bad.npy\[2, 0, 0\]"),
    ],
)
def test_bad_npy_names_array_and_index(tmp_path, make, fragment):
    with pytest.raises(ValueError, match=fragment):
        load_external_policy(_bad_npy(tmp_path, make(_dist())), N, A, L)


def test_long_form_action_out_of_range(tmp_path):
    long = pd.DataFrame({"row": [0], "action": [A], "position": [0], "probability": [1.0]})
    long.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(ValueError, match=r"column 'action' at line 0 is 4; expected an integer in \[0, 4\)"):
        load_external_policy(tmp_path / "p.csv", N, A, L)


def test_long_form_missing_rows_fail_the_sum_check(tmp_path):
    long = pd.DataFrame({"row": [0], "action": [1], "position": [0], "probability": [1.0]})
    long.to_csv(tmp_path / "p.csv", index=False)
    with pytest.raises(ValueError, match=r"p.csv\[0, :, 1\] sums to 0"):
        load_external_policy(tmp_path / "p.csv", N, A, L)
