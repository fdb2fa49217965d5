"""Hostile bodies get a 4xx at bounded memory, and nothing hostile reaches the decision log."""

from __future__ import annotations

import json
import select
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from pushrl.policies.serving import http as http_module
from pushrl.policies.serving.decision_log import read_decision_log
from pushrl.policies.serving.http import (
    MAX_BODY_BYTES,
    MAX_REQUEST_ID_CHARS,
    MAX_STRING_CHARS,
    RecentIds,
    create_app,
    serve_in_thread,
)
from tests.policies.serving.test_http import CONTEXT, write

JSON = {"content-type": "application/json"}


@pytest.fixture()
def artifact(tmp_path: Path) -> Path:
    return write(tmp_path / "a", seed=0, slate_size=2)


@pytest.fixture()
def logged(artifact: Path, tmp_path: Path):
    """A client whose app logs to tmp_path / "log"; yields (client, log folder)."""
    with TestClient(create_app(artifact, seed=0, decision_log=tmp_path / "log", durable_log=True),
                    raise_server_exceptions=False) as c:
        yield c, tmp_path / "log"


def decide(client: TestClient, *requests: dict, **body) -> object:
    return client.post("/v1/decide", json={"requests": list(requests), **body})


def raw(client: TestClient, data: bytes, headers: dict[str, str] | None = None) -> object:
    return client.post("/v1/decide", content=data, headers=JSON if headers is None else headers)


def ok(rid: str, **kw) -> dict:
    return {"request_id": rid, "context": CONTEXT, **kw}


def test_chunked_body_is_cut_at_the_limit_while_reading(artifact: Path) -> None:
    """No Content-Length: the server answers 413 once the limit is passed, long before the client is done."""
    planned = 4 * MAX_BODY_BYTES
    chunk = b"[" + b" " * (2**20 - 1)
    with serve_in_thread(create_app(artifact, seed=0)) as url:
        parts = urlsplit(url)
        sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        try:
            sock.sendall(b"POST /v1/decide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            sent, answer = 0, b""
            sock.setblocking(False)
            deadline = time.monotonic() + 30
            while sent < planned and time.monotonic() < deadline:
                readable, writable, _ = select.select([sock], [sock], [], 1)
                if readable:
                    answer = sock.recv(65536)
                    break
                if writable:
                    try:
                        sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        sent += len(chunk)
                    except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                        time.sleep(0.01)
            sock.setblocking(True)
            while not answer.endswith(b"}"):  # the head and the JSON error may come in separate segments
                more = sock.recv(65536)
                if not more:
                    break
                answer += more
        finally:
            sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"field":"body"' in answer
    assert sent < planned  # the server stopped reading: it did not wait for (or keep) the whole body


def test_declared_length_over_the_limit_is_refused_unread(logged) -> None:
    client, _ = logged
    resp = raw(client, b"x" * (MAX_BODY_BYTES + 1))
    assert resp.status_code == 413 and resp.json()["field"] == "body"


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"requests": ' + b"[" * 40 + b"]" * 40 + b"}",
                                  b'{"requests": [{"request_id": "a", "context": ' + b'{"x": ' * 50 + b"1"
                                  + b"}" * 51 + b"]}"])
