"""schemathesis against the live server: 0 server errors, 0 responses outside the declared schema (slow).

The OpenAPI document is typed from the served artifact (context fields, categories as enums, action ids),
so the generated requests reach real decisions, not only 4xx answers. Runs the schemathesis CLI (the
`test` extra) against `serve_in_thread`, with a small example budget (well under two minutes).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pushrl.agents.export import linear_onnx
from pushrl.envs.data.features import ContextEncoder
from pushrl.policies.artifact import BusinessRules, Exploration, Manifest, write_artifact
from pushrl.policies.serving.http import create_app, serve_in_thread

ACTIONS = ("No E-Mail", "Mens E-Mail", "Womens E-Mail")
ENCODER = ContextEncoder(("recency", "history"), (6.0, 240.0), (3.5, 250.0), ("channel",),
                         {"channel": ("Multichannel", "Phone", "Web")})
TOKEN = "t0ken-for-the-schemathesis-run-0123"
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


def _schemathesis() -> str:
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("schemathesis is not installed (the `test` extra)")
    return exe


def _artifact(folder: Path, slate_size: int = 2, cap: int | None = None) -> Path:
    weight = np.random.default_rng(0).normal(size=(3, ENCODER.n_features))
    manifest = Manifest(policy_kind="linear", encoder=ENCODER, action_ids=ACTIONS, no_push_action="No E-Mail",
                        exploration=Exploration("epsilon", 0.1), slate_size=slate_size,
                        business_rules=BusinessRules(frequency_cap=cap))
    return write_artifact(folder, linear_onnx(weight), manifest)


def _run(exe: str, url: str, report: Path, *extra: str) -> tuple[int, str, dict]:
    cmd = [exe, "run", f"{url}/openapi.json", "--checks", CHECKS, "--max-examples", "60", "--seed", "1",
           "--phases", "examples,coverage,fuzzing", "--workers", "1", "--request-timeout", "10",
           "--report", "ndjson", "--report-ndjson-path", str(report), "--no-color", *extra]
    # run in the report's folder: schemathesis keeps its .schemathesis/ cache in the working directory
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=150, check=False, cwd=report.parent)
    statuses: dict[int, int] = {}
    for line in report.read_text(encoding="utf-8").splitlines() if report.exists() else []:
        for code in _status_codes(json.loads(line)):
            statuses[code] = statuses.get(code, 0) + 1
    return done.returncode, done.stdout + done.stderr, statuses


def _status_codes(node: object) -> list[int]:
    """Every `status_code` of a response in one ndjson event (whatever its nesting)."""
    out: list[int] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            code = item.get("status_code")
            if isinstance(code, int) and 100 <= code < 600:
                out.append(code)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("cap", "admin"), [(None, False), (2, False), (None, True)],
                         ids=["plain", "frequency-cap", "admin"])
def test_schemathesis_finds_no_server_error_and_no_spec_violation(tmp_path: Path, cap: int | None,
                                                                  admin: bool) -> None:
    exe = _schemathesis()
    artifact = _artifact(tmp_path / "root" / "a", cap=cap)
    app = create_app(artifact, seed=0, decision_log=tmp_path / "log", admin_token=TOKEN if admin else None)
    auth = ["--header", f"Authorization: Bearer {TOKEN}"] if admin else []
    with serve_in_thread(app) as url:
        code, output, statuses = _run(exe, url, tmp_path / "events.ndjson", *auth)
    assert code == 0, output[-4000:]
    assert not any(s >= 500 for s in statuses), statuses
    assert statuses.get(200, 0) > 0, f"no generated call reached a decision: {statuses}\n{output[-2000:]}"


def test_the_status_codes_of_an_event_are_found_at_any_depth() -> None:
    event = {"a": {"response": {"status_code": 200}}, "b": [{"status_code": 503}, {"status_code": "x"}]}
    assert sorted(_status_codes(event)) == [200, 503]
