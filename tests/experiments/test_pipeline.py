"""The run's named stages: `skip` leaves out stages no later one needs, refuses the others by name, and a
run that skips them still chooses, reports and says what it left out."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from pushrl.envs.data.example_log import write_example_log
from pushrl.experiments.pipeline import SKIPPABLE_STAGES, STAGE_FUNCTIONS, STAGES, stages_for

FAST = ["progress=false", "model.epochs=3", "train.online_rounds=500", "train.batch_size=250", "eval.n_bootstrap=50",
        "eval.recommended=snips", "also=[]"]


def _cfg(skip: list[str], sequential: bool = True):
    return OmegaConf.create({"skip": skip, "sequential": {"enabled": sequential}})


def test_every_stage_has_a_function_and_skippable_ones_exist() -> None:
    assert set(STAGE_FUNCTIONS) == set(STAGES)
    assert set(SKIPPABLE_STAGES) < set(STAGES)


def test_skip_leaves_out_the_named_stages_in_order() -> None:
    full = stages_for(_cfg([]), None, has_no_push=True)
    assert full == ["fit", "refits", "fidelity", "train", "evaluate", "ship", "export", "report", "abtest",
                    "sequential", "budget", "uplift"]
    assert stages_for(_cfg(["sequential", "refits"]), None, has_no_push=True) == \
        [n for n in full if n not in ("sequential", "refits")]
    assert "budget" not in stages_for(_cfg([]), None, has_no_push=False)
    assert stages_for(_cfg(["abtest"]), "train", has_no_push=True)[-1] == "report"


@pytest.mark.parametrize("name", ["fit", "evaluate", "ship", "report", "nonsense"])
def test_a_stage_others_need_cannot_be_skipped(name: str) -> None:
    with pytest.raises(ValueError, match=r"skip=\[.*\] names stages that cannot be skipped.*skippable stages"):
        stages_for(_cfg([name]), None, has_no_push=True)


def test_a_run_that_skips_every_optional_stage_still_chooses_and_reports(tmp_path) -> None:
    log, catalogue = write_example_log(tmp_path / "src", n_rows=4000, seed=2)
    run = tmp_path / "run"
    out = subprocess.run([sys.executable, "-m", "pushrl.experiments.cli", "run", "data=custom", f"data.path={log}",
                          f"data.catalogue={catalogue}", "data.rewards=[click,conversion,revenue]",
                          "data.no_push_action=no_push", "objective.reward=conversion", *FAST,
                          f"skip=[{','.join(SKIPPABLE_STAGES)}]", f"hydra.run.dir={run}"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert "custom/chosen" in metrics and "custom/simulator/linucb" in metrics
    assert not any(k.startswith(("custom/sequential", "custom/abtest", "custom/budget", "custom/uplift"))
                   for k in metrics)
    assert not (run / "custom" / "artifact").exists()
    assert "export skipped" in (run / "report.md").read_text()


def test_skipping_a_needed_stage_is_one_line_exit_2(tmp_path) -> None:
    log, catalogue = write_example_log(tmp_path / "src", n_rows=2000, seed=3)
    out = subprocess.run([sys.executable, "-m", "pushrl.experiments.cli", "run", "data=custom", f"data.path={log}",
                          f"data.catalogue={catalogue}", "data.rewards=[click,conversion,revenue]", *FAST,
                          "skip=[evaluate]", f"hydra.run.dir={tmp_path / 'run'}"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "skip=['evaluate']" in lines[0] and "skippable stages" in lines[0]