def test_deep_nesting_is_a_400(logged, body: bytes) -> None:
    client, _ = logged
    resp = raw(client, body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["field"] == "body" and "nested deeper than 32" in resp.json()["detail"]


@pytest.mark.parametrize(("headers", "field"), [
    ({"content-type": "text/plain"}, "content-type"),
    ({"content-type": "application/x-www-form-urlencoded"}, "content-type"),
    ({"content-type": "application/json; charset=utf-16"}, "content-type"),
    ({}, "content-type"),
])
def test_only_json_content_types(logged, headers: dict, field: str) -> None:
    client, _ = logged
    resp = raw(client, json.dumps({"requests": [ok("a")]}).encode(), headers)
    assert resp.status_code == 415 and resp.json()["field"] == field, resp.text
    assert raw(client, json.dumps({"requests": [ok("a")]}).encode(),
               {"content-type": "application/json; charset=UTF-8"}).status_code == 200


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32", "latin-1"])
def test_non_utf8_bodies_are_refused(logged, encoding: str) -> None:
    client, folder = logged
    text = json.dumps({"requests": [ok("é-1")]}, ensure_ascii=False)
    resp = raw(client, text.encode(encoding))
    assert resp.status_code == 400 and resp.json()["field"] == "body", resp.text
    assert read_decision_log(folder).empty


@pytest.mark.parametrize(("body", "status", "field"), [
    (b'{"requests": [{"request_id": "\\ud800", "context": CTX}]}', 400, "requests[0].request_id"),
    (b'{"requests": [{"request_id": "a\\udfff", "context": CTX}]}', 400, "requests[0].request_id"),
    (b'{"requests": [{"request_id": "a", "context": {"recency": 6, "history": 1, "channel": "W\\ud83d"}}]}',
     400, "requests[0].context.channel"),
    (b'{"requests": [{"request_id": "a\\u0000", "context": CTX}]}', 422, "requests[0].request_id"),
    (b'{"requests": [{"request_id": "a\\nb", "context": CTX}]}', 422, "requests[0].request_id"),
    ('{"requests": [{"request_id": "a\u0085b", "context": CTX}]}'.encode(), 422, "requests[0].request_id"),
    (b'{"requests": [{"request_id": "a\\u007f", "context": CTX}]}', 422, "requests[0].request_id"),
    (b'{"requests": [{"request_id": "a", "request_id": "b", "context": CTX}]}', 400, "body"),
    (b'{"requests": [{"request_id": "a", "context": CTX}], "requests": []}', 400, "body"),
    (b'{"requests": [{"request_id": "a", "context": {"recency": 6, "recency": 7, "history": 1, "channel": "Web"}}]}',
     400, "body"),
    (b'{"requests": [{"request_id": "a", "context": {"recency": 1' + b"0" * 5000 + b', "history": 1, '
     b'"channel": "Web"}}]}', 400, "body"),
    (b"\xef\xbb\xbf" + b'{"requests": [{"request_id": "a", "context": CTX}]}', 400, "body"),
])
def test_bad_text_is_refused_before_anything_is_logged(logged, body: bytes, status: int, field: str) -> None:
    client, folder = logged
    resp = raw(client, body.replace(b"CTX", json.dumps(CONTEXT).encode()))
    assert resp.status_code == status, resp.text
    assert resp.json()["field"] == field
    assert decide(client, ok("good")).status_code == 200
    assert read_decision_log(folder)["request_id"].tolist() == ["good"]  # readable, and only the good one


def test_duplicate_key_is_named(logged) -> None:
    client, _ = logged
    resp = raw(client, b'{"requests": [{"request_id": "a", "k": 1, "k": 2, "context": {}}]}')
    assert resp.status_code == 400 and "duplicate key 'k'" in resp.json()["detail"]


def test_length_limits(logged) -> None:
    client, folder = logged
    long_id = "i" * (MAX_REQUEST_ID_CHARS + 1)
    resp = decide(client, ok(long_id))
    assert resp.status_code == 422 and resp.json()["field"] == "requests[0].request_id"
    assert str(MAX_REQUEST_ID_CHARS) in resp.json()["detail"] and long_id not in resp.text
    assert decide(client, ok("i" * MAX_REQUEST_ID_CHARS)).status_code == 200
    big = "W" * (8 * 2**20)  # 8 MB: refused, and not echoed back
    resp = decide(client, {"request_id": "b", "context": {**CONTEXT, "channel": big}})
    assert resp.status_code == 422 and resp.json()["field"] == "requests[0].context.channel"
    assert len(resp.content) < 1000
    key = "k" * (MAX_STRING_CHARS + 1)
    resp = decide(client, {"request_id": "c", "context": {**CONTEXT, key: 1}})
    assert resp.status_code == 422 and len(resp.content) < 1000
    edge = "W" * MAX_STRING_CHARS  # at the limit: an unknown category, served
    assert decide(client, {"request_id": "d", "context": {**CONTEXT, "channel": edge}}).status_code == 200
    assert read_decision_log(folder)["request_id"].tolist() == ["i" * MAX_REQUEST_ID_CHARS, "d"]


def test_reused_request_id_is_a_409(logged) -> None:
    client, folder = logged
    assert decide(client, ok("r-1"), ok("r-2")).status_code == 200
    again = decide(client, ok("r-3"), ok("r-2"))
    assert again.status_code == 409 and again.json()["field"] == "requests[1].request_id"
    assert "already decided" in again.json()["detail"]
    assert decide(client, ok("r-3")).status_code == 200  # nothing of the refused call was remembered
    # a call refused for another reason does not burn its ids: the corrected retry is served
    bad = decide(client, {"request_id": "r-4", "context": {**CONTEXT, "recency": "x"}})
    assert bad.status_code == 422
    assert decide(client, ok("r-4")).status_code == 200
    assert read_decision_log(folder)["request_id"].tolist() == ["r-1", "r-2", "r-3", "r-4"]
    same_call = decide(client, ok("r-5"), ok("r-5"))  # inside one call: the runtime's 422, as before
    assert same_call.status_code == 422 and same_call.json()["field"] == "requests[1].request_id"


def test_reuse_is_refused_with_the_durable_log_too(artifact: Path, tmp_path: Path) -> None:
    app = create_app(artifact, seed=0, decision_log=tmp_path / "log", durable_log=True)
    with TestClient(app, raise_server_exceptions=False) as c:
        assert decide(c, ok("d-1")).status_code == 200
        assert decide(c, ok("d-1")).status_code == 409


def test_ids_already_in_the_decision_log_are_refused_after_a_restart(artifact: Path, tmp_path: Path) -> None:
    with TestClient(create_app(artifact, seed=0, decision_log=tmp_path / "log")) as c:
        assert decide(c, ok("before-restart"), ok("é\"q")).status_code == 200
    app = create_app(artifact, seed=0, decision_log=tmp_path / "log")
    assert len(app.state.recent_ids) == 2
    with TestClient(app, raise_server_exceptions=False) as c:
        assert decide(c, ok("before-restart")).status_code == 409
        assert decide(c, ok("é\"q")).status_code == 409
        assert decide(c, ok("after-restart")).status_code == 200


def test_the_recent_id_window_is_bounded() -> None:
    recent = RecentIds(capacity=3)
    for rid in "abcd":
        assert recent.reserve([rid]) is None
        recent.release([rid], decided=True)
    assert len(recent) == 3
    assert recent.reserve(["a"]) is None  # the oldest was forgotten
    recent.release(["a"], decided=False)
    assert recent.reserve(["x", "d"]) == 1 and recent.reserve(["x"]) is None  # nothing reserved on a refusal
    assert recent.reserve(["x"]) == 0  # in flight
    assert RecentIds(capacity=0).reserve(["a"]) is None


def test_propensities_chosen_leaves_out_the_distribution(logged) -> None:
    client, _ = logged
    full = decide(client, ok("p-1")).json()["decisions"][0]
    assert "probabilities" in full
    resp = decide(client, ok("p-2"), ok("p-3", k=2), propensities="chosen")
    assert resp.status_code == 200, resp.text
    for d in resp.json()["decisions"]:
        assert set(d) == {"request_id", "actions", "propensities"} and len(d["propensities"]) == len(d["actions"])
    bad = decide(client, ok("p-4"), propensities="some")
    assert bad.status_code == 422 and bad.json()["field"] == "propensities"


def test_a_response_with_too_many_probabilities_is_refused(logged, monkeypatch: pytest.MonkeyPatch) -> None:
    client, folder = logged
    monkeypatch.setattr(http_module, "MAX_PROBABILITIES", 5)  # 3 actions: one request fits, two do not
    assert decide(client, ok("q-1")).status_code == 200
    resp = decide(client, ok("q-2"), ok("q-3"))
    assert resp.status_code == 413 and resp.json()["field"] == "propensities" and "chosen" in resp.json()["detail"]
    assert decide(client, ok("q-2"), ok("q-3"), propensities="chosen").status_code == 200
    assert decide(client, ok("q-4"), ok("q-5", k=2)).status_code == 200  # slates carry no distribution
    assert read_decision_log(folder)["request_id"].tolist() == ["q-1", "q-2", "q-3", "q-4", "q-5"]
