"""Sweeps on existing engines: a local Ray instance (Hydra Ray launcher) and joblib processes. Slow."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _sweep(tmp_path, launcher: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pushrl.experiments.cli", "-m", "experiment=smoke", "seed=0,1",
                           f"hydra/launcher={launcher}", f"hydra.sweep.dir={tmp_path}/sweep"],
                          capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("launcher, plugin", [("ray_local", "hydra_plugins.hydra_ray_launcher"),
                                              ("joblib_local", "hydra_plugins.hydra_joblib_launcher")])
def test_sweep_runs_every_job_on_the_launcher(tmp_path, launcher, plugin):
    pytest.importorskip(plugin, reason="install the scale extra: pip install -e '.[scale]'")
    out = _sweep(tmp_path, launcher)
    assert out.returncode == 0, out.stderr[-3000:]
    seeds = []
    for job in ("0", "1"):
        metrics = json.loads((tmp_path / "sweep" / job / "metrics.json").read_text())
        assert "synthetic/chosen" in metrics
        seeds.append((tmp_path / "sweep" / job / ".hydra" / "overrides.yaml").read_text())
    assert "seed=0" in seeds[0] and "seed=1" in seeds[1]
