"""The `pushrl` command end to end on tiny configs (seconds)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from pushrl.policies.serving.runtime import PolicyRuntime


def _pushrl(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pushrl.experiments.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


TINY = ["experiment=smoke"]


def test_run_on_synthetic_writes_run_folder(tmp_path):
    out = _pushrl("run", *TINY, f"hydra.run.dir={tmp_path}/run")
    assert out.returncode == 0, out.stderr[-2000:]
    run = tmp_path / "run"
    for name in ("report.md", "metrics.json", "metrics.csv", ".hydra/config.yaml", "data/description.json",
                 "synthetic/ope.csv", "synthetic/ope.png", "synthetic/fidelity.png", "synthetic/reliability.png",
                 "synthetic/learning_curves.png", "synthetic/evaluations/linucb.json", "synthetic/response_model/schema.json"):
        assert (run / name).exists(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["synthetic/data/rows"] == 3000
    assert metrics["synthetic/chosen"] in {"uniform", "most_popular", "logging", "epsilon_greedy", "softmax", "linucb", "lints"}
    evaluation = json.loads((run / "synthetic/evaluations/linucb.json").read_text())
    assert set(evaluation["estimates"]) == {"dm", "ips", "snips", "dr", "sndr", "switch-dr", "dr-os"}
    report = (run / "report.md").read_text()
    assert "which policy to ship" in report and "**Ship:" in report
    assert "online A/B test that would confirm" in report and (run / "synthetic/power.png").exists()
    assert (run / "synthetic/sequential/sequential.csv").exists() and (run / "synthetic/sequential/pareto.png").exists()
    assert any(k.startswith("synthetic/sequential/agents/") for k in metrics)
    assert metrics["synthetic/abtest/users_control"] > 0
    assert str(run) in out.stdout


@pytest.mark.slow  # the default run checks reproduction in test_rerun_in_the_same_folder_resumes_and_reproduces
def test_run_is_reproducible(tmp_path):
    for name in ("a", "b"):
        out = _pushrl("run", *TINY, "agents=baselines", f"hydra.run.dir={tmp_path}/{name}")
        assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "a/metrics.json").read_text() == (tmp_path / "b/metrics.json").read_text()


def test_unknown_agent_fails_before_work(tmp_path):
    out = _pushrl("run", *TINY, "+agents.ucb9000={}", f"hydra.run.dir={tmp_path}/x")
    assert out.returncode != 0 and "ucb9000" in out.stderr
    assert not (tmp_path / "x" / "synthetic").exists()


def test_same_config_same_metrics(tmp_path):
    for name in ("a", "b"):
        out = _pushrl("describe", "data=synthetic", "data.n_rows=1000", "seed=3", f"hydra.run.dir={tmp_path}/{name}")
        assert out.returncode == 0, out.stderr[-2000:]
    assert (tmp_path / "a/metrics.json").read_text() == (tmp_path / "b/metrics.json").read_text()


def test_mistyped_override_fails_fast_naming_the_key(tmp_path):
    out = _pushrl("run", "data.campain=men", f"hydra.run.dir={tmp_path}/x")
    assert out.returncode != 0
    assert "campain" in out.stderr and "DataConfig" in out.stderr
    assert not (tmp_path / "x" / "report.md").exists()


def test_wrong_type_fails_fast(tmp_path):
    out = _pushrl("run", "seed=abc", f"hydra.run.dir={tmp_path}/x")
    assert out.returncode != 0 and "seed" in out.stderr


def test_unknown_command():
    out = _pushrl("frobnicate")
    assert out.returncode == 2 and "unknown command" in out.stderr


def test_rerun_in_the_same_folder_resumes_and_reproduces(tmp_path):
    first = _pushrl("run", *TINY, f"hydra.run.dir={tmp_path}/run")
    assert first.returncode == 0, first.stderr[-2000:]
    metrics = (tmp_path / "run/metrics.json").read_text()
    again = _pushrl("run", *TINY, f"hydra.run.dir={tmp_path}/run")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "reusing the response model" in again.stdout
    assert (tmp_path / "run/metrics.json").read_text() == metrics


def test_fit_train_export_entry_points(tmp_path):
    fit = _pushrl("fit", *TINY, f"hydra.run.dir={tmp_path}/fit")
    assert fit.returncode == 0, fit.stderr[-2000:]
    report = (tmp_path / "fit/report.md").read_text()
    assert "response model" in report and "which policy to ship" not in report
    train = _pushrl("train", *TINY, f"hydra.run.dir={tmp_path}/train")
    assert train.returncode == 0, train.stderr[-2000:]
    assert (tmp_path / "train/synthetic/agents/agents.json").exists()
    assert not (tmp_path / "train/synthetic/artifact").exists()
    export = _pushrl("export", "experiment=smoke", f"export.run_dir={tmp_path}/train/synthetic", "export.agent=linucb",
                     f"hydra.run.dir={tmp_path}/export")
    assert export.returncode == 0, export.stderr[-2000:]
    manifest = json.loads((tmp_path / "export/artifact/manifest.json").read_text())
    assert manifest["policy_kind"] == "linucb"
    shared = _pushrl("export", "experiment=smoke", f"export.run_dir={tmp_path}/train/synthetic",
                     "export.agent=linucb_shared", f"hydra.run.dir={tmp_path}/export_shared")
    assert shared.returncode == 0, shared.stderr[-2000:]
    runtime = PolicyRuntime.load(tmp_path / "export_shared/artifact", seed=0)
    assert runtime.manifest.schema_version == 2 and runtime.action_ids == list(range(10))
    promotions = runtime.catalogue[:3] + [{"id": 99, "features": {**runtime.catalogue[0]["features"], "f0": 2.5}}]
    updated = runtime.with_catalogue(promotions)  # a new promotion, scored by the exported model as is
    assert updated.action_ids == [0, 1, 2, 99]
    assert updated.decide([{"request_id": "r", "context": {"u0": 0.1, "u1": 0.2, "u2": 0.3, "u3": 0.4,
                                                           "segment": "s0"}}])[0].actions[0] in updated.action_ids
    bad = _pushrl("export", "experiment=smoke", f"export.run_dir={tmp_path}/train/synthetic", "export.agent=nope",
                  f"hydra.run.dir={tmp_path}/export2")
    assert bad.returncode != 0 and "saved agents" in bad.stderr
