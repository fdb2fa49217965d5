"""One policy, every estimator: the evaluation.json document and the not-identified path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pushrl.envs.data.synthetic import SyntheticConfig, generate_log
from pushrl.policies.evaluation import ESTIMATOR_KEYS, evaluate_policy
from pushrl.policies.policy import to_action_dist


@pytest.fixture(scope="module")
def log():
    data, truth = generate_log(SyntheticConfig(n_rows=20_000, n_positions=2, seed=11))
    q = truth.expected_rewards_for(data)
    return data, truth, q


def _evaluate(data, q, probs, **kw):
    return evaluate_policy(policy="p", data=data.name, split="all", action_dist=to_action_dist(probs, 2),
                           reward=data.reward(), action=data.action, pscore=data.pscore, position=data.position,
                           estimated_rewards=q, n_bootstrap=100, seed=0, **kw)


def test_document_has_exactly_the_documented_keys(log):
    data, truth, q = log
    probs = np.eye(data.n_actions)[q[:, :, 0].argmax(axis=1)]
    ev = _evaluate(data, q, probs)
    doc = json.loads(json.dumps(ev.to_json()))
    assert set(doc["estimates"]) == set(ESTIMATOR_KEYS)
    for key in ("data", "split", "n_rounds", "logging_policy_value", "recommended_estimator", "diagnostics"):
        assert key in doc
    assert set(doc["diagnostics"]) >= {"ess", "max_weight", "low_support_mass"}
    true_value = truth.policy_value(data, to_action_dist(probs, 2))
    for k in ("ips", "dr", "snips"):
        e = doc["estimates"][k]
        assert e["ci_low"] <= e["value"] <= e["ci_high"]
        assert e["ci_low"] - 0.01 <= true_value <= e["ci_high"] + 0.01
    logging_mean = data.reward().mean()
    assert doc["logging_policy_value"]["value"] == pytest.approx(logging_mean)
    assert ev.lift("ips") == pytest.approx((doc["estimates"]["ips"]["value"] - logging_mean) / logging_mean)


def test_not_identified_reports_dm_only(log):
    data, _, q = log
    probs = np.full((data.n_rounds, data.n_actions), 1 / data.n_actions)
    ev = _evaluate(data, q, probs, identified=False)
    doc = ev.to_json()
    assert list(doc["estimates"]) == ["dm"] and doc["identified"] is False
    assert doc["recommended_estimator"] == "dm"
    assert any("not identified" in n for n in doc["notes"])
