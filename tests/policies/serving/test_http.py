"""HTTP decision contract over a real socket, the 4xx error table, and hot swap under load."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from pushrl.agents.export import linear_onnx
from pushrl.envs.data.features import ContextEncoder
from pushrl.policies.artifact import Exploration, Manifest, write_artifact
from pushrl.policies.serving.decision_log import read_decision_log
from pushrl.policies.serving.http import create_app, serve_in_thread

ACTIONS = ("No E-Mail", "Mens E-Mail", "Womens E-Mail")
ENCODER = ContextEncoder(("recency", "history"), (6.0, 240.0), (3.5, 250.0), ("channel",),
                         {"channel": ("Multichannel", "Phone", "Web")})
CONTEXT = {"recency": 6, "history": 329.08, "channel": "Web"}
TOKEN = "t0ken-for-the-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def write(folder: Path, seed: int, slate_size: int = 1) -> Path:
    weight = np.random.default_rng(seed).normal(size=(3, ENCODER.n_features))
    manifest = Manifest(policy_kind="linear", encoder=ENCODER, action_ids=ACTIONS, no_push_action="No E-Mail",
                        exploration=Exploration("epsilon", 0.1), slate_size=slate_size)
    return write_artifact(folder, linear_onnx(weight), manifest)


@pytest.fixture()
def artifact(tmp_path: Path) -> Path:
    return write(tmp_path / "a", seed=0, slate_size=2)


@pytest.fixture()
def client(artifact: Path):
    with TestClient(create_app(artifact, seed=0), raise_server_exceptions=False) as c:
        yield c


def test_contract_over_a_real_socket(artifact: Path, tmp_path: Path) -> None:
    app = create_app(artifact, seed=0, decision_log=tmp_path / "log")
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=10) as http:
        assert url.startswith("http://127.0.0.1:")
        health = http.get("/healthz").json()
        assert health["status"] == "ok"
        manifest = http.get("/v1/policy").json()
        assert manifest["action_ids"] == list(ACTIONS) and manifest["policy_version"] == health["policy_version"]
        body = {"requests": [{"request_id": "c-1", "context": CONTEXT, "exclude": ["No E-Mail"], "k": 1},
                             {"request_id": "c-2", "context": {**CONTEXT, "channel": "Fax"}},
                             {"request_id": "c-3", "context": CONTEXT, "k": 2}]}
        resp = http.post("/v1/decide", json=body)
        assert resp.status_code == 200, resp.text
        out = resp.json()
        assert set(out) == {"policy_version", "decisions"} and out["policy_version"] == health["policy_version"]
        d1, d2, d3 = out["decisions"]
        assert set(d1) == {"request_id", "actions", "propensities", "probabilities"} and d1["request_id"] == "c-1"
        assert d1["actions"][0] in ACTIONS[1:] and d1["probabilities"]["No E-Mail"] == 0.0
        assert d1["propensities"] == [d1["probabilities"][d1["actions"][0]]]
        assert list(d1["probabilities"]) == list(ACTIONS) and abs(sum(d1["probabilities"].values()) - 1) < 1e-12
        assert sorted(d1["probabilities"].values())[1:] == pytest.approx([0.05, 0.95])
        assert len(d2["actions"]) == 1  # unknown channel -> the unknown bucket
        assert len(d3["actions"]) == 2 and "probabilities" not in d3 and len(d3["propensities"]) == 2
    logged = read_decision_log(tmp_path / "log")  # closed at shutdown: every decision is on disk
    assert list(logged["request_id"]) == ["c-1", "c-2", "c-3"]
    assert list(logged["actions"]) == [d["actions"] for d in out["decisions"]]


RAW = "raw"  # marks bodies sent as bytes
ERRORS = [
    ((RAW, b'{"requests": [{"request_id": '), 400, "body"),
    ((RAW, b"[1, 2"), 400, "body"),
    ([], 422, "body"),
    ({}, 422, "requests"),
    ({"requests": {}}, 422, "requests"),
    ({"requests": [], "extra": 1}, 422, "extra"),
    ({"requests": []}, 422, "requests"),
    ({"requests": [{"context": CONTEXT}]}, 422, "requests[0].request_id"),
    ({"requests": [{"request_id": "a"}]}, 422, "requests[0].context"),
    ({"requests": [{"request_id": "a", "context": CONTEXT, "user": 1}]}, 422, "requests[0].user"),
    ({"requests": [{"request_id": "a", "context": {"recency": 6, "history": 1.0}}]}, 422, "requests[0].context.channel"),
    ({"requests": [{"request_id": "a", "context": {**CONTEXT, "age": 3}}]}, 422, "requests[0].context.age"),
    ({"requests": [{"request_id": "a", "context": {**CONTEXT, "recency": "6"}}]}, 422, "requests[0].context.recency"),
    ({"requests": [{"request_id": "a", "context": {**CONTEXT, "recency": None}}]}, 422, "requests[0].context.recency"),
    ((RAW, b'{"requests": [{"request_id": "a", "context": {"recency": NaN, "history": 1, "channel": "Web"}}]}'),
     422, "requests[0].context.recency"),
    ((RAW, b'{"requests": [{"request_id": "a", "context": {"recency": 1e999, "history": 1, "channel": "Web"}}]}'),
     422, "requests[0].context.recency"),
    ({"requests": [{"request_id": "a", "context": {**CONTEXT, "channel": ["Web"]}}]}, 422, "requests[0].context.channel"),
    ({"requests": [{"request_id": "a", "context": CONTEXT, "exclude": ["Spam"]}]}, 422, "requests[0].exclude[0]"),
    ({"requests": [{"request_id": "a", "context": CONTEXT, "exclude": [1]}]}, 422, "requests[0].exclude[0]"),
    ({"requests": [{"request_id": "a", "context": CONTEXT, "k": 3}]}, 422, "requests[0].k"),
    ({"requests": [{"request_id": "a", "context": CONTEXT, "k": "1"}]}, 422, "requests[0].k"),
    ({"requests": [{"request_id": 1, "context": CONTEXT}]}, 422, "requests[0].request_id"),
    ({"requests": [{"request_id": "a", "context": CONTEXT}] * 2}, 422, "requests[1].request_id"),
    ({"requests": [{"request_id": f"r{i}", "context": CONTEXT} for i in range(1001)]}, 413, "requests"),
]


@pytest.mark.parametrize(("body", "status", "field"), ERRORS, ids=[f"{i}-{e[2]}" for i, e in enumerate(ERRORS)])
def test_error_table(client: TestClient, body, status: int, field: str) -> None:
    if isinstance(body, tuple):
        resp = client.post("/v1/decide", content=body[1], headers={"content-type": "application/json"})
    else:
        resp = client.post("/v1/decide", json=body)
    assert resp.status_code == status, resp.text
    out = resp.json()
    assert out["field"] == field and field in out["detail"]


def test_a_full_batch_of_1000_is_served(client: TestClient) -> None:
    resp = client.post("/v1/decide", json={"requests": [{"request_id": f"r{i}", "context": CONTEXT}
                                                        for i in range(1000)]})
    assert resp.status_code == 200 and len(resp.json()["decisions"]) == 1000


def test_durable_log_answers_after_the_fsync(artifact: Path, tmp_path: Path) -> None:
    with TestClient(create_app(artifact, seed=0, decision_log=tmp_path / "log", durable_log=True)) as c:
        for i in range(3):
            assert c.post("/v1/decide", json={"requests": [{"request_id": f"d{i}", "context": CONTEXT}]}).status_code == 200
            assert read_decision_log(tmp_path / "log")["request_id"].tolist() == [f"d{j}" for j in range(i + 1)]


def test_oversized_body_is_refused_before_reading(client: TestClient) -> None:
    resp = client.post("/v1/decide", content=b"x" * (16 * 2**20 + 1), headers={"content-type": "application/json"})
    assert resp.status_code == 413 and resp.json()["field"] == "body"


def test_other_routes_answer_json_errors(client: TestClient) -> None:
    assert client.get("/v1/decide").status_code == 405
    assert client.get("/nope").json()["detail"] == "Not Found"
    assert client.post("/v1/admin/reload", json={"path": "/does/not/exist"}).status_code == 404  # no token: no admin


def test_admin_errors_name_the_field(artifact: Path) -> None:
    with TestClient(create_app(artifact, seed=0, admin_token=TOKEN), raise_server_exceptions=False) as c:
        missing = c.post("/v1/admin/reload", json={"path": "nope"}, headers=AUTH)
        assert missing.status_code == 422 and missing.json()["field"] == "path"
        assert c.post("/v1/admin/reload", json={"file": "x"}, headers=AUTH).json()["field"] == "path"


def test_hot_swap_under_concurrent_requests(artifact: Path, tmp_path: Path) -> None:
    other = write(tmp_path / "b", seed=1, slate_size=2)
    failures: list[str] = []
    answered: list[str] = []  # policy_version of every successful call, in completion order
    stop = threading.Event()

    def hammer(url: str, worker: int) -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            for i in range(2000):  # bounded in count, and stopped once the swaps are done
                if stop.is_set():
                    break
                body = {"requests": [{"request_id": f"w{worker}-{i}-{j}", "context": CONTEXT} for j in range(3)]}
                try:
                    r = http.post("/v1/decide", json=body)
                    if r.status_code != 200:
                        failures.append(r.text)
                    else:
                        answered.append(r.json()["policy_version"])
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))

    def wait_for_more(n: int) -> None:
        target = len(answered) + n
        deadline = time.monotonic() + 30
        while len(answered) < target and time.monotonic() < deadline and not failures:
            time.sleep(0.005)

    app = create_app(artifact, seed=0, admin_token=TOKEN, artifact_root=tmp_path)
    with serve_in_thread(app) as url, httpx.Client(base_url=url, timeout=30, headers=AUTH) as admin:
        first = admin.get("/healthz").json()["policy_version"]
        threads = [threading.Thread(target=hammer, args=(url, w)) for w in range(4)]
        for t in threads:
            t.start()
        swaps = []
        try:
            for path in (other, artifact, other):
                wait_for_more(30)
                r = admin.post("/v1/admin/reload", json={"path": str(path)})
                assert r.status_code == 200, r.text
                swaps.append(r.json())
            wait_for_more(30)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        assert admin.get("/healthz").json()["policy_version"] == swaps[-1]["policy_version"] != first
    assert failures == []
    assert swaps[0]["previous_version"] == first and set(answered) == {first, swaps[0]["policy_version"]}
    assert answered[-1] == swaps[-1]["policy_version"] and len(answered) >= 120
