"""`pushrl evaluate` exactly as documented, against the Open Bandit Pipeline on the real OBD sample."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pushrl.envs.data.obd import obd_files
from pushrl.envs.data.paths import data_root

ESTIMATORS = {"dm", "ips", "snips", "dr", "sndr", "switch-dr", "dr-os"}


def _pushrl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pushrl.experiments.cli", *args], capture_output=True, text=True, timeout=300)


def _obp_feedback(campaign: str) -> dict:
    """What obp's OpenBanditDataset.obtain_batch_bandit_feedback builds (its loader fails on pandas 3)."""
    log_path, _ = obd_files(campaign)
    raw = pd.read_csv(log_path, index_col=0).sort_values("timestamp")
    return {
        "n_rounds": len(raw),
        "n_actions": int(raw["item_id"].max()) + 1,
        "action": raw["item_id"].to_numpy(),
        "position": raw["position"].to_numpy() - 1,
        "reward": raw["click"].to_numpy(),
        "pscore": raw["propensity_score"].to_numpy(),
        "context": np.zeros((len(raw), 1)),
    }


@pytest.mark.parametrize("campaign", ["all", "men"])
def test_exact_command_agrees_with_obp(tmp_path, campaign):
    obp_ope = pytest.importorskip("obp.ope")
    feedback = _obp_feedback(campaign)
    rng = np.random.default_rng(1)
    dist = rng.dirichlet(np.ones(feedback["n_actions"]), size=(feedback["n_rounds"], 3)).transpose(0, 2, 1)
    np.save(tmp_path / "policy.npy", dist)
    out = _pushrl("evaluate", f"data=obd_{campaign}", "policy=external", f"policy.path={tmp_path / 'policy.npy'}",
                  "eval.split=all", f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 0, out.stderr[-3000:]
    path = out.stdout.strip().splitlines()[-1]
    assert path.endswith("evaluation.json")
    doc = json.loads(open(path).read())
    assert set(doc["estimates"]) == ESTIMATORS
    assert doc["split"] == "all" and doc["n_rounds"] == feedback["n_rounds"]
    ope = obp_ope.OffPolicyEvaluation(
        bandit_feedback=feedback,
        ope_estimators=[obp_ope.InverseProbabilityWeighting(), obp_ope.SelfNormalizedInverseProbabilityWeighting()],
    )
    ref = ope.estimate_policy_values(action_dist=dist)
    assert doc["estimates"]["ips"]["value"] == pytest.approx(ref["ipw"], rel=1e-9)
    assert doc["estimates"]["snips"]["value"] == pytest.approx(ref["snipw"], rel=1e-9)
    assert doc["logging_policy_value"]["value"] == pytest.approx(feedback["reward"].mean(), rel=1e-12)


def test_context_free_policy_and_test_split(tmp_path):
    dist = np.full((1, 80, 3), 1 / 80)
    np.save(tmp_path / "uniform.npy", dist)
    out = _pushrl("evaluate", "data=obd_all", "policy=external", f"policy.path={tmp_path / 'uniform.npy'}",
                  f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert doc["split"] == "test" and doc["n_rounds"] == 1500
    # the uniform policy on a uniform log: IPS is exactly the on-policy mean
    assert doc["estimates"]["ips"]["value"] == pytest.approx(doc["logging_policy_value"]["value"], rel=1e-12)


def test_always_x_on_hillstrom_is_the_group_mean(tmp_path):
    out = _pushrl("evaluate", "data=hillstrom", "policy=always", "policy.action=Mens E-Mail", "eval.split=all",
                  f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    raw = pd.read_csv(data_root() / "hillstrom" / "hillstrom.csv")
    group = raw.loc[raw["segment"] == "Mens E-Mail", "conversion"].mean()
    share = (raw["segment"] == "Mens E-Mail").mean()
    # IPS with propensity 1/3 is the group mean times (group share × 3); SNIPS is the group mean exactly
    assert doc["estimates"]["snips"]["value"] == pytest.approx(group, abs=1e-12)
    assert doc["estimates"]["ips"]["value"] == pytest.approx(group * share * 3, abs=1e-12)


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda: np.full((10, 80, 3), 1 / 80), r"has shape \(10, 80, 3\); expected \(10000, 80, 3\)"),
        (lambda: np.full((1, 80, 3), 1 / 79), r"sums to"),
        (lambda: -np.full((1, 80, 3), 1 / 80), r">= 0"),
    ],
)
def test_bad_policy_file_is_refused_with_its_name(tmp_path, make, fragment):
    np.save(tmp_path / "bad.npy", make())
    out = _pushrl("evaluate", "data=obd_all", "policy=external", f"policy.path={tmp_path / 'bad.npy'}",
                  "eval.split=all", f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode != 0
    assert "bad.npy" in out.stderr
    assert re.search(fragment, out.stderr), out.stderr[-1500:]
    assert not (tmp_path / "run" / "evaluation.json").exists()


def test_evaluate_an_exported_artifact_equals_its_in_process_policy(tmp_path):
    from pushrl.agents.bandits import make_bandit
    from pushrl.agents.export_policies import export_policy
    from pushrl.envs.data.features import ContextEncoder
    from pushrl.envs.data.hillstrom import CATEGORICAL, NUMERIC, load_hillstrom
    from pushrl.policies.evaluation import evaluate_policy
    from pushrl.policies.ope import cross_fit_mean_rewards

    data = load_hillstrom()
    enc = ContextEncoder.fit(data.frame, NUMERIC, CATEGORICAL)
    x = np.hstack([enc.transform(data.frame), np.ones((data.n_rounds, 1))])
    bandit = make_bandit("softmax", n_actions=3, n_features=x.shape[1], temperature=0.01, seed=0)
    bandit.update(x, data.action, data.reward("conversion"))
    folder = export_policy(bandit, "softmax", enc, data.action_ids, tmp_path / "artifact", parity_rows=1000)
    out = _pushrl("evaluate", "data=hillstrom", "policy=artifact", f"policy.path={folder}", "eval.split=all",
                  "eval.recommended=ips", f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    probs = bandit.action_probabilities(x)[:, :, None]
    q = cross_fit_mean_rewards(data.reward("conversion"), data.action, data.position, 3, 1, n_folds=5, seed=0)
    ref = evaluate_policy(policy="p", data="d", split="all", action_dist=probs, reward=data.reward("conversion"),
                          action=data.action, pscore=data.pscore, position=data.position, estimated_rewards=q,
                          recommended="ips", n_bootstrap=10, seed=0)
    assert doc["estimates"]["ips"]["value"] == pytest.approx(ref.estimates["ips"].value, rel=1e-5)


def test_estimated_propensities_are_stated_and_close_to_logged(tmp_path):
    out = _pushrl("evaluate", "data=hillstrom", "data.propensity=estimate", "policy=always", "policy.action=Mens E-Mail",
                  "eval.split=all", "eval.recommended=ips", f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert doc["propensities"] == "estimated"
    assert any("propensities estimated" in n for n in doc["notes"])
    assert (tmp_path / "run" / "hillstrom" / "propensity_reliability.png").exists()
    assert (tmp_path / "run" / "weights.png").exists()
    logged = _pushrl("evaluate", "data=hillstrom", "policy=always", "policy.action=Mens E-Mail", "eval.split=all",
                     "eval.recommended=ips", f"hydra.run.dir={tmp_path / 'logged'}")
    assert logged.returncode == 0, logged.stderr[-2000:]
    ref = json.loads((tmp_path / "logged" / "evaluation.json").read_text())
    assert ref["propensities"] == "logged"
    e, r = doc["estimates"]["ips"], ref["estimates"]["ips"]
    assert r["ci_low"] <= e["value"] <= r["ci_high"]  # the randomised design is recovered


def test_propensity_clipping_and_trimming_are_options_and_reported(tmp_path):
    out = _pushrl("evaluate", "data=hillstrom", "data.propensity=estimate", "propensity_model.clip=0.34",
                  "propensity_model.n_folds=3", "policy=uniform", "eval.split=all", "eval.recommended=ips",
                  f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    est = json.loads((tmp_path / "run" / "hillstrom" / "propensity_estimate.json").read_text())
    assert est["n_clipped"] > 0 and any("clipped at 0.34" in n for n in doc["notes"])
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| estimator (estimated propensities) |" in report
    bad = _pushrl("evaluate", "data=hillstrom", "data.propensity=estimate", "propensity_model.trim=1.5",
                  "policy=uniform", f"hydra.run.dir={tmp_path / 'bad'}")
    assert bad.returncode != 0 and "PropensityConfig.trim must be in [0, 1)" in bad.stderr


def test_deterministic_log_is_refused_for_ips_but_reports_dm_and_simulator(tmp_path):
    from pushrl.envs.data.loaders import save_log
    from pushrl.envs.data.synthetic import SyntheticConfig, catalogue_frame, generate_log

    data, truth = generate_log(SyntheticConfig(n_rows=4000, logging="deterministic", seed=3))
    save_log(data, tmp_path / "log.parquet")
    catalogue_frame(truth).to_csv(tmp_path / "catalogue.csv", index=False)
    out = _pushrl("evaluate", "data=custom", f"data.path={tmp_path / 'log.parquet'}",
                  f"data.catalogue={tmp_path / 'catalogue.csv'}", "policy=uniform", f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert doc["identified"] is False and list(doc["estimates"]) == ["dm"]
    assert "deterministic" in doc["why_not_identified"] and "What to do" in doc["why_not_identified"]
    assert 0 < doc["simulator_value"] < 1
