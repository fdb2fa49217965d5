"""A bare own log: no propensity column (estimated), no catalogue, no timestamp, no user id, integer-coded
categories, as a shop's old system might have logged it; `pushrl run` still goes end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd

from pushrl.envs.data.example_log import write_example_log

BUDGET = ["progress=false", "model.epochs=5", "train.online_rounds=1000", "train.batch_size=250", "eval.n_bootstrap=50",
          "eval.selection_seeds=5", "eval.model_refits=2", "sequential.n_users=300", "sequential.ppo_timesteps=2000",
          "sequential.n_envs=16", "sequential.ppo_n_steps=16", "sequential.bandit_days=10", "sequential.bandit_users=32",
          "sequential.eval_users=100", "sequential.eval_seeds=2", "sequential.lambdas=[0.0,1.0]"]


def test_log_without_propensities_catalogue_or_time_runs_end_to_end(tmp_path):
    log, _ = write_example_log(tmp_path / "src", n_rows=8000, seed=1)
    frame = pd.read_csv(log).drop(columns=["propensity", "timestamp", "user_id"])
    frame["region"] = pd.factorize(frame["region"])[0]  # an integer-coded category
    frame.to_parquet(tmp_path / "bare.parquet")
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "pushrl.experiments.cli", "run", "data=custom",
                          f"data.path={tmp_path / 'bare.parquet'}", "data.propensity=estimate",
                          "data.rewards=[click,conversion,revenue]", "data.categorical=[region]",
                          "data.no_push_action=no_push", "objective.reward=conversion", "also=[]", *BUDGET,
                          f"hydra.run.dir={run}"], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["custom/data/rows"] == 8000 and "custom/chosen" in metrics
    report = (run / "report.md").read_text()
    assert "Propensities estimated" in report
    assert "linucb_shared skipped: they score promotions from catalogue features" in report
    schema = json.loads((run / "custom" / "response_model" / "schema.json").read_text())["feature_schema"]
    assert "region" in schema["context_encoder"]["categorical"] and "region" not in schema["context_encoder"]["numeric"]
