"""The README's own-log tutorial (section 0), run command by command as a new user would.

The commands are read from the README itself, so the tutorial cannot drift from what is tested. The
default run appends a small overlay (fewer rows, the smoke budgets) to keep it within a minute; the slow
variant runs the commands verbatim.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
FAST = {"example": ["--rows", "8000"],
        "run": ["progress=false", "model.epochs=5", "train.online_rounds=1000", "train.batch_size=250",
                "eval.n_bootstrap=50", "eval.selection_seeds=5", "sequential.n_users=300", "sequential.ppo_timesteps=2000",
                "sequential.n_envs=16", "sequential.ppo_n_steps=16", "sequential.bandit_days=10",
                "sequential.bandit_users=32", "sequential.eval_users=100", "sequential.eval_seeds=2",
                "sequential.lambdas=[0.0,1.0]"]}


def tutorial_commands() -> list[list[str]]:
    """The shell commands of the README's "### 0." block (continuations joined, comments dropped)."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"### 0\..*?```bash\n(.*?)```", text, re.S)
    assert block, "README has no section 0 with a bash block"
    joined = block.group(1).replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pushrl(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pushrl.experiments.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=1800)


def _serve_and_decide(args: list[str], cwd: Path) -> dict:
    """Start `pushrl serve ...` on a free loopback port, ask one decision, stop it."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pushrl.experiments.cli", *args, "--port", str(port)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        manifest = json.loads(urllib.request.urlopen(url + "/v1/policy", timeout=5).read())
        log = (cwd / "shop" / "push_log.csv").read_text().splitlines()
        header, first = log[0].split(","), log[1].split(",")
        row = dict(zip(header, first, strict=True))
        numeric = {k: float(v) for k, v in row.items() if re.fullmatch(r"-?[0-9.]+", v)}
        context = {k: numeric.get(k, row[k]) for k in manifest["input_fields"]}
        body = json.dumps({"requests": [{"request_id": "t-1", "context": context}]}).encode()
        req = urllib.request.Request(url + "/v1/decide", data=body, headers={"content-type": "application/json"})
        return json.loads(urllib.request.urlopen(req, timeout=5).read())
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _follow(tmp_path: Path, fast: bool) -> Path:
    report = None
    for cmd in tutorial_commands():
        program, *args = cmd
        if program == "less":
            report = tmp_path / args[0]
            continue
        assert program == ".venv/bin/pushrl", cmd
        if args[0] == "serve":
            folder = tmp_path / args[1]
            if not folder.exists():  # logging stays: the tutorial says to serve the candidate instead
                args = ["serve", str(folder.parent / "candidate_artifact"), *args[2:]]
            answer = _serve_and_decide(args, tmp_path)
            decision = answer["decisions"][0]
            assert decision["request_id"] == "t-1" and len(decision["actions"]) >= 1
            assert 0 < decision["propensities"][0] <= 1
            continue
        extra = FAST.get(args[0] if args[0] != "data" else args[1], []) if fast else []
        out = _pushrl([*args, *extra], tmp_path)
        assert out.returncode == 0, (cmd, out.stderr[-3000:])
    assert report is not None and report.exists()
    return report


def test_readme_own_log_tutorial_fast(tmp_path):
    report = _follow(tmp_path, fast=True).read_text()
    assert "which policy to ship" in report and "**Ship:" in report
    assert "uplift over sending nothing" in report  # the declared no-push action is used


@pytest.mark.slow
def test_readme_own_log_tutorial_verbatim(tmp_path):
    report = _follow(tmp_path, fast=False).read_text()
    assert "which policy to ship" in report and "guardrail" in report
