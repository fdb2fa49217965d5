"""`pushrl serve ARTIFACT --host 127.0.0.1 --port N` answers the documented decision contract."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from pushrl.agents.bandits import make_bandit
from pushrl.agents.export_policies import export_policy
from pushrl.envs.data.features import ContextEncoder
from pushrl.envs.data.hillstrom import CATEGORICAL, NUMERIC, load_hillstrom

REQUEST = {"request_id": "c-1", "context": {"recency": 10, "history": 142.44, "history_segment": "2) $100 - $200",
                                            "mens": 1, "womens": 0, "zip_code": "Surburban", "newbie": 0,
                                            "channel": "Phone"}, "exclude": ["No E-Mail"], "k": 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    data = load_hillstrom().subset(np.arange(3000))
    enc = ContextEncoder.fit(data.frame, NUMERIC, CATEGORICAL)
    x = np.hstack([enc.transform(data.frame), np.ones((data.n_rounds, 1))])
    bandit = make_bandit("epsilon_greedy", n_actions=3, n_features=x.shape[1], epsilon=0.1, seed=0)
    bandit.update(x, data.action, data.reward("conversion"))
    return export_policy(bandit, "epsilon_greedy", enc, data.action_ids, tmp_path_factory.mktemp("a") / "artifact",
                         no_push_action="No E-Mail", parity_rows=1000)


def test_serve_command_answers_the_contract(artifact, tmp_path):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pushrl.experiments.cli", "serve", str(artifact), "--host",
                             "127.0.0.1", "--port", str(port), "--seed", "0", "--decision-log", str(tmp_path / "log")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        resp = httpx.post(f"{url}/v1/decide", json={"requests": [REQUEST]}, timeout=10)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        decision = body["decisions"][0]
        assert decision["request_id"] == "c-1"
        assert decision["actions"][0] in ("Mens E-Mail", "Womens E-Mail")  # "No E-Mail" was excluded
        probs = decision["probabilities"]
        assert set(probs) == {"No E-Mail", "Mens E-Mail", "Womens E-Mail"} and probs["No E-Mail"] == 0
        assert sum(probs.values()) == pytest.approx(1.0)
        assert decision["propensities"][0] == pytest.approx(probs[decision["actions"][0]])
        assert body["policy_version"]
        bad = httpx.post(f"{url}/v1/decide", json={"requests": [{**REQUEST, "request_id": "c-2",
                                                                  "exclude": ["Kids E-Mail"]}]}, timeout=10)
        assert bad.status_code == 422 and "exclude" in bad.text
        assert httpx.get(f"{url}/v1/policy", timeout=10).json()["action_ids"] == ["No E-Mail", "Mens E-Mail", "Womens E-Mail"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_refuses_a_broken_artifact(tmp_path):
    (tmp_path / "broken").mkdir()
    out = subprocess.run([sys.executable, "-m", "pushrl.experiments.cli", "serve", str(tmp_path / "broken"),
                          "--port", str(_free_port())], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "manifest" in out.stderr.lower()


def _capture(monkeypatch) -> dict:
    from pushrl.policies.serving import http

    seen: dict = {}
    monkeypatch.setattr(http, "serve", lambda artifact, **kw: seen.update(kw, artifact=artifact))
    return seen


def test_serve_flags_reach_the_app(monkeypatch, tmp_path):
    from pushrl.experiments.cli import serve_cli

    seen = _capture(monkeypatch)
    assert serve_cli(["art", "--decision-log", str(tmp_path / "log")]) == 0
    assert seen["admin_token"] is None and seen["durable_log"] is False  # admin off by default
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123\n")
    assert serve_cli(["art", "--decision-log", str(tmp_path / "log"), "--durable-log", "--admin-token-file",
                      str(token), "--artifact-root", str(tmp_path)]) == 0
    assert seen["admin_token"] == "0123456789abcdef0123" and seen["durable_log"] is True
    assert seen["artifact_root"] == str(tmp_path)


@pytest.mark.parametrize(("argv", "message"), [
    (["art", "--durable-log"], "--durable-log needs --decision-log"),
    (["art", "--artifact-root", "x"], "needs --admin-token-file"),
    (["art", "--no-admin"], "unrecognized arguments: --no-admin"),
])
def test_serve_flag_errors(monkeypatch, capsys, argv, message):
    from pushrl.experiments.cli import serve_cli

    _capture(monkeypatch)
    with pytest.raises(SystemExit) as exit_:
        serve_cli(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_serve_refuses_a_weak_token_file(monkeypatch, capsys, tmp_path):
    from pushrl.experiments.cli import serve_cli

    _capture(monkeypatch)
    (tmp_path / "token").write_text("short\n")
    assert serve_cli(["art", "--admin-token-file", str(tmp_path / "token")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least 16" in err and "token" in err


def test_serve_command_admin_needs_the_token(artifact, tmp_path):
    token = tmp_path / "token"
    token.write_text("cli-admin-token-0123456789\n")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pushrl.experiments.cli", "serve", str(artifact), "--port", str(port),
                             "--seed", "0", "--decision-log", str(tmp_path / "log"), "--durable-log",
                             "--admin-token-file", str(token)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.2)
        body = {"path": str(artifact)}
        assert httpx.post(f"{url}/v1/admin/reload", json=body, timeout=10).status_code == 401
        assert httpx.post(f"{url}/v1/admin/reload", json=body, timeout=10,
                          headers={"Authorization": "Bearer wrong-token-xxxxxxxx"}).status_code == 403
        ok = httpx.post(f"{url}/v1/admin/reload", json=body, timeout=30,
                        headers={"Authorization": "Bearer cli-admin-token-0123456789"})
        assert ok.status_code == 200, ok.text
        assert httpx.post(f"{url}/v1/decide", json={"requests": [REQUEST]}, timeout=10).status_code == 200
        assert httpx.post(f"{url}/v1/decide", json={"requests": [REQUEST]}, timeout=10).status_code == 409
        from pushrl.policies.serving.decision_log import read_decision_log

        assert read_decision_log(tmp_path / "log")["request_id"].tolist() == ["c-1"]  # durable: on disk already
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "admin: on" in out
