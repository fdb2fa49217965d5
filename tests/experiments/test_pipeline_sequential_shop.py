"""`pushrl run data=synthetic_sequential`: the own-log path on a repeat-user log with unsubscribes learns its
timing (`<key>/dynamics/source` = learned, the multipliers and churn close to the truth's) and reports the
DP optimum (`<key>/sequential/optimum/reward_per_user`)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from pushrl.envs.data.synthetic import SyntheticConfig, make_truth
from tests.experiments.test_pipeline_minimal_log import BUDGET

KEY = "synthetic_sequential"


def _run(tmp_path, *overrides: str) -> dict:
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "pushrl.experiments.cli", "run", f"data={KEY}", "also=[]",
                          "demos=false", "skip=[uplift,budget,abtest,refits]", *BUDGET, *overrides,
                          f"hydra.run.dir={run}"], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads((run / "metrics.json").read_text())


def _check(metrics: dict, rel: float) -> None:
    assert metrics[f"{KEY}/dynamics/source"] == "learned"
    assert metrics[f"{KEY}/dynamics/fatigue_source"] == metrics[f"{KEY}/dynamics/churn_source"] == "learned"
    optimum = metrics[f"{KEY}/sequential/optimum/reward_per_user"]
    never = metrics[f"{KEY}/sequential/agents/never_push/reward_per_user"]
    assert optimum >= never  # the optimum may push nothing, so it earns at least that
    assert metrics[f"{KEY}/sequential/optimum/exact"] is True
    # the preset's truth (configs/data/synthetic_sequential.yaml): churn sigmoid(-4.5 + 0.5 r + 0.3 u0)
    truth = make_truth(SyntheticConfig(n_users=1500, n_actions=6, no_push=True, readable_promotions=True,
                                       organic_conversion=0.1, fatigue=0.3, churn_logit=-4.5, churn_slope=0.5,
                                       churn_context=0.3))
    # the truth over all its users; the run averages over its pool (training rows), close to that
    churn = truth.true_unsubscribe_probabilities(truth.user_features, 2)
    fatigue = truth.true_fatigue_multipliers(truth.user_features, truth.user_segment, 2, {"conversion": 1.0})
    for r in range(3):
        learned = metrics[f"{KEY}/dynamics/unsubscribe_probability/{r}"]
        assert abs(learned - churn[r]) < rel * churn[r], (r, learned, churn[r])
        learned = metrics[f"{KEY}/dynamics/fatigue_multiplier/{r}"]
        assert abs(learned - fatigue[r]) < rel * fatigue[r], (r, learned, fatigue[r])
    assert fatigue[2] < 0.8  # not vacuous: the truth's fatigue is far from none


def test_run_on_the_sequential_shop_learns_its_timing_and_reports_the_optimum(tmp_path):
    metrics = _run(tmp_path)
    _check(metrics, rel=0.15)
    # the timing agents are valued on the log's own user trajectories too (per-decision IS and DR)
    for agent in ("greedy_myopic", "never_push", "ppo"):
        for est in ("pdis", "wpdis", "pddr", "wdr"):
            value = metrics[f"{KEY}/sequential/trajectory_ope/{agent}/{est}/value"]
            low, high = (metrics[f"{KEY}/sequential/trajectory_ope/{agent}/{est}/ci_{s}"] for s in ("low", "high"))
            assert not np.isfinite(value) or low <= value <= high, (agent, est)
    assert f"{KEY}/sequential/trajectory_ope/optimum/pdis/value" not in metrics  # stateful: not scored on the log
    report = (tmp_path / "run" / "report.md").read_text()
    assert "on the log's own trajectories (trajectory OPE)" in report
