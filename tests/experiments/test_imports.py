"""`pushrl run` needs no serve extra: the CLI and the pipeline import no HTTP stack (fastapi,
uvicorn, httpx); ONNX export is a core dependency (pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_run_imports_no_http_stack() -> None:
    code = ("import sys; import pushrl.experiments.cli, pushrl.experiments.pipeline; "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'httpx', 'starlette') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_onnx_export_is_a_core_dependency_and_serve_is_http_only() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {d.split(">")[0].split("=")[0] for d in project["dependencies"]}
    assert {"onnx", "onnxruntime"} <= core
    serve = {d.split(";")[0].split(">")[0].strip() for d in project["optional-dependencies"]["serve"]}
    # the HTTP stack and its fast event loop, parser and JSON codec; nothing the runtime or the run needs
    assert {"fastapi", "uvicorn", "httpx"} <= serve <= {"fastapi", "uvicorn", "httpx", "orjson", "uvloop", "httptools"}
