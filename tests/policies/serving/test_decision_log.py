"""Decision log: crash safety (torn last line), rotation, reward join, and OPE on what serving logged."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.agents.export import linear_onnx
from pushrl.envs.data.features import ContextEncoder
from pushrl.envs.data.logged_data import LoggedData
from pushrl.policies.artifact import Exploration, Manifest, write_artifact
from pushrl.policies.ope import InverseProbabilityWeighting
from pushrl.policies.serving.decision_log import (
    DecisionLog,
    join_rewards,
    log_files,
    read_decision_log,
)
from pushrl.policies.serving.runtime import PolicyRuntime

ACTIONS = ("No E-Mail", "Mens E-Mail", "Womens E-Mail")
ENCODER = ContextEncoder(("x1", "x2"), (0.0, 1.0), (1.0, 2.0), ("seg",), {"seg": ("A", "B", "C")})


def make_runtime(tmp_path: Path, log: DecisionLog | None, seed: int = 0, slate_size: int = 1) -> PolicyRuntime:
    weight = np.random.default_rng(5).normal(size=(3, ENCODER.n_features))
    manifest = Manifest(policy_kind="linear", encoder=ENCODER, action_ids=ACTIONS, slate_size=slate_size,
                        exploration=Exploration("softmax", temperature=1.0))
    folder = write_artifact(tmp_path / "art", linear_onnx(weight), manifest)
    return PolicyRuntime.load(folder, seed=seed, decision_log=log)


def contexts(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"x1": float(rng.normal()), "x2": float(rng.normal(1, 2)), "seg": str(rng.choice(["A", "B", "C", "D"]))}
            for _ in range(n)]


def requests(n: int, start: int = 0, **kw) -> list[dict]:
    return [{"request_id": f"c-{start + i}", "context": c, **kw} for i, c in enumerate(contexts(n, start))]


def test_decisions_read_back(tmp_path: Path) -> None:
    with DecisionLog(tmp_path / "log") as log:
        rt = make_runtime(tmp_path, log)
        decided = rt.decide(requests(5)) + rt.decide(requests(3, start=5, exclude=["No E-Mail"]))
    frame = read_decision_log(tmp_path / "log")
    assert list(frame["request_id"]) == [f"c-{i}" for i in range(8)]
    assert list(frame["actions"]) == [d.actions for d in decided]
    assert list(frame["propensities"]) == [d.propensities for d in decided]
    assert (frame["policy_version"] == rt.policy_version).all()
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]" or "UTC" in str(frame["timestamp"].dtype)
    assert frame["context"].iloc[0] == contexts(5)[0]
    assert frame["exclude"].iloc[6] == ["No E-Mail"] and frame.attrs["torn_lines"] == 0


def test_torn_last_line_is_skipped_and_counted(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    with DecisionLog(folder) as log:
        make_runtime(tmp_path, log).decide(requests(4))
    last = log_files(folder)[-1]
    with open(last, "ab") as fh:
        fh.write(b'{"request_id": "c-99", "timestamp": "2024-01-0')  # the crash
    with pytest.warns(UserWarning, match="skipped 1 torn"):
        frame = read_decision_log(folder)
    assert len(frame) == 4 and frame.attrs["torn_lines"] == 1
    with DecisionLog(folder) as log:  # reopening never appends after the torn line
        assert log.current_file != last
        make_runtime(tmp_path, log).decide(requests(2, start=10))
    with pytest.warns(UserWarning):
        frame = read_decision_log(folder)
    assert len(frame) == 6 and frame.attrs["torn_lines"] == 1


def _raw_record(request_id: str, context: str = '{"x1":0.5,"x2":1.0,"seg":"A"}', stamp: str = "2024-01-01T00:00:00Z"
                ) -> bytes:
    """One record line as the writer before the UTF-8 rule wrote it (ASCII, `\\udXXX` escapes kept)."""
    return (f'{{"request_id":"{request_id}","timestamp":"{stamp}","policy_version":"v","context":{context},'
            f'"actions":["Mens E-Mail"],"propensities":[0.5]}}\n').encode("ascii")


def test_bad_records_are_skipped_with_file_and_line(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    with DecisionLog(folder) as log:
        rt = make_runtime(tmp_path, log)
        rt.decide(requests(2))
        log.flush()
        with open(log.current_file, "ab") as fh:
            fh.write(b"not json\n")  # line 3
            fh.write(b'{"request_id": "bad-\xff\xfe", "context": {}}\n')  # line 4: not UTF-8
            fh.write(b'{"request_id": "c-missing", "timestamp": "2024-01-01T00:00:00Z"}\n')  # line 5: fields missing
            fh.write(_raw_record("old-\\ud800", '{"x1":0.5,"x2":1.0,"seg":"A\\udc80"}'))  # line 6: old writer
            fh.write(_raw_record("c-late", stamp="yesterday"))  # line 7: timestamp does not parse
            fh.write(b"[1, 2]\n")  # line 8: JSON, not a record
            fh.write(b"[" * 100_000 + b"\n")  # line 9: too deep for the parser
            fh.write(_raw_record("c-nan").replace(b"[0.5]", b"[NaN]"))  # line 10: not a probability
        rt.decide(requests(2, start=2))
    with pytest.warns(UserWarning, match=r"skipped 7 line\(s\)") as caught:
        frame = read_decision_log(folder)
    message = str(caught[0].message)
    for no in (3, 4, 5, 7, 8, 9, 10):
        assert f"decisions-000001.jsonl:{no}:" in message
    assert "decisions-000001.jsonl:6" not in message and "not UTF-8" in message and "missing field" in message
    assert frame.attrs["skipped_records"] == 7 and frame.attrs["torn_lines"] == 0
    assert frame.attrs["skipped"][0].startswith("decisions-000001.jsonl:3: invalid JSON")
    assert list(frame["request_id"]) == ["c-0", "c-1", "old-\\ud800", "c-2", "c-3"]  # surrogate kept as text
    assert frame["context"].iloc[2]["seg"] == "A\\udc80"
    events = pd.DataFrame({"request_id": ["c-1", "old-\\ud800"], "action": ["Mens E-Mail"] * 2, "click": [1, 1]})
    data = join_rewards(frame, events.drop(columns="action"), manifest=rt.manifest)  # no UnicodeEncodeError
    assert data.n_rounds == 5 and data.reward("click")[2] == 1.0
    assert join_rewards(frame, events.drop(columns="action")).n_rounds == 5  # inferred schema too


def test_lines_are_always_valid_utf8(tmp_path: Path) -> None:
    folder = tmp_path / "log"
    rec = {"request_id": "r-\ud800", "timestamp": "2024-01-01T00:00:00Z", "policy_version": "v",
           "context": {"seg": "caf\u00e9 \U0001f600", "k\udfff": "x\ud83d"}, "actions": ["a"], "propensities": [1.0]}
    with DecisionLog(folder) as log:
        log.append([rec, {**rec, "request_id": "plain", "context": {"seg": "A"}}]).wait()
        log.record_catalogue("v", [{"id": "a\udc00", "features": {}}])
        for unsafe in ("v\ud800", "../v", ".hidden", "a/b", ""):
            with pytest.raises(ValueError, match="not a safe file name"):
                log.record_catalogue(unsafe, [])
    raw = log_files(folder)[0].read_bytes()
    lines = raw.decode("utf-8").splitlines()  # strict UTF-8: raises if a surrogate got through
    assert json.loads(lines[0])["request_id"] == "r-\\ud800" and "\\ud8" not in lines[1]
    assert json.loads((folder / "catalogues" / "v.json").read_text(encoding="utf-8"))[0]["id"] == "a\\udc00"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frame = read_decision_log(folder)
    assert frame["context"].iloc[0] == {"seg": "caf\u00e9 \U0001f600", "k\\udfff": "x\\ud83d"}
    assert frame.attrs["skipped_records"] == 0


def test_join_rewards_survives_surrogates_in_a_hand_made_frame(tmp_path: Path) -> None:
    with DecisionLog(tmp_path / "log") as log:
        make_runtime(tmp_path, log).decide(requests(3))
    decisions = read_decision_log(tmp_path / "log")
    decisions["context"] = [{**c, "seg": "B\ud800"} for c in decisions["context"]]
    data = join_rewards(decisions, pd.DataFrame({"request_id": ["c-0"], "click": [1]}))
    assert data.n_rounds == 3 and set(data.frame["seg"]) == {"B\\ud800"}


def test_killed_writer_leaves_a_readable_log(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        from pushrl.policies.serving.decision_log import DecisionLog
        log = DecisionLog({str(tmp_path / "log")!r}, max_bytes=20_000)
        i = 0
        print("ready", flush=True)
        while True:
            log.append([{{"request_id": f"c-{{i}}-{{j}}", "timestamp": "2024-01-01T00:00:00Z", "policy_version": "v",
                          "context": {{"x": j}}, "actions": ["a"], "propensities": [0.5]}} for j in range(50)])
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    with DecisionLog(tmp_path / "log") as log:  # restart, keep logging
        log.append([{"request_id": "after", "timestamp": "2024-01-01T00:00:01Z", "policy_version": "v",
                     "context": {"x": 0}, "actions": ["a"], "propensities": [0.5]}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = read_decision_log(tmp_path / "log")
    assert len(frame) > 50 and frame["request_id"].iloc[-1] == "after" and frame.attrs["torn_lines"] <= 1


def test_rotation_by_size_and_count(tmp_path: Path) -> None:
    with DecisionLog(tmp_path / "log", max_bytes=2_000) as log:
        rt = make_runtime(tmp_path, log)
        for b in range(10):
            rt.decide(requests(5, start=5 * b))
    files = log_files(tmp_path / "log")
    assert len(files) > 3 and all(f.stat().st_size < 2_000 + 5 * 400 for f in files)
    assert list(read_decision_log(tmp_path / "log")["request_id"]) == [f"c-{i}" for i in range(50)]
    with DecisionLog(tmp_path / "kept", max_bytes=2_000, max_files=2) as log:
        rt = make_runtime(tmp_path, log)
        for b in range(10):
            rt.decide(requests(5, start=5 * b))
    assert len(log_files(tmp_path / "kept")) == 2
    assert read_decision_log(tmp_path / "kept")["request_id"].iloc[-1] == "c-49"


def test_join_rewards_makes_logged_data(tmp_path: Path) -> None:
    with DecisionLog(tmp_path / "log") as log:
        rt = make_runtime(tmp_path, log)
        decided = rt.decide(requests(20))
    decisions = read_decision_log(tmp_path / "log")
    events = pd.DataFrame({"request_id": ["c-1", "c-4", "zzz"], "click": [1, 1, 1]})
    data = join_rewards(decisions, events, manifest=rt.manifest)
    assert isinstance(data, LoggedData) and data.n_rounds == 20 and data.n_actions == 3
    assert list(data.action_ids) == list(ACTIONS)
    np.testing.assert_array_equal(data.reward("click"), [1.0 if i in (1, 4) else 0.0 for i in range(20)])
    assert [ACTIONS[a] for a in data.action] == [d.actions[0] for d in decided]
    np.testing.assert_allclose(data.pscore, [d.propensities[0] for d in decided])
    assert data.feature_names == ("x1", "x2", "seg") and data.timestamp is not None
    assert any("18 row(s) had no reward event and got reward 0.0" in n for n in data.notes)
    assert any("1 reward event(s) matched no logged decision" in n for n in data.notes)
    with pytest.raises(ValueError, match="18 decisions have no reward event"):
        join_rewards(decisions, events, manifest=rt.manifest, missing_reward=None)
    with pytest.raises(ValueError, match="repeated"):
        join_rewards(decisions, pd.concat([events, events]), manifest=rt.manifest)


def test_join_slates_needs_the_rewarded_action(tmp_path: Path) -> None:
    with DecisionLog(tmp_path / "log") as log:
        rt = make_runtime(tmp_path, log, slate_size=2)
        decided = rt.decide(requests(10, k=2))
    decisions = read_decision_log(tmp_path / "log")
    with pytest.raises(ValueError, match="events need an 'action' column"):
        join_rewards(decisions, pd.DataFrame({"request_id": ["c-0"], "click": [1]}), manifest=rt.manifest)
    events = pd.DataFrame({"request_id": ["c-0"], "action": [decided[0].actions[1]], "click": [1]})
    data = join_rewards(decisions, events, manifest=rt.manifest)
    assert data.n_rounds == 20 and data.n_positions == 2
    assert list(data.position[:2]) == [0, 1] and data.reward()[:2].tolist() == [0.0, 1.0]
    np.testing.assert_allclose(data.pscore[:2], decided[0].propensities)


def test_ope_on_the_serving_log_recovers_true_values(tmp_path: Path) -> None:
    """decide -> log -> simulated rewards -> LoggedData -> IPS ~ the true value, for the policy and for uniform."""
    n = 4000
    truth_w = np.random.default_rng(9).normal(size=(3, ENCODER.n_features))
    with DecisionLog(tmp_path / "log") as log:
        rt = make_runtime(tmp_path, log, seed=1)
        for b in range(0, n, 500):
            rt.decide(requests(500, start=b))
    decisions = read_decision_log(tmp_path / "log")
    x = rt.encode(list(decisions["context"]))
    mu = 1 / (1 + np.exp(-(x @ truth_w.T)))  # true click probability per action
    chosen = np.array([ACTIONS.index(a[0]) for a in decisions["actions"]])
    clicks = np.random.default_rng(2).random(n) < mu[np.arange(n), chosen]
    events = pd.DataFrame({"request_id": decisions["request_id"][clicks], "click": 1})  # only clicks are reported
    data = join_rewards(decisions, events, manifest=rt.manifest)

    x_log = rt.encode(data.features().to_dict("records"))
    np.testing.assert_allclose(x_log, x)
    pi = rt.action_probabilities(x_log)
    np.testing.assert_allclose(pi[np.arange(n), data.action], data.pscore, rtol=1e-6)
    ips = InverseProbabilityWeighting()
    for policy, true_value in ((pi, (pi * mu).sum(axis=1).mean()), (np.full((n, 3), 1 / 3), mu.mean())):
        est = ips.estimate_interval(action_dist=policy[:, :, None], reward=data.reward(), action=data.action,
                                    pscore=data.pscore, n_bootstrap=400, seed=0)
        assert est.ci_low <= true_value <= est.ci_high, (est, true_value)
