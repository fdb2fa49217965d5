"""torch -> ONNX export: parity within 1e-5 on 10,000 random contexts for each kind of scorer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pushrl.agents.export import (
    ExportError,
    LinearUCBScorer,
    check_parity,
    export_scorer,
    random_contexts,
    to_onnx,
)
from pushrl.envs.data.features import ContextEncoder
from pushrl.policies.artifact import load_artifact
from pushrl.policies.serving.runtime import PolicyRuntime

ACTIONS = ("No E-Mail", "Mens E-Mail", "Womens E-Mail", "Both")


@pytest.fixture(scope="module")
def encoder() -> ContextEncoder:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"recency": rng.integers(1, 12, 50).astype(float), "history": rng.gamma(2, 100, 50),
                          "newbie": rng.integers(0, 2, 50), "channel": rng.choice(["Web", "Phone", "Multi"], 50),
                          "zip_code": rng.choice(["Urban", "Rural"], 50)})
    return ContextEncoder.fit(frame, ["recency", "history", "newbie"], ["channel", "zip_code"])


def linear(d: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Linear(d, len(ACTIONS))


def mlp(d: int) -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(d, 32), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                               torch.nn.Linear(32, 16), torch.nn.Tanh(), torch.nn.Linear(16, len(ACTIONS)))


def linucb(d: int) -> torch.nn.Module:
    rng = np.random.default_rng(2)
    theta = rng.normal(size=(len(ACTIONS), d))
    a_inv = []
    for _ in ACTIONS:  # A_a = I + X^T X from some "observed" contexts
        x = rng.normal(size=(30, d))
        a_inv.append(np.linalg.inv(np.eye(d) + x.T @ x))
    return LinearUCBScorer(theta, np.stack(a_inv), alpha=1.5)


@pytest.mark.parametrize("build", [linear, mlp, linucb], ids=["linear", "mlp", "linucb"])
def test_parity_on_10000_random_contexts(tmp_path: Path, encoder: ContextEncoder, build) -> None:
    module = build(encoder.n_features)
    module.train()  # export must evaluate in eval mode (dropout off) and restore the mode
    folder = export_scorer(module, encoder, ACTIONS, tmp_path / "art", exploration={"type": "softmax", "temperature": 0.5},
                           no_push_action="No E-Mail", metadata={"metrics": {"replay": 0.1}, "data_fingerprint": "f"})
    assert module.training
    contexts = random_contexts(encoder, 10_000, np.random.default_rng(123))
    onnx_bytes = (folder / "policy.onnx").read_bytes()
    report, _ = check_parity(module, onnx_bytes, contexts)
    assert report.n_rows == 10_000 and report.max_abs_diff <= 1e-5, report
    # the served runtime computes the same scores (dynamic batch axis: 1 row and 10,000 rows)
    runtime = PolicyRuntime.load(folder, seed=0)
    module.eval()
    with torch.no_grad():
        expected = module(torch.from_numpy(contexts)).numpy()
    np.testing.assert_allclose(runtime.scores(contexts), expected, atol=1e-5)
    np.testing.assert_allclose(runtime.scores(contexts[:1]), expected[:1], atol=1e-5)
    manifest = load_artifact(folder).manifest
    assert manifest.policy_kind == type(module).__name__.lower()
    assert manifest.metrics == {"replay": 0.1} and manifest.data_fingerprint == "f"


def test_raw_contexts_through_the_runtime_match_torch(tmp_path: Path, encoder: ContextEncoder) -> None:
    module = mlp(encoder.n_features)
    folder = export_scorer(module, encoder, ACTIONS, tmp_path / "art")
    raw = [{"recency": 3, "history": 250.5, "newbie": 1, "channel": "Web", "zip_code": "Urban"},
           {"recency": 11.0, "history": 0.0, "newbie": 0, "channel": "Fax", "zip_code": "Rural"}]
    runtime = PolicyRuntime.load(folder)
    with torch.no_grad():
        expected = module.eval()(torch.from_numpy(encoder.transform(raw).astype(np.float32))).numpy()
    np.testing.assert_allclose(runtime.scores(runtime.encode(raw)), expected, atol=1e-5)


def test_probability_output(tmp_path: Path, encoder: ContextEncoder) -> None:
    module = torch.nn.Sequential(linear(encoder.n_features), torch.nn.Softmax(dim=1))
    folder = export_scorer(module, encoder, ACTIONS, tmp_path / "p", output="probabilities")
    runtime = PolicyRuntime.load(folder)
    contexts = random_contexts(encoder, 100, np.random.default_rng(0))
    with torch.no_grad():
        expected = module(torch.from_numpy(contexts)).numpy()
    np.testing.assert_allclose(runtime.action_probabilities(contexts), expected, atol=1e-5)


def test_scores_declared_as_probabilities_are_refused(tmp_path: Path, encoder: ContextEncoder) -> None:
    with pytest.raises(ExportError, match="not distributions"):
        export_scorer(linear(encoder.n_features), encoder, ACTIONS, tmp_path / "x", output="probabilities")
    assert not (tmp_path / "x").exists()


def test_failed_parity_writes_nothing(tmp_path: Path, encoder: ContextEncoder) -> None:
    with pytest.raises(ExportError, match="disagree on 10000 random contexts"):
        export_scorer(linear(encoder.n_features), encoder, ACTIONS, tmp_path / "x", parity_atol=-1.0)
    assert not (tmp_path / "x").exists()


def test_width_and_metadata_mistakes(tmp_path: Path, encoder: ContextEncoder) -> None:
    with pytest.raises(ExportError, match="scores 4 actions but action_ids has 3"):
        export_scorer(linear(encoder.n_features), encoder, ACTIONS[:3], tmp_path / "x")
    with pytest.raises(ValueError, match="unknown key"):
        export_scorer(linear(encoder.n_features), encoder, ACTIONS, tmp_path / "x", metadata={"metric": 1})
    with pytest.raises(ExportError, match="export failed"):
        to_onnx(linear(encoder.n_features + 1), encoder.n_features)
    assert not (tmp_path / "x").exists()
