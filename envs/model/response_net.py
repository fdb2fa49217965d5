"""The network of the response model: one factorization-machine head per reward, and optionally one for the
unsubscribe outcome (see `response_model`'s docstring)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

CHUNK = 262_144
"""Rows (or row x action cells) scored at a time: bounded memory."""


class Head(nn.Module):
    """One reward's factorization machine (the formula: `pushrl.envs.model.response_model`'s docstring)."""

    def __init__(self, d: int, q: int, n_actions: int, n_positions: int, k: int, link: str, clip: float) -> None:
        super().__init__()
        self.link = link
        self.clip = clip
        self.offset = nn.Parameter(torch.zeros(()))
        self.pos = nn.Parameter(torch.zeros(n_positions))
        self.w_h = nn.Parameter(torch.zeros(()))
        self.w_u = nn.Parameter(torch.zeros(d))
        self.b_id = nn.Parameter(torch.zeros(n_actions))
        self.w_z = nn.Parameter(torch.zeros(q))
        self.P = nn.Parameter(torch.zeros(d, k))
        self.E_id = nn.Parameter(torch.zeros(n_actions, k))
        self.Q = nn.Parameter(torch.zeros(q, k))

    def init_(self, std: float, gen: torch.Generator, offset: float) -> None:
        with torch.no_grad():
            self.offset.fill_(offset)
            # only the user tower starts random: the promotion tower starts at zero, so the
            # untrained model is exactly the base rate, yet both towers get gradients
            self.P.copy_(torch.randn(self.P.shape, generator=gen) * std)

    def items(self, z: torch.Tensor, seen: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(A,) promotion bias and (A, k) promotion factors."""
        return self.b_id * seen + z @ self.w_z, self.E_id * seen[:, None] + z @ self.Q

    def user(self, x: torch.Tensor, pos: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n,) user bias and (n, k) user factors."""
        x = x.clamp(-self.clip, self.clip)
        return self.offset + self.pos[pos] + self.w_h * h + x @ self.w_u, x @ self.P

    def rows(self, x: torch.Tensor, pos: torch.Tensor, h: torch.Tensor, a: torch.Tensor, z: torch.Tensor,
             seen: torch.Tensor, drop_id: torch.Tensor | None = None) -> torch.Tensor:
        """(n,) linear predictor of the logged (row, action) pairs; rows with `drop_id` use features only."""
        ub, uf = self.user(x, pos, h)
        ib, vf = self.items(z, seen)
        ib, vf = ib[a], vf[a]
        if drop_id is not None:
            fb, fv = self.items(z, torch.zeros_like(seen))
            ib = torch.where(drop_id, fb[a], ib)
            vf = torch.where(drop_id[:, None], fv[a], vf)
        return ub + ib + (uf * vf).sum(1)

    def all_actions(self, x: torch.Tensor, pos: torch.Tensor, h: torch.Tensor, z: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """(n, A) linear predictor for every promotion."""
        ub, uf = self.user(x, pos, h)
        ib, vf = self.items(z, seen)
        return ub[:, None] + ib[None, :] + uf @ vf.T

    def mean(self, eta: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(eta) if self.link == "logit" else torch.exp(eta)

    def loss(self, eta: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-row loss: binary cross-entropy (logit) or Poisson deviance up to a constant (log)."""
        if self.link == "logit":
            return nn.functional.binary_cross_entropy_with_logits(eta, y, reduction="none")
        return torch.exp(eta) - y * eta


class Net(nn.Module):
    """The reward heads (`heads`, one per reward of the chain), the optional unsubscribe head (`unsubscribe`, a
    logit head; None without one: its parameters are then absent from the state_dict) and shared buffers."""

    def __init__(self, heads: dict[str, Head], z: np.ndarray, seen: np.ndarray, h_scale: float, scales: list[float],
                 unsubscribe: Head | None = None):
        super().__init__()
        self.heads = nn.ModuleDict(heads)
        self.unsubscribe = unsubscribe
        self.register_buffer("z", torch.as_tensor(z, dtype=torch.float32))
        self.register_buffer("seen", torch.as_tensor(seen, dtype=torch.float32))
        self.register_buffer("h_scale", torch.tensor(float(h_scale)))
        self.register_buffer("scales", torch.as_tensor(scales, dtype=torch.float32))

    def all_heads(self) -> list[Head]:
        """Every head: the rewards' in chain order, then the unsubscribe head if there is one."""
        return [*self.heads.values(), *([self.unsubscribe] if self.unsubscribe is not None else [])]
