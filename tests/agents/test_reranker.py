"""MMR slates: top-k at λ=0, brute-force agreement, diversity grows with λ, ONNX-served slate identical."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pushrl.agents.export import export_scorer
from pushrl.agents.reranker import (
    MMRReranker,
    MMRScorer,
    category_similarity,
    feature_similarity,
    mmr_slates,
)
from pushrl.envs.data.features import ContextEncoder
from pushrl.envs.sim.diversity import intra_list_diversity
from pushrl.policies.serving.runtime import PolicyRuntime

CATS = np.array([0, 0, 0, 1, 1, 2, 2, 3])


def _brute(scores, sim, k, lam):
    slate = []
    for t in range(k):
        best, best_v = None, -np.inf
        for a in range(len(scores)):
            if a in slate:
                continue
            v = scores[a] if t == 0 else (1 - lam) * scores[a] - lam * max(sim[a, b] for b in slate)
            if v > best_v:
                best, best_v = a, v
        slate.append(best)
    return slate


def test_lambda_zero_is_top_k():
    s = np.random.default_rng(0).normal(size=(50, 8))
    np.testing.assert_array_equal(mmr_slates(s, category_similarity(CATS), 3, 0.0), np.argsort(-s, axis=1)[:, :3])


@pytest.mark.parametrize("lam", [0.2, 0.5, 0.9])
def test_matches_brute_force(lam):
    rng = np.random.default_rng(1)
    s = rng.normal(size=(40, 8))
    sim = feature_similarity(rng.normal(size=(8, 3)))
    fast = mmr_slates(s, sim, 4, lam)
    for i in range(40):
        assert fast[i].tolist() == _brute(s[i], sim, 4, lam)


def test_diversity_rises_with_lambda():
    s = np.random.default_rng(2).normal(size=(500, 8))
    sim = category_similarity(CATS)
    ild = [intra_list_diversity(mmr_slates(s, sim, 3, lam)[:, None, :], categories=CATS)
           for lam in (0.0, 0.3, 0.6, 0.9)]
    assert all(b >= a for a, b in zip(ild, ild[1:], strict=False)) and ild[-1] > ild[0]


@pytest.mark.parametrize("k, lam, fragment", [(9, 0.5, "k must be"), (2, 1.5, "lam must be")])
def test_bad_parameters(k, lam, fragment):
    with pytest.raises(ValueError, match=fragment):
        MMRReranker(lambda x: x, category_similarity(CATS), k, lam)


def test_exported_slate_is_the_in_process_slate(tmp_path):
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"u": rng.normal(size=200), "v": rng.normal(size=200)})
    enc = ContextEncoder.fit(frame, ["u", "v"], [])
    theta = rng.normal(size=(8, 2))
    relevance = torch.nn.Linear(2, 8, bias=False)
    with torch.no_grad():
        relevance.weight.copy_(torch.from_numpy(theta.astype(np.float32)))
    sim = category_similarity(CATS)
    folder = export_scorer(MMRScorer(relevance, sim, 3, 0.5).eval(), enc, [f"p{i}" for i in range(8)], tmp_path / "mmr",
                           slate_size=3, policy_kind="mmr", parity_rows=2000)
    runtime = PolicyRuntime.load(folder, seed=0)
    contexts = [{"u": float(a), "v": float(b)} for a, b in rng.normal(size=(100, 2))]
    decisions = runtime.decide([{"request_id": str(i), "context": c, "k": 3} for i, c in enumerate(contexts)])
    x = enc.transform(contexts).astype(np.float32).astype(np.float64)
    local = MMRReranker(lambda z: z @ theta.T, sim, 3, 0.5).slates(x)
    served = np.array([[int(a[1:]) for a in d.actions] for d in decisions])
    np.testing.assert_array_equal(served, local)
    assert all(np.allclose(d.propensities, 1.0) for d in decisions)
