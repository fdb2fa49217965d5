"""The serving runtime imports numpy and onnxruntime, never torch, gymnasium or stable-baselines3.

Checked in a fresh interpreter, so nothing an earlier test imported can hide an import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "gymnasium", "stable_baselines3", "hydra", "omegaconf", "pushrl.envs.sim",
         "pushrl.envs.model", "pushrl.agents", "pushrl.experiments")


@pytest.mark.parametrize("module", ["pushrl.policies.serving.runtime", "pushrl.policies.serving.http",
                                    "pushrl.policies.serving.decision_log", "pushrl.policies.artifact"])
def test_serving_module_imports_nothing_heavy(module: str) -> None:
    code = (f"import sys, json; import {module}; "
            f"print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_runtime_really_imports_onnxruntime_and_numpy() -> None:
    """The check above is not vacuous: the runtime does load its own dependencies."""
    code = ("import sys; import pushrl.policies.serving.runtime; "
            "print('onnxruntime' in sys.modules, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]
