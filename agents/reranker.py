"""Diversity-aware slates: maximal marginal relevance (Carbonell & Goldstein, 1998).

Given relevance scores s (n, A) from any agent and a promotion similarity
matrix S (A, A) with S_ii = 1, build a slate of k promotions greedily:

    pick_t = argmax_{a not yet picked} (1 - λ) s_a - λ max_{b picked} S_ab

λ = 0 is the top-k by score; larger λ trades relevance for diversity. Ties go
to the lower index. The slate is deterministic: its action distribution puts
probability 1 on the slate's promotion in each slot (OBP layout (n, A, k)).

`MMRScorer` computes the same slate in torch for ONNX export: it outputs
k − t for the promotion picked at step t and −1 elsewhere, so a runtime that
fills slots greedily by score (no exploration) serves exactly this slate.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from pushrl.policies.policy import check_contexts


def category_similarity(categories: np.ndarray) -> np.ndarray:
    """(A, A) 1 where two promotions share a category, else 0."""
    c = np.asarray(categories)
    return (c[:, None] == c[None, :]).astype(np.float64)


def feature_similarity(features: np.ndarray) -> np.ndarray:
    """(A, A) cosine similarity of promotion feature vectors, clipped to [0, 1]."""
    f = np.asarray(features, dtype=np.float64)
    norm = np.linalg.norm(f, axis=1, keepdims=True)
    unit = f / np.where(norm > 0, norm, 1.0)
    return np.clip(unit @ unit.T, 0.0, 1.0)


def mmr_slates(scores: np.ndarray, similarity: np.ndarray, k: int, lam: float) -> np.ndarray:
    """(n, k) promotion indices of each row's MMR slate (vectorised over rows; a loop over the k slots)."""
    s = np.asarray(scores, dtype=np.float64)
    n, a = s.shape
    if similarity.shape != (a, a):
        raise ValueError(f"similarity must be ({a}, {a}) for {a} promotions, got {similarity.shape}")
    if not 1 <= k <= a:
        raise ValueError(f"k must be in [1, {a}] (the number of promotions), got {k}")
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    picked = np.zeros((n, k), dtype=np.int64)
    penalty = np.zeros((n, a))
    taken = np.zeros((n, a), dtype=bool)
    rows = np.arange(n)
    for t in range(k):
        value = (1.0 - lam) * s - lam * penalty if t else s.copy()
        value[taken] = -np.inf
        choice = value.argmax(axis=1)
        picked[:, t] = choice
        taken[rows, choice] = True
        penalty = np.maximum(penalty, similarity[choice])
    return picked


class MMRReranker:
    """Slates of k promotions from an agent's scores, re-ranked for diversity.

    scorer: contexts (n, d) -> relevance scores (n, A) (e.g. a bandit's `estimates`).
    """

    def __init__(self, scorer: Callable[[np.ndarray], np.ndarray], similarity: np.ndarray, k: int, lam: float,
                 n_features: int | None = None) -> None:
        self.scorer, self.similarity, self.k, self.lam = scorer, np.asarray(similarity, float), int(k), float(lam)
        self.n_features = n_features
        mmr_slates(np.zeros((1, self.similarity.shape[0])), self.similarity, self.k, self.lam)  # validates

    @property
    def n_actions(self) -> int:
        return self.similarity.shape[0]

    def slates(self, contexts: np.ndarray) -> np.ndarray:
        x = check_contexts(contexts, self.n_features)
        return mmr_slates(self.scorer(x), self.similarity, self.k, self.lam)

    def action_dist(self, contexts: np.ndarray) -> np.ndarray:
        """(n, A, k): probability 1 on the slate's promotion in each slot."""
        slates = self.slates(contexts)
        n = len(slates)
        out = np.zeros((n, self.n_actions, self.k))
        out[np.arange(n)[:, None], slates, np.arange(self.k)[None, :]] = 1.0
        return out


class MMRScorer(torch.nn.Module):
    """Torch MMR over a relevance module: k − t for the promotion picked at step t, −1 elsewhere."""

    def __init__(self, relevance: torch.nn.Module, similarity: np.ndarray, k: int, lam: float) -> None:
        super().__init__()
        self.relevance = relevance
        self.register_buffer("sim", torch.from_numpy(np.asarray(similarity, np.float32)))
        self.k, self.lam = int(k), float(lam)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.relevance(x)
        n, a = s.shape
        out = torch.full_like(s, -1.0)
        taken = torch.zeros_like(s)
        penalty = torch.zeros_like(s)
        idx = torch.arange(a, device=s.device).to(s.dtype)
        for t in range(self.k):
            value = (1.0 - self.lam) * s - self.lam * penalty if t else s
            value = torch.where(taken > 0, torch.full_like(value, -1e30), value)
            best = value.max(dim=1, keepdim=True).values
            # the lowest index among ties, as numpy's argmax
            first = torch.where(value == best, idx[None, :], torch.full_like(value, float(a))).min(dim=1, keepdim=True).values
            onehot = (idx[None, :] == first).to(s.dtype)
            out = out + onehot * float(self.k - t + 1)
            taken = taken + onehot
            penalty = torch.maximum(penalty, onehot @ self.sim)
        return out
