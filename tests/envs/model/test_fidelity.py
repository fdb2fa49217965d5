"""Simulator fidelity: synthetic ground truth and replay of the logging policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pushrl.envs.common.stats import mean_ci
from pushrl.envs.data.split import split_log
from pushrl.envs.data.synthetic import SyntheticConfig, generate_log
from pushrl.envs.model.fidelity import replay_fidelity, synthetic_fidelity
from pushrl.envs.model.response import TrueResponse
from pushrl.envs.model.response_model import ResponseModel, ResponseModelConfig


def test_wilson_interval_against_formula_and_coverage():
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(400):
        y = (rng.random(500) < 0.03).astype(float)
        _, lo, hi = mean_ci(y)
        hits += lo <= 0.03 <= hi
    assert 0.92 <= hits / 400 <= 0.985  # nominal 95%
    m, lo, hi = mean_ci(np.r_[np.ones(3), np.zeros(1497)])
    assert lo > 0 and hi < 0.01 and lo < m < hi


@pytest.fixture(scope="module")
def fitted():
    torch.set_num_threads(1)
    data, truth = generate_log(SyntheticConfig(n_rows=40_000, n_actions=8, n_positions=2, seed=5))
    split = split_log(data)
    model = ResponseModel.fit(split.train, split.validation, ResponseModelConfig(progress=False, seed=0))
    return split, truth, model


def _rows(split, truth, model):
    test = split.test
    x, seg, recent, pos = truth.row_inputs(test)
    learned_ctx, learned_recent = model.encode(test)
    true_ctx = np.hstack([x, np.eye(truth.config.n_segments)[seg]])
    return learned_ctx, learned_recent, true_ctx, recent, pos


def test_synthetic_fidelity_within_ten_percent(fitted):
    split, truth, model = fitted
    lc, lr, tc, recent, pos = _rows(split, truth, model)
    n, a = len(pos), truth.config.n_actions
    q_true = TrueResponse(truth).predict(tc, recent, pos)["click"]
    policies = {
        "random": np.full((n, a), 1 / a),
        "greedy on truth": np.eye(a)[q_true.argmax(axis=1)],
        "biased (worst half)": np.where(q_true <= np.median(q_true, axis=1, keepdims=True), 1.0, 0.0),
    }
    policies["biased (worst half)"] /= policies["biased (worst half)"].sum(axis=1, keepdims=True)
    # the learned model and the truth see their own encodings of the same rows
    table = synthetic_fidelity(model.predict(lc, lr, pos)["click"], q_true, policies)
    learned_vals, true_vals = table["simulated"], table["true"]
    for name, p in policies.items():  # against the per-row formula
        assert table.set_index("policy").loc[name, "true"] == pytest.approx(float((p * q_true).sum(axis=1).mean()))
    rel = np.abs(learned_vals.to_numpy() - true_vals.to_numpy()) / true_vals.to_numpy()
    assert np.all(rel < 0.10), rel
    # the greedy policy really is better, so the check is not vacuous
    assert true_vals.iloc[1] > 1.3 * true_vals.iloc[0] > 1.3 * true_vals.iloc[2]


def test_logging_replay_inside_ci(fitted):
    split, truth, model = fitted
    lc, lr, tc, recent, pos = _rows(split, truth, model)
    logging = truth.logging_probabilities(*truth.row_inputs(split.test))
    table = replay_fidelity(model, lc, lr, pos, logging, split.test.reward("click"), "click")
    assert list(table["scope"]) == ["overall", "position 0", "position 1"]
    assert table["inside_ci"].all(), table


def test_replay_detects_a_wrong_simulator(fitted):
    split, truth, model = fitted
    lc, lr, tc, recent, pos = _rows(split, truth, model)

    class Doubled:
        reward_names = ("click",)
        n_actions = model.n_actions

        def predict(self, c, r, p):
            return {"click": np.clip(2 * model.predict(c, r, p)["click"], 0, 1)}

    logging = truth.logging_probabilities(*truth.row_inputs(split.test))
    table = replay_fidelity(Doubled(), lc, lr, pos, logging, split.test.reward("click"), "click")
    assert not table["inside_ci"].any()
