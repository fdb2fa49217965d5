"""Per-group ridge-regression sufficient statistics, updated in batches.

For each group g (an action for disjoint models, one group for shared ones):

    A_g = ridge * I + sum_i w_i x_i x_i^T      (dim, dim)
    b_g = sum_i w_i r_i x_i                     (dim,)
    theta_g = A_g^-1 b_g

A batch adds X^T W X per touched group (one BLAS product per group, never one
per row). A^-1 follows in one batched call: a rank-k Woodbury update
    A^-1 <- A^-1 - U^T (I + U Z^T)^-1 U,  Z = sqrt(W) X,  U = Z A^-1
when every touched group got k <= dim / 4 rows, otherwise a fresh inverse of
the touched groups; all groups are re-inverted from A every REFRESH_EVERY
Woodbury batches so rounding cannot accumulate. The Cholesky factor L (A = L L^T)
and L^-1 are computed from A on first use after an update.
"""

from __future__ import annotations

import numpy as np

STATE_KEYS = ("A", "b", "weight_sum", "A_inv", "theta")
REFRESH_EVERY = 64  # Woodbury batches between exact re-inversions
WIDTH_BLOCK = 2**22  # floats in one block of x A^-1 products (32 MiB)


class RidgeStats:
    """A, b, A_inv and theta of `n_groups` ridge models of `dim` features; chol on demand."""

    def __init__(self, n_groups: int, dim: int, ridge: float, forgetting: float = 1.0) -> None:
        self.n_groups, self.dim, self.ridge = int(n_groups), int(dim), float(ridge)
        self.forgetting = float(forgetting)  # gamma in (0, 1]: discount of past data per update (drift)
        self.A = np.repeat((self.ridge * np.eye(self.dim))[None], self.n_groups, axis=0)
        self.b = np.zeros((self.n_groups, self.dim))
        self.weight_sum = np.zeros(self.n_groups)  # sum of row weights seen per group
        self.A_inv = np.repeat((np.eye(self.dim) / self.ridge)[None], self.n_groups, axis=0)
        self.theta = np.zeros_like(self.b)
        self._since_refresh = 0
        self._chol: np.ndarray | None = None
        self._chol_inv: np.ndarray | None = None

    @property
    def chol(self) -> np.ndarray:
        """(n_groups, dim, dim) lower-triangular L with A = L L^T."""
        if self._chol is None:
            self._chol = np.linalg.cholesky(self.A)
        return self._chol

    @property
    def chol_inv(self) -> np.ndarray:
        """(n_groups, dim, dim) L^-1, so that A^-1 = L^-T L^-1."""
        if self._chol_inv is None:
            self._chol_inv = np.linalg.inv(self.chol)
        return self._chol_inv

    def refresh(self, groups: np.ndarray | None = None) -> None:
        """Re-invert A and recompute theta for `groups` (all when None)."""
        idx = slice(None) if groups is None else groups
        self.A_inv[idx] = np.linalg.inv(self.A[idx])
        self.theta[idx] = np.einsum("gij,gj->gi", self.A_inv[idx], self.b[idx])
        if groups is None:
            self._since_refresh = 0

    def update(
        self, features: np.ndarray, groups: np.ndarray, rewards: np.ndarray, weights: np.ndarray
    ) -> None:
        """Add (n, dim) rows to their groups: A += X^T W X, b += X^T W r; update A^-1, theta.

        Rows with weight 0 change nothing; inputs are assumed validated.
        """
        keep = weights > 0
        if not keep.all():
            features, groups, rewards, weights = (
                features[keep],
                groups[keep],
                rewards[keep],
                weights[keep],
            )
        if len(groups) == 0:
            return
        if self.forgetting < 1.0:
            # discounted ridge (drift): old evidence decays by gamma per update, back toward the prior;
            # every group changes, so every inverse is recomputed (no low-rank shortcut)
            g = self.forgetting
            self.A = g * self.A + (1.0 - g) * self.ridge * np.eye(self.dim)[None]
            self.b *= g
            self.weight_sum *= g
            self._since_refresh = REFRESH_EVERY
        order = np.argsort(groups, kind="stable")
        groups, features, rewards, weights = (
            groups[order],
            features[order],
            rewards[order],
            weights[order],
        )
        touched, starts = np.unique(groups, return_index=True)
        ends = np.append(starts[1:], len(groups))
        xw = features * weights[:, None]
        for g, s, e in zip(touched, starts, ends, strict=True):  # one BLAS call per group
            self.A[g] += xw[s:e].T @ features[s:e]
        self.b[touched] += np.add.reduceat(xw * rewards[:, None], starts, axis=0)
        self.weight_sum[touched] += np.add.reduceat(weights, starts)
        self._chol = self._chol_inv = None
        k_max = int((ends - starts).max())
        if 4 * k_max <= self.dim and self._since_refresh < REFRESH_EVERY:
            z = np.zeros((len(touched), k_max, self.dim))
            slot = np.arange(len(groups)) - np.repeat(starts, ends - starts)
            z[np.repeat(np.arange(len(touched)), ends - starts), slot] = (
                features * np.sqrt(weights)[:, None]
            )
            self._woodbury(touched, z)
            self._since_refresh += 1
        elif self._since_refresh >= REFRESH_EVERY:
            self.refresh()
        else:
            self.refresh(touched)

    def _woodbury(self, groups: np.ndarray, z: np.ndarray) -> None:
        """A^-1 of `groups` after A += Z^T Z for zero-padded (t, k, dim) rows Z."""
        a_inv = self.A_inv[groups]
        u = z @ a_inv  # (t, k, dim)
        s = np.eye(z.shape[1]) + u @ np.swapaxes(z, 1, 2)
        new = a_inv - np.swapaxes(u, 1, 2) @ np.linalg.solve(s, u)
        self.A_inv[groups] = 0.5 * (new + np.swapaxes(new, 1, 2))
        self.theta[groups] = np.einsum("gij,gj->gi", self.A_inv[groups], self.b[groups])

    def mean(self, features: np.ndarray) -> np.ndarray:
        """(n, dim) -> (n, n_groups) estimates x^T theta_g."""
        return features @ self.theta.T

    def width(self, features: np.ndarray) -> np.ndarray:
        """(n, dim) -> (n, n_groups) sqrt(x^T A_g^-1 x), one GEMM per block of rows."""
        g, p = self.n_groups, self.dim
        stacked = np.swapaxes(self.A_inv, 0, 1).reshape(p, g * p)  # [i, g*p + j] = A_g^-1[i, j]
        out = np.empty((features.shape[0], g))
        rows = max(1, WIDTH_BLOCK // (g * p))
        for s in range(0, features.shape[0], rows):
            x = features[s : s + rows]
            out[s : s + rows] = np.einsum("ngj,nj->ng", (x @ stacked).reshape(len(x), g, p), x)
        return np.sqrt(np.maximum(out, 0.0))

    def posterior(self, group: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """Gaussian posterior N(theta_g, scale^2 A_g^-1) of one group: (mean, covariance)."""
        return self.theta[group].copy(), scale**2 * self.A_inv[group]

    def get_state(self) -> dict[str, np.ndarray]:
        state = {k: getattr(self, k).copy() for k in STATE_KEYS}
        return {**state, "since_refresh": np.asarray(self._since_refresh, dtype=np.int64)}

    def set_state(self, state: dict[str, np.ndarray], prefix: str = "") -> None:
        """Load the arrays of `get_state` (shape-checked), keys prefixed by `prefix`."""
        new = {}
        for k in (*STATE_KEYS, "since_refresh"):
            key = prefix + k
            if key not in state:
                raise ValueError(f"state is missing {key!r}; it has {sorted(state)}")
            arr = np.array(state[key], dtype=np.float64)
            shape = () if k == "since_refresh" else getattr(self, k).shape
            if arr.shape != shape:
                raise ValueError(f"state[{key!r}] must have shape {shape}, got {arr.shape}")
            new[k] = arr
        self._since_refresh = int(new.pop("since_refresh"))
        for k, arr in new.items():
            setattr(self, k, arr)
        self._chol = self._chol_inv = None
