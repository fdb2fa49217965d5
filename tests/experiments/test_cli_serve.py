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
        bad = httpx.post(f"{url}/v1/decide", json={"requests": [{**REQUEST, "exclude": ["Kids E-Mail"]}]}, timeout=10)
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
