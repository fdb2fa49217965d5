"""Linear contextual bandits on ridge-regression estimates: ε-greedy, softmax, LinUCB, LinTS.

Disjoint models keep one ridge regression per action on the context x.
Shared models (`SharedLinUCB`, `SharedLinTS`) keep one regression on joint
features phi(x, z_a) of the context and the action's features z_a, so any
action with features, including one never tried, can be scored:
    interaction="outer":  phi = vec(x z_a^T)   (n_features * n_action_features)
    interaction="concat": phi = [x, z_a]       (no context-action interaction)
Add a constant column to the contexts (and action features) for an intercept.

Action probabilities are exact: ε-greedy, softmax and LinUCB in closed form
(ties split evenly). Thompson sampling uses `n_mc` fixed standard-normal draws
(seeded by `seed`, shared by all rows): its probabilities are the exact
probabilities of the policy `act` runs, which picks one of those draws at random,
and approximate the true TS probabilities with standard error <= 0.5 / sqrt(n_mc).
`choose` (used by `run_online`) takes a fresh posterior draw instead.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Literal

import numpy as np

from pushrl.agents.bandits.base import BanditAgent, check_int, check_positive
from pushrl.agents.bandits.ridge import RidgeStats
from pushrl.envs.common.probabilities import softmax
from pushrl.policies.baselines import greedy_probabilities
from pushrl.policies.policy import check_contexts, sample_actions

Interaction = Literal["outer", "concat"]
MC_BUDGET = 2**23  # floats per Monte-Carlo chunk (rows * n_mc * n_actions)
ROW_BUDGET = 2**22  # floats per block of rows * n_actions * dim temporaries


class LinearBandit(BanditAgent):
    """Ridge estimates per action (or shared), exploration left to subclasses."""

    def __init__(
        self,
        n_actions: int,
        n_features: int,
        *,
        ridge: float = 1.0,
        seed: int = 0,
        action_features: np.ndarray | None = None,
        interaction: Interaction = "outer",
    ) -> None:
        self.ridge = check_positive("ridge", ridge)
        self._action_features: np.ndarray | None = None
        if action_features is None:
            super().__init__(n_actions, n_features, seed)
            self.stats = RidgeStats(self._n_actions, self._representation_dim(), self.ridge)
            return
        if interaction not in ("outer", "concat"):
            raise ValueError(f"interaction must be one of ['outer', 'concat'], got {interaction!r}")
        self.interaction = interaction
        z = _check_action_features(action_features, None)
        super().__init__(z.shape[0], n_features, seed)
        self._action_features = z
        d, m = self._representation_dim(), z.shape[1]
        self.stats = RidgeStats(1, d * m if interaction == "outer" else d + m, self.ridge)

    @property
    def forgetting(self) -> float:
        """gamma in (0, 1]: each batch update first discounts past evidence by gamma (1: no forgetting)."""
        return self.stats.forgetting

    @forgetting.setter
    def forgetting(self, gamma: float) -> None:
        if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not 0.0 < gamma <= 1.0:
            raise ValueError(f"forgetting must be a number in (0, 1], got {gamma!r}")
        self.stats.forgetting = float(gamma)

    @property
    def shared(self) -> bool:
        return self._action_features is not None

    @property
    def action_features(self) -> np.ndarray | None:
        return None if self._action_features is None else self._action_features.copy()

    def set_action_features(self, action_features: np.ndarray) -> None:
        """Shared models only: score a new action set (same number of action features)."""
        if self._action_features is None:
            raise ValueError(
                "set_action_features needs a shared model (built with action_features)"
            )
        self._action_features = _check_action_features(
            action_features, self._action_features.shape[1]
        )
        self._n_actions = self._action_features.shape[0]

    # ---- features -------------------------------------------------------------------
    def _representation_dim(self) -> int:
        return self.n_features

    def _representation(self, contexts: np.ndarray) -> np.ndarray:
        """(n, n_features) -> (n, dim) features the ridge models see (identity here)."""
        return contexts

    def _joint_rows(self, rep: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Joint features of row-matched (n, d) reps and (n, m) action features: (n, p)."""
        if self.interaction == "outer":
            return (rep[:, :, None] * z[:, None, :]).reshape(rep.shape[0], -1)
        return np.concatenate([rep, z], axis=1)

    def _all_joint(self, contexts: np.ndarray) -> np.ndarray:
        """(n, n_features) contexts -> (n, n_actions, p) joint features with every action."""
        rep, z = self._representation(contexts), self._shared_features()
        n, k = rep.shape[0], z.shape[0]
        if self.interaction == "outer":
            return (rep[:, None, :, None] * z[None, :, None, :]).reshape(n, k, -1)
        return np.concatenate(
            [np.repeat(rep[:, None, :], k, axis=1), np.repeat(z[None], n, axis=0)], axis=2
        )

    def _shared_features(self) -> np.ndarray:
        if self._action_features is None:
            raise ValueError("this model is disjoint; joint features need action_features")
        return self._action_features

    # ---- estimates ------------------------------------------------------------------
    def _blockwise(
        self, fn: Callable[[np.ndarray], np.ndarray], contexts: np.ndarray
    ) -> np.ndarray:
        """Apply `fn` to blocks of rows so (rows, n_actions, dim) temporaries stay bounded."""
        rows = max(1, ROW_BUDGET // (self._n_actions * self.stats.dim))
        if len(contexts) <= rows:
            return fn(contexts)
        return np.concatenate([fn(contexts[s : s + rows]) for s in range(0, len(contexts), rows)])

    @abstractmethod
    def _block_probabilities(self, contexts: np.ndarray) -> np.ndarray:
        """(n, n_actions) probabilities for one block of validated contexts."""

    def _probabilities(self, contexts: np.ndarray) -> np.ndarray:
        return self._blockwise(self._block_probabilities, contexts)

    def _mean(self, contexts: np.ndarray) -> np.ndarray:
        if self.shared:
            return self._all_joint(contexts) @ self.stats.theta[0]
        return self.stats.mean(self._representation(contexts))

    def _mean_width(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, n_actions) ridge estimates and widths sqrt(phi^T A^-1 phi)."""
        if not self.shared:
            rep = self._representation(contexts)
            return self.stats.mean(rep), self.stats.width(rep)
        phi = self._all_joint(contexts)
        quad = np.einsum("nkp,nkp->nk", phi @ self.stats.A_inv[0], phi)
        return phi @ self.stats.theta[0], np.sqrt(np.maximum(quad, 0.0))

    def estimates(self, contexts: np.ndarray) -> np.ndarray:
        """(n, n_actions) ridge estimates of the expected reward."""
        return self._blockwise(self._mean, check_contexts(contexts, self.n_features))

    def widths(self, contexts: np.ndarray) -> np.ndarray:
        """(n, n_actions) confidence widths sqrt(phi^T A^-1 phi)."""
        x = check_contexts(contexts, self.n_features)
        return self._blockwise(lambda block: self._mean_width(block)[1], x)

    # ---- learning and state ---------------------------------------------------------
    def _update(
        self, contexts: np.ndarray, actions: np.ndarray, rewards: np.ndarray, weights: np.ndarray
    ) -> None:
        rep = self._representation(contexts)
        if self._action_features is None:
            self.stats.update(rep, actions, rewards, weights)
        else:
            phi = self._joint_rows(rep, self._action_features[actions])
            self.stats.update(phi, np.zeros(len(actions), dtype=np.intp), rewards, weights)

    def _get_state(self) -> dict[str, np.ndarray]:
        return {f"ridge.{k}": v for k, v in self.stats.get_state().items()}

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self.stats.set_state(state, prefix="ridge.")


class EpsilonGreedy(LinearBandit):
    """Greedy on ridge estimates with probability 1 - epsilon, uniform otherwise."""

    def __init__(
        self,
        n_actions: int,
        n_features: int,
        *,
        epsilon: float = 0.1,
        ridge: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.epsilon = _check_unit("epsilon", epsilon)
        super().__init__(n_actions, n_features, ridge=ridge, seed=seed)

    def _block_probabilities(self, contexts: np.ndarray) -> np.ndarray:
        greedy = greedy_probabilities(self._mean(contexts))
        return (1.0 - self.epsilon) * greedy + self.epsilon / self._n_actions


class Softmax(LinearBandit):
    """Boltzmann exploration: p(a) proportional to exp(estimate_a / temperature)."""

    def __init__(
        self,
        n_actions: int,
        n_features: int,
        *,
        temperature: float = 1.0,
        ridge: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.temperature = check_positive("temperature", temperature)
        super().__init__(n_actions, n_features, ridge=ridge, seed=seed)

    def _block_probabilities(self, contexts: np.ndarray) -> np.ndarray:
        return softmax(self._mean(contexts) / self.temperature)


class LinUCB(LinearBandit):
    """Argmax of estimate + alpha * sqrt(x^T A_a^-1 x) (Li et al. 2010); ties split evenly."""

    def __init__(
        self,
        n_actions: int,
        n_features: int,
        *,
        alpha: float = 1.0,
        ridge: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.alpha = check_positive("alpha", alpha, allow_zero=True)
        super().__init__(n_actions, n_features, ridge=ridge, seed=seed)

    def ucb(self, contexts: np.ndarray) -> np.ndarray:
        """(n, n_actions) upper confidence bounds."""

        def block(x: np.ndarray) -> np.ndarray:
            mean, width = self._mean_width(x)
            return mean + self.alpha * width

        return self._blockwise(block, check_contexts(contexts, self.n_features))

    def _block_probabilities(self, contexts: np.ndarray) -> np.ndarray:
        mean, width = self._mean_width(contexts)
        return greedy_probabilities(mean + self.alpha * width)


class SharedLinUCB(LinUCB):
    """LinUCB on one ridge model of joint context-action features."""

    def __init__(
        self,
        action_features: np.ndarray,
        n_features: int,
        *,
        alpha: float = 1.0,
        ridge: float = 1.0,
        interaction: Interaction = "outer",
        seed: int = 0,
    ) -> None:
        self.alpha = check_positive("alpha", alpha, allow_zero=True)
        LinearBandit.__init__(  # n_actions comes from action_features
            self,
            0,
            n_features,
            ridge=ridge,
            seed=seed,
            action_features=action_features,
            interaction=interaction,
        )


class LinTS(LinearBandit):
    """Linear Thompson sampling: scores from theta ~ N(theta_hat, alpha^2 A^-1) per row and action.

    `n_mc` standard-normal draws fixed by `seed` define `action_probabilities`
    (and `act`); see the module docstring.
    """

    def __init__(
        self,
        n_actions: int,
        n_features: int,
        *,
        alpha: float = 1.0,
        ridge: float = 1.0,
        n_mc: int = 1000,
        seed: int = 0,
    ) -> None:
        self._init_ts(alpha, n_mc)
        super().__init__(n_actions, n_features, ridge=ridge, seed=seed)

    def _init_ts(self, alpha: float, n_mc: int) -> None:
        self.alpha = check_positive("alpha", alpha, allow_zero=True)
        self.n_mc = check_int("n_mc", n_mc, 1)
        self._mc_draws: np.ndarray | None = None

    def posterior(self, action: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """N(theta, alpha^2 A^-1) of `action`'s model (shared models: the one model)."""
        group = 0 if self.shared else check_int("action", action, 0)
        if group >= self.stats.n_groups:
            raise ValueError(f"action must be in [0, {self.stats.n_groups}), got {action!r}")
        return self.stats.posterior(group, self.alpha)

    def _noise_factor(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Means (n, k) and the noise map: disjoint (n, k) widths, shared (n, k, p) rows of phi L^-T."""
        if not self.shared:
            rep = self._representation(contexts)
            return self.stats.mean(rep), self.stats.width(rep)
        phi = self._all_joint(contexts)
        return phi @ self.stats.theta[0], phi @ self.stats.chol_inv[0].T

    def _standard_draws(self) -> np.ndarray:
        """(n_mc, k or p) float32 standard normals, fixed by the seed."""
        width = self.stats.dim if self.shared else self._n_actions
        if self._mc_draws is None or self._mc_draws.shape[1] != width:
            rng = np.random.default_rng([self.seed, 2])
            self._mc_draws = rng.standard_normal((self.n_mc, width), dtype=np.float32)
        return self._mc_draws

    def _select(self, contexts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self._blockwise(lambda x: self._block_select(x, rng), contexts)

    def _block_select(self, contexts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One fresh posterior draw per row: scores = mean + alpha * noise, argmax (ties split)."""
        mean, noise = self._noise_factor(contexts)
        if self.shared:
            z = rng.standard_normal((contexts.shape[0], noise.shape[2]))
            sample = mean + self.alpha * np.einsum("nkp,np->nk", noise, z)
        else:
            sample = mean + self.alpha * noise * rng.standard_normal(mean.shape)
        return sample_actions(greedy_probabilities(sample), rng)[0]

    def _block_probabilities(self, contexts: np.ndarray) -> np.ndarray:
        mean, noise = self._noise_factor(contexts)
        if self.alpha == 0.0:
            return greedy_probabilities(mean)
        draws, k = self._standard_draws(), self._n_actions
        scale = noise if not self.shared else np.linalg.norm(noise, axis=2)
        tied = (scale == 0.0).sum(axis=1) >= 2  # noiseless actions can tie; split those rows evenly
        out = np.empty_like(mean)
        chunk = max(1, MC_BUDGET // (self.n_mc * k))
        for s in range(0, len(mean), chunk):  # memory-bounded blocks of rows
            m = mean[s : s + chunk]
            centred = (m - m.max(axis=1, keepdims=True)).astype(np.float32)[:, None, :]
            noise_c = (self.alpha * noise[s : s + chunk]).astype(np.float32)
            if self.shared:
                scores = np.swapaxes(noise_c @ draws.T, 1, 2)  # (c, n_mc, k)
            else:
                scores = noise_c[:, None, :] * draws[None]
            scores += centred
            winners = scores.argmax(axis=2) + k * np.arange(len(m))[:, None]
            out[s : s + chunk] = (
                np.bincount(winners.ravel(), minlength=len(m) * k).reshape(len(m), k) / self.n_mc
            )
            rows = np.flatnonzero(tied[s : s + chunk])
            if len(rows):
                ties = scores[rows] >= scores[rows].max(axis=2, keepdims=True)
                out[s + rows] = (ties / ties.sum(axis=2, keepdims=True)).mean(axis=1)
        return out


class SharedLinTS(LinTS):
    """Thompson sampling on one ridge model of joint context-action features."""

    def __init__(
        self,
        action_features: np.ndarray,
        n_features: int,
        *,
        alpha: float = 1.0,
        ridge: float = 1.0,
        n_mc: int = 1000,
        interaction: Interaction = "outer",
        seed: int = 0,
    ) -> None:
        self._init_ts(alpha, n_mc)
        LinearBandit.__init__(
            self,
            0,
            n_features,
            ridge=ridge,
            seed=seed,
            action_features=action_features,
            interaction=interaction,
        )


def _check_unit(name: str, value: float) -> float:
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if not ok or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def _check_action_features(action_features: np.ndarray, n_columns: int | None) -> np.ndarray:
    z = check_contexts(action_features, n_columns, name="action_features")
    if z.shape[0] < 1 or z.shape[1] < 1:
        raise ValueError(f"action_features must have shape (n_actions >= 1, m >= 1), got {z.shape}")
    return z
