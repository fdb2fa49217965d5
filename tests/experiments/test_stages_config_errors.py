"""Each own-log option refuses a wrong value by name, before any model is fitted, in one line (exit 2)."""

from __future__ import annotations

import subprocess
import sys

import pytest

BASE = ["run", "experiment=smoke", "sequential.enabled=false"]


@pytest.mark.parametrize("override, fragment", [
    ("data.no_push_action=nope", "data.no_push_action='nope' is not an action id of the log"),
    ("+objective.guardrails={profit: 0.02}", "objective.guardrails.profit: 'profit' is not a declared reward"),
    ("objective.guardrails={revenue: 2}", "objective.guardrails.revenue: expected a share in [0, 1)"),
    ("data.reward_chain=[click,opened]", "data.reward_chain names ['opened'], which are not declared rewards"),
    ("objective.reward=opened", "objective.reward='opened' is not a declared reward"),
    ("objective.reward=weighted", "objective.reward=weighted needs objective.weights"),
])
def test_bad_own_log_option_is_one_line_naming_the_key(tmp_path, override, fragment):
    out = subprocess.run([sys.executable, "-m", "pushrl.experiments.cli", *BASE, override,
                          f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in out.stderr
    assert not (tmp_path / "synthetic" / "response_model").exists()  # refused before any model was fitted


@pytest.mark.parametrize("kind, demos, on", [("file", None, False), ("obd", None, True), ("hillstrom", None, True),
                                             ("synthetic", None, True), ("file", True, True), ("obd", False, False)])
def test_demos_run_on_the_showcase_only_unless_asked(kind, demos, on):
    from omegaconf import OmegaConf

    from pushrl.experiments.stages import _demos_on

    assert _demos_on(OmegaConf.create({"demos": demos, "data": {"kind": kind}})) is on
