"""`pushrl run` on logs like a shop's own, against the synthetic truth that generated them.

Two shops from the project's generator, both with a no-push action, organic purchases (conversions
without a click), repeat users and named promotions:
- logged by a softmax over a business rule (propensities about 0.03-0.5): the run must ship a policy
  whose TRUE conversion value is at least the logging policy's, and its best learned candidate must
  be at least 10% above logging (the truth allows it: the best per-context action is about +100%);
- logged by the deterministic rule (propensity 1): the effect of any other policy is not identified,
  so the run ships nothing new, labels DM and the simulator model-only, and still writes its report.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pushrl.envs.data.split import split_indices
from pushrl.envs.data.synthetic import SyntheticConfig, generate_log
from pushrl.policies.serving.runtime import PolicyRuntime

SHOP = dict(n_rows=20_000, n_users=3_000, n_actions=11, no_push=True, organic_conversion=0.1,
            readable_promotions=True)
FAST = ["experiment=smoke", "data.reward_chain=[]", "data.no_push_action=no_push", "objective=conversion",
        "model.epochs=10", "train.online_rounds=5000", "eval.n_bootstrap=2000"]


def _run(tmp_path, logging: str, *extra: str):
    overrides = [*FAST, *(f"data.{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in SHOP.items()),
                 f"data.logging={logging}", *extra, f"hydra.run.dir={tmp_path}"]
    out = subprocess.run([sys.executable, "-m", "pushrl.experiments.cli", "run", *overrides], capture_output=True,
                         text=True, timeout=900)
    return out, tmp_path


def _true_value(truth, data, rows, probs: np.ndarray) -> float:
    """True expected conversion of a policy with (len(rows), A) probabilities on the log's rows."""
    sub = data.subset(rows)
    return truth.policy_value(sub, np.repeat(probs[:, :, None], data.n_positions, axis=2), "conversion")


def _artifact_probs(folder, data, rows) -> np.ndarray:
    runtime = PolicyRuntime.load(folder, seed=0)
    contexts = data.frame.iloc[rows][runtime.manifest.encoder.input_fields].to_dict(orient="records")
    return runtime.action_probabilities(runtime.encode(contexts))


@pytest.fixture(scope="module")
def softmax_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("business_rule"), "business_rule")


def test_business_rule_log_runs_end_to_end_and_ships_no_worse_than_logging(softmax_run):
    out, run = softmax_run
    assert out.returncode == 0, out.stderr[-3000:]
    data, truth = generate_log(SyntheticConfig(**SHOP, logging="business_rule", seed=0))
    rows = split_indices(data, (0.7, 0.15, 0.15), seed=0)[2]
    sub = data.subset(rows)
    x, seg, recent, pos = truth.row_inputs(sub)
    logging_true = _true_value(truth, data, rows, truth.logging_probabilities(x, seg, recent, pos))
    metrics = json.loads((run / "metrics.json").read_text())
    chosen = metrics["synthetic/chosen"]
    shipped_true = logging_true
    if (run / "synthetic/artifact").exists():
        shipped_true = _true_value(truth, data, rows, _artifact_probs(run / "synthetic/artifact", data, rows))
    assert shipped_true >= logging_true, (chosen, shipped_true, logging_true)
    # the best learned candidate: the shipped artifact itself, or the candidate beside it
    folder = run / "synthetic/candidate_artifact"
    best = folder if folder.exists() else run / "synthetic/artifact"
    best_true = _true_value(truth, data, rows, _artifact_probs(best, data, rows))
    assert best_true >= 1.10 * logging_true, (best_true, logging_true)
    report = (run / "report.md").read_text()
    # every declared reward beside the objective; the no-push uplift analysis; no demos on a user's path
    assert "click (" in report and "revenue (" in report and "uplift over sending nothing" in report
    assert "logging (on-policy)" in report


@pytest.mark.parametrize("propensity", ["propensity", "estimate"])
def test_deterministic_rule_log_ships_nothing_new_and_says_why(tmp_path, propensity):
    out, run = _run(tmp_path, "rule", f"data.propensity={propensity}")
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["synthetic/chosen"] == "logging"
    identified = {k: v for k, v in metrics.items() if k.startswith("synthetic/identified/")}
    assert len(identified) >= 5 and not any(identified.values()), identified
    report = (run / "report.md").read_text()
    assert "Not identified" in report and "model-only" in report and "keep the logging policy" in report
    assert not (run / "synthetic/artifact").exists()


def test_run_intervals_cover_the_true_values(softmax_run):
    """Item 7 at the run level: DM's and the simulator's 95% intervals, as the run reports them, cover the true value
    of at least 90% of the run's own policies (their served probabilities), on this one shop.

    The recommended estimator's misses are correlated within one test split (every policy shares its rows), so
    its >= 90% bar is asserted pooled over shops in tests/envs/model/test_model_uncertainty.py; here it must still cover
    most policies (on this shop SNIPS misses at most the one or two best, whose truth sits just above the CI)."""
    import pandas as pd

    from pushrl.agents.export_policies import served_policy
    from pushrl.agents.training import load_agent, with_intercept
    from pushrl.envs.model.response_model import ResponseModel

    out, run = softmax_run
    assert out.returncode == 0, out.stderr[-3000:]
    folder = run / "synthetic"
    data, truth = generate_log(SyntheticConfig(**SHOP, logging="business_rule", seed=0))
    rows = split_indices(data, (0.7, 0.15, 0.15), seed=0)[2]
    x, _ = ResponseModel.load(folder / "response_model").encode(data.subset(rows))
    simulator = pd.read_csv(folder / "simulator.csv", index_col=0)
    covered = {"dm": [], "recommended": [], "simulator": []}
    for name in json.loads((folder / "agents" / "agents.json").read_text())["agents"]:
        probs = served_policy(load_agent(folder / "agents", name)).action_probabilities(with_intercept(x))
        true = _true_value(truth, data, rows, probs)
        ev = json.loads((folder / "evaluations" / f"{name}.json").read_text())
        for kind, iv in (("dm", ev["estimates"]["dm"]), ("recommended", ev["estimates"][ev["recommended_estimator"]]),
                         ("simulator", simulator.loc[name])):
            covered[kind].append(iv["ci_low"] <= true <= iv["ci_high"])
    assert len(covered["dm"]) >= 6
    for kind in ("dm", "simulator"):
        assert np.mean(covered[kind]) >= 0.9, (kind, covered[kind])
    assert np.mean(covered["recommended"]) >= 0.7, covered["recommended"]
