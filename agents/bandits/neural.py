"""NeuralLinear (Riquelme et al. 2018): an MLP representation, Thompson sampling on its last layer.

An MLP `body -> head` predicts each action's reward; every `retrain_every` rows it
is retrained for `train_steps` minibatches on the (weighted) replay buffer, and
the per-action Bayesian linear regressions on phi(x) = [body(x), 1] are rebuilt
from the buffer. Between retrains new rows update those regressions directly.
Exploration, probabilities and `choose` are LinTS's, on phi(x).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from pushrl.agents.bandits.base import check_int, check_positive
from pushrl.agents.bandits.linear import LinearBandit, LinTS
from pushrl.agents.bandits.ridge import RidgeStats

BUFFER_KEYS = ("contexts", "actions", "rewards", "weights")


class NeuralLinear(LinTS):
    """LinTS on a learned representation; `hidden_sizes[-1] + 1` is the regression width."""

    def __init__(
        self,
        n_actions: int,
        n_features: int,
        *,
        hidden_sizes: Sequence[int] = (32,),
        alpha: float = 1.0,
        ridge: float = 1.0,
        n_mc: int = 1000,
        retrain_every: int = 500,
        train_steps: int = 200,
        train_batch_size: int = 64,
        learning_rate: float = 1e-3,
        buffer_size: int = 100_000,
        seed: int = 0,
    ) -> None:
        sizes = tuple(hidden_sizes) if isinstance(hidden_sizes, Sequence) else ()
        if not sizes or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in sizes):
            raise ValueError(
                f"hidden_sizes must be a non-empty sequence of integers >= 1, got {hidden_sizes!r}"
            )
        self.hidden_sizes = sizes
        self.retrain_every = check_int("retrain_every", retrain_every, 1)
        self.train_steps = check_int("train_steps", train_steps, 1)
        self.train_batch_size = check_int("train_batch_size", train_batch_size, 1)
        self.learning_rate = check_positive("learning_rate", learning_rate)
        self.buffer_size = check_int("buffer_size", buffer_size, 1)
        self._init_ts(alpha, n_mc)
        self.body, self.head = _build_mlp(
            check_int("n_features", n_features, 1),
            sizes,
            check_int("n_actions", n_actions, 1),
            check_int("seed", seed, 0),
        )
        LinearBandit.__init__(self, n_actions, n_features, ridge=ridge, seed=seed)
        self.n_retrains = 0
        self._since_retrain = 0
        self._buffer = {k: np.empty((0, n_features) if k == "contexts" else 0) for k in BUFFER_KEYS}
        self._buffer["actions"] = self._buffer["actions"].astype(np.intp)
        self._pending: list[tuple[np.ndarray, ...]] = []

    def _representation_dim(self) -> int:
        return self.hidden_sizes[-1] + 1

    def _representation(self, contexts: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            h = self.body(_tensor(contexts)).double().numpy()
        return np.concatenate([h, np.ones((h.shape[0], 1))], axis=1)

    def _consolidate(self) -> dict[str, np.ndarray]:
        """Merge pending batches into the buffer, keeping the newest `buffer_size` rows."""
        if self._pending:
            for k, new in zip(BUFFER_KEYS, zip(*self._pending, strict=True), strict=True):
                self._buffer[k] = np.concatenate([self._buffer[k], *new])[-self.buffer_size :]
            self._pending = []
        return self._buffer

    def _update(
        self, contexts: np.ndarray, actions: np.ndarray, rewards: np.ndarray, weights: np.ndarray
    ) -> None:
        self._pending.append((contexts, actions, rewards, weights))
        self._since_retrain += len(actions)
        if self._since_retrain >= self.retrain_every:
            self.retrain()
        else:
            super()._update(contexts, actions, rewards, weights)

    def retrain(self) -> None:
        """Train the MLP on the buffer, then rebuild the last-layer regressions from it."""
        buf = self._consolidate()
        x, a, r, w = (buf[k] for k in BUFFER_KEYS)
        rng = np.random.default_rng([self.seed, 3, self.n_retrains])
        opt = torch.optim.Adam(
            [*self.body.parameters(), *self.head.parameters()], lr=self.learning_rate
        )
        xt, at, rt, wt = _tensor(x), torch.as_tensor(a), _tensor(r), _tensor(w)
        for _ in range(self.train_steps):
            idx = torch.as_tensor(rng.integers(0, len(a), size=min(self.train_batch_size, len(a))))
            pred = self.head(self.body(xt[idx])).gather(1, at[idx, None])[:, 0]
            loss = (wt[idx] * (pred - rt[idx]) ** 2).sum() / wt[idx].sum().clamp_min(1e-12)
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.stats = RidgeStats(self._n_actions, self._representation_dim(), self.ridge, self.stats.forgetting)
        self.stats.update(self._representation(x), a, r, w)
        self.n_retrains += 1
        self._since_retrain = 0

    def _get_state(self) -> dict[str, np.ndarray]:
        state = super()._get_state()
        for prefix, module in (("body.", self.body), ("head.", self.head)):
            state.update(
                {prefix + k: v.detach().numpy().copy() for k, v in module.state_dict().items()}
            )
        state.update({f"buffer.{k}": v.copy() for k, v in self._consolidate().items()})
        state["n_retrains"] = np.asarray(self.n_retrains, dtype=np.int64)
        state["since_retrain"] = np.asarray(self._since_retrain, dtype=np.int64)
        return state

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        for key in (*(f"buffer.{k}" for k in BUFFER_KEYS), "n_retrains", "since_retrain"):
            if key not in state:
                raise ValueError(f"state is missing {key!r}; it has {sorted(state)}")
        weights = {}  # check every tensor before loading any
        for prefix, module in (("body.", self.body), ("head.", self.head)):
            for k, v in module.state_dict().items():
                got = np.shape(state[prefix + k]) if prefix + k in state else "missing"
                if got != tuple(v.shape):
                    raise ValueError(
                        f"state[{prefix + k!r}] must have shape {tuple(v.shape)}, got {got}"
                    )
                weights[prefix + k] = torch.as_tensor(
                    np.asarray(state[prefix + k], dtype=np.float32)
                )
        super()._set_state(state)
        for prefix, module in (("body.", self.body), ("head.", self.head)):
            module.load_state_dict({k: weights[prefix + k] for k in module.state_dict()})
        self._buffer = {k: np.asarray(state[f"buffer.{k}"]).copy() for k in BUFFER_KEYS}
        self._pending = []
        self.n_retrains, self._since_retrain = int(state["n_retrains"]), int(state["since_retrain"])


def _tensor(a: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32))


def _build_mlp(
    n_in: int, hidden: tuple[int, ...], n_out: int, seed: int
) -> tuple[nn.Sequential, nn.Linear]:
    """ReLU MLP body and linear head, initialised like torch's default from a private generator."""
    gen = torch.Generator().manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip((n_in, *hidden[:-1]), hidden, strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    body, head = nn.Sequential(*layers), nn.Linear(hidden[-1], n_out)
    with torch.no_grad():
        for lin in [m for m in body if isinstance(m, nn.Linear)] + [head]:
            bound = 1.0 / np.sqrt(lin.in_features)
            lin.weight.uniform_(-bound, bound, generator=gen)
            lin.bias.uniform_(-bound, bound, generator=gen)
    return body, head
