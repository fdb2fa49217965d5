"""Batched ridge statistics against a direct np.linalg.inv computation."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.agents.bandits import LinTS, LinUCB, SharedLinTS, SharedLinUCB

RTOL = 1e-8
N_ACTIONS, N_FEATURES, N_ACTION_FEATURES = 5, 4, 3


def _log(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES))
    a = rng.integers(0, N_ACTIONS, size=n)
    r = rng.normal(size=n)
    w = rng.uniform(0.2, 3.0, size=n)
    return x, a, r, w


def _feed(agent, x, a, r, w, sizes=(1, 7, 40, 152)) -> None:
    """Feed the rows in batches of uneven sizes (1 row, a few, many)."""
    s = 0
    for k in sizes:
        agent.update(x[s : s + k], a[s : s + k], r[s : s + k], w[s : s + k])
        s += k
    assert s == len(a)


def _direct_disjoint(x, a, r, w, ridge):
    """Per-action A, b from scratch, inverted with np.linalg.inv."""
    out = []
    for k in range(N_ACTIONS):
        m = a == k
        A = ridge * np.eye(N_FEATURES) + (x[m] * w[m, None]).T @ x[m]
        b = (x[m] * (w[m] * r[m])[:, None]).sum(axis=0)
        out.append((A, b, np.linalg.inv(A)))
    return out


@pytest.mark.parametrize("ridge", [0.5, 2.0])
def test_disjoint_stats_match_direct_inverse(ridge: float) -> None:
    x, a, r, w = _log(0, 200)
    agent = LinUCB(N_ACTIONS, N_FEATURES, alpha=0.7, ridge=ridge)
    _feed(agent, x, a, r, w)
    probe = np.random.default_rng(1).normal(size=(9, N_FEATURES))
    for k, (A, b, A_inv) in enumerate(_direct_disjoint(x, a, r, w, ridge)):
        np.testing.assert_allclose(agent.stats.A[k], A, rtol=RTOL)
        np.testing.assert_allclose(agent.stats.A_inv[k], A_inv, rtol=RTOL, atol=1e-14)
        np.testing.assert_allclose(
            agent.stats.chol[k], np.linalg.cholesky(A), rtol=RTOL, atol=1e-14
        )
        np.testing.assert_allclose(
            agent.stats.chol_inv[k], np.linalg.inv(np.linalg.cholesky(A)), rtol=RTOL, atol=1e-14
        )
        theta = A_inv @ b
        np.testing.assert_allclose(agent.stats.theta[k], theta, rtol=RTOL)
        width = np.sqrt(np.einsum("ni,ij,nj->n", probe, A_inv, probe))
        np.testing.assert_allclose(agent.widths(probe)[:, k], width, rtol=RTOL)
        np.testing.assert_allclose(agent.ucb(probe)[:, k], probe @ theta + 0.7 * width, rtol=RTOL)


def test_ts_posterior_matches_direct_inverse() -> None:
    x, a, r, w = _log(2, 200)
    agent = LinTS(N_ACTIONS, N_FEATURES, alpha=0.3, ridge=1.5)
    _feed(agent, x, a, r, w)
    for k, (_, b, A_inv) in enumerate(_direct_disjoint(x, a, r, w, 1.5)):
        mean, cov = agent.posterior(k)
        np.testing.assert_allclose(mean, A_inv @ b, rtol=RTOL)
        np.testing.assert_allclose(cov, 0.3**2 * A_inv, rtol=RTOL, atol=1e-14)


@pytest.mark.parametrize("cls", [SharedLinUCB, SharedLinTS])
@pytest.mark.parametrize("interaction", ["outer", "concat"])
def test_shared_stats_match_direct_inverse(cls, interaction: str) -> None:
    x, a, r, w = _log(3, 200)
    z = np.random.default_rng(4).normal(size=(N_ACTIONS, N_ACTION_FEATURES))

    def phi(xi: np.ndarray, zk: np.ndarray) -> np.ndarray:
        return np.kron(xi, zk) if interaction == "outer" else np.concatenate([xi, zk])

    agent = cls(z, N_FEATURES, alpha=0.5, ridge=1.0, interaction=interaction)
    _feed(agent, x, a, r, w)
    feats = np.stack([phi(x[i], z[a[i]]) for i in range(len(a))])
    A = np.eye(feats.shape[1]) + (feats * w[:, None]).T @ feats
    A_inv = np.linalg.inv(A)
    theta = A_inv @ (feats * (w * r)[:, None]).sum(axis=0)
    np.testing.assert_allclose(agent.stats.A_inv[0], A_inv, rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(agent.stats.theta[0], theta, rtol=RTOL)
    probe = np.random.default_rng(5).normal(size=(6, N_FEATURES))
    for i in range(len(probe)):
        for k in range(N_ACTIONS):
            f = phi(probe[i], z[k])
            np.testing.assert_allclose(agent.estimates(probe)[i, k], f @ theta, rtol=RTOL)
            np.testing.assert_allclose(agent.widths(probe)[i, k], np.sqrt(f @ A_inv @ f), rtol=RTOL)
    if cls is SharedLinTS:
        mean, cov = agent.posterior()
        np.testing.assert_allclose(mean, theta, rtol=RTOL)
        np.testing.assert_allclose(cov, 0.25 * A_inv, rtol=RTOL, atol=1e-14)


@pytest.mark.parametrize("shared", [False, True])
def test_batched_update_equals_row_by_row(shared: bool) -> None:
    x, a, r, w = _log(6, 120)
    z = np.random.default_rng(7).normal(size=(N_ACTIONS, N_ACTION_FEATURES))
    make = (
        (lambda: SharedLinUCB(z, N_FEATURES)) if shared else (lambda: LinUCB(N_ACTIONS, N_FEATURES))
    )
    batched, rowwise = make(), make()
    batched.update(x, a, r, w)
    for i in range(len(a)):
        rowwise.update(x[i : i + 1], a[i : i + 1], r[i : i + 1], w[i : i + 1])
    for name in ("A", "b", "A_inv", "chol", "theta", "weight_sum"):
        np.testing.assert_allclose(
            getattr(batched.stats, name), getattr(rowwise.stats, name), rtol=1e-10, atol=1e-14
        )


def test_zero_weight_rows_change_nothing() -> None:
    x, a, r, w = _log(8, 50)
    w[::2] = 0.0
    full, kept = LinUCB(N_ACTIONS, N_FEATURES), LinUCB(N_ACTIONS, N_FEATURES)
    full.update(x, a, r, w)
    kept.update(x[1::2], a[1::2], r[1::2], w[1::2])
    np.testing.assert_allclose(full.stats.A_inv, kept.stats.A_inv, rtol=1e-12)
    np.testing.assert_allclose(full.stats.theta, kept.stats.theta, rtol=1e-12)


def test_untouched_actions_keep_their_prior() -> None:
    agent, fresh = (
        LinUCB(N_ACTIONS, N_FEATURES, ridge=2.0),
        LinUCB(N_ACTIONS, N_FEATURES, ridge=2.0),
    )
    x, _, r, _ = _log(9, 30)
    agent.update(x, np.full(30, 1), r)
    np.testing.assert_allclose(fresh.stats.A_inv[0], np.eye(N_FEATURES) / 2.0, rtol=RTOL)
    for k in (0, 2, 3, 4):
        for name in ("A", "A_inv", "chol", "theta"):
            np.testing.assert_array_equal(
                getattr(agent.stats, name)[k], getattr(fresh.stats, name)[k]
            )
    assert not np.allclose(agent.stats.A_inv[1], fresh.stats.A_inv[1])


def test_rank_k_woodbury_updates_match_direct_inverse() -> None:
    """Small batches in a wide model take the Woodbury path, past one periodic re-inversion."""
    d, n_batches, size = 16, 90, 8
    rng = np.random.default_rng(10)
    x = rng.normal(size=(n_batches * size, d))
    a = rng.integers(0, N_ACTIONS, len(x))
    r = rng.normal(size=len(x))
    agent = LinUCB(N_ACTIONS, d, ridge=0.7)
    rows_per_action = []
    for s in range(0, len(x), size):
        agent.update(x[s : s + size], a[s : s + size], r[s : s + size])
        rows_per_action.append(np.bincount(a[s : s + size]).max())
    assert sum(1 < k <= d // 4 for k in rows_per_action) > 64  # rank-k updates, not only rank-1
    for k in range(N_ACTIONS):
        m = a == k
        A = 0.7 * np.eye(d) + x[m].T @ x[m]
        A_inv = np.linalg.inv(A)
        np.testing.assert_allclose(agent.stats.A_inv[k], A_inv, rtol=RTOL, atol=1e-13)
        np.testing.assert_allclose(
            agent.stats.theta[k], A_inv @ (x[m].T @ r[m]), rtol=RTOL, atol=1e-13
        )
        np.testing.assert_allclose(agent.stats.chol[k], np.linalg.cholesky(A), rtol=RTOL)
