"""GET /metrics over HTTP, latency around /v1/decide, errors by status, strict mode (create_app(strict=True))."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from pushrl.agents.export import linear_onnx
from pushrl.envs.data.features import ContextEncoder
from pushrl.policies.artifact import Exploration, Manifest, write_artifact
from pushrl.policies.serving import http

TRAIN = pd.DataFrame({"recency": [1, 12], "history": [30.0, 3000.0], "channel": ["Web", "Phone"]})
ENCODER = ContextEncoder.fit(TRAIN, ["recency", "history"], ["channel"])
OK = {"recency": 3, "history": 100.0, "channel": "Web"}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    manifest = Manifest(policy_kind="linear", encoder=ENCODER, action_ids=("No E-Mail", "Mens E-Mail"),
                        no_push_action="No E-Mail", exploration=Exploration("epsilon", 0.1))
    weight = np.random.default_rng(0).normal(size=(2, ENCODER.n_features))
    return write_artifact(tmp_path_factory.mktemp("m") / "a", linear_onnx(weight), manifest)


def sample(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{re.escape(name)}{re.escape('{' + want + '}') if want else ''} (\S+)$", text, re.M)
    assert m, f"no {name}{{{want}}} in\n{text}"
    return float(m.group(1))


def test_metrics_endpoint_counts_decisions_ood_errors_and_latency(artifact: Path) -> None:
    with TestClient(http.create_app(artifact, seed=0), raise_server_exceptions=False) as client:
        resp = client.get("/metrics")
        assert resp.status_code == 200 and resp.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert "# TYPE pushrl_request_latency_seconds histogram" in resp.text
        body = {"requests": [{"request_id": "a", "context": OK},
                             {"request_id": "b", "context": {**OK, "channel": "web", "recency": -5}}]}
        out = client.post("/v1/decide", json=body).json()
        assert out["decisions"][1]["ood"] == {"recency": "-5 is below the training range [1, 12]",
                                              "channel": "unknown category 'web' (the known 'Web' differs only in case)"}
        assert client.post("/v1/decide", json={"requests": []}).status_code == 422
        assert client.post("/v1/decide", content=b"{", headers={"content-type": "application/json"}).status_code == 400
        text = client.get("/metrics").text
    assert sample(text, "pushrl_decisions_total") == 2
    assert sample(text, "pushrl_ood_total", field="channel", kind="unknown_category") == 1
    assert sample(text, "pushrl_ood_total", field="recency", kind="below_range") == 1
    assert sample(text, "pushrl_errors_total", status="422") == 1
    assert sample(text, "pushrl_errors_total", status="400") == 1
    assert sample(text, "pushrl_request_latency_seconds_count", route="/v1/decide") == 3  # errors are timed too
    assert sample(text, "pushrl_request_latency_seconds_bucket", route="/v1/decide", le="+Inf") == 3
    assert sample(text, "pushrl_request_latency_seconds_sum", route="/v1/decide") > 0


def test_strict_app_refuses_ood_with_422_naming_the_field(artifact: Path) -> None:
    with TestClient(http.create_app(artifact, seed=0, strict=True), raise_server_exceptions=False) as client:
        assert client.post("/v1/decide", json={"requests": [{"request_id": "a", "context": OK}]}).status_code == 200
        resp = client.post("/v1/decide", json={"requests": [{"request_id": "b",
                                                            "context": {**OK, "history": 1e300}}]})
        assert resp.status_code == 422
        assert resp.json()["field"] == "requests[0].context.history"
        assert "refused in strict mode" in resp.json()["detail"]
        text = client.get("/metrics").text
    assert sample(text, "pushrl_ood_total", field="history", kind="above_range") == 1
    assert sample(text, "pushrl_decisions_total") == 1
