"""Bounded load tests: a tiny run in-process, loopback only; a 5-minute soak with flat memory (slow)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pushrl.agents.export import linear_onnx
from pushrl.envs.data.features import ContextEncoder
from pushrl.policies.artifact import Exploration, Manifest, load_artifact, write_artifact
from pushrl.policies.serving.decision_log import read_decision_log
from pushrl.policies.serving.http import create_app, serve_in_thread
from pushrl.policies.serving.loadtest import (
    ServerProcess,
    find_max_load,
    random_requests,
    run_load,
    soak,
)

ACTIONS = ("No E-Mail", "Mens E-Mail", "Womens E-Mail")
ENCODER = ContextEncoder(("recency", "history"), (6.0, 240.0), (3.5, 250.0), ("channel",),
                         {"channel": ("Multichannel", "Phone", "Web")})


@pytest.fixture()
def artifact(tmp_path: Path) -> Path:
    weight = np.random.default_rng(0).normal(size=(3, ENCODER.n_features))
    manifest = Manifest(policy_kind="linear", encoder=ENCODER, action_ids=ACTIONS,
                        exploration=Exploration("softmax"))
    return write_artifact(tmp_path / "a", linear_onnx(weight), manifest)


def test_tiny_bounded_run(artifact: Path) -> None:
    requests = random_requests(load_artifact(artifact).manifest, 64, seed=1)
    with serve_in_thread(create_app(artifact, seed=0)) as url:
        single = run_load(url, requests, n_calls=60, concurrency=4, time_limit_s=20)
        batched = run_load(url, requests, n_calls=10, concurrency=2, batch_size=16, time_limit_s=20)
    assert single.errors == 0 and single.calls == 60 and single.decisions == 60
    assert batched.errors == 0 and batched.decisions == 160
    assert 0 < single.p50_ms <= single.p99_ms <= single.max_ms and single.calls_per_s > 0
    assert "errors 0" in single.summary()


def test_errors_are_counted_and_runs_stop_by_time(artifact: Path) -> None:
    bad = [{"request_id": "x", "context": {"recency": 1}}]
    with serve_in_thread(create_app(artifact, seed=0)) as url:
        res = run_load(url, bad, n_calls=5, concurrency=1, time_limit_s=20)
        timed = run_load(url, random_requests(load_artifact(artifact).manifest, 8), n_calls=10**9,
                         concurrency=2, time_limit_s=0.3)
    assert res.errors == 5 and "HTTP 422" in (res.first_error or "")
    assert timed.errors == 0 and timed.elapsed_s < 5


def test_server_process_serves_and_logs(artifact: Path, tmp_path: Path) -> None:
    requests = random_requests(load_artifact(artifact).manifest, 32, seed=3)
    with ServerProcess(artifact, seed=0, decision_log=str(tmp_path / "log")) as server:
        res = run_load(server.url, requests, n_calls=20, concurrency=2, batch_size=4, time_limit_s=20)
        assert server.rss_mb() > 10
    assert res.errors == 0 and len(read_decision_log(tmp_path / "log")) == 80  # closed cleanly on SIGTERM


def test_only_loopback() -> None:
    with pytest.raises(ValueError, match="loopback only"):
        run_load("http://10.0.0.1:8000", [{}], n_calls=1)


@pytest.mark.slow
def test_soak_five_minutes_flat_memory(artifact: Path, tmp_path: Path) -> None:
    requests = random_requests(load_artifact(artifact).manifest, 256, seed=2)
    with ServerProcess(artifact, seed=0, decision_log=str(tmp_path / "log")) as server:
        samples, results = soak(server, requests, duration_s=300, concurrency=4, batch_size=4, sample_every_s=10)
    shutil.rmtree(tmp_path / "log", ignore_errors=True)  # about 250 MB of decisions
    rss = np.array([m for _, m in samples])
    calls = sum(r.calls for r in results)
    print(f"\nsoak: {calls} calls ({calls * 4} decisions) in {samples[-1][0]:.0f} s, "
          f"errors {sum(r.errors for r in results)}, server RSS MiB every 10 s: {rss.round(1).tolist()}")
    assert sum(r.errors for r in results) == 0
    warm = np.median(rss[2:5])  # after the first half-minute
    late = np.median(rss[-6:])  # the last minute
    assert late - warm < max(20.0, 0.1 * warm), f"RSS grew from {warm:.1f} to {late:.1f} MiB: {rss.round(1).tolist()}"


def test_find_max_load_steps_up_until_a_bound_breaks(artifact: Path) -> None:
    requests = random_requests(load_artifact(artifact).manifest, 64, seed=4)
    with serve_in_thread(create_app(artifact, seed=0)) as url:
        found = find_max_load(url, requests, p99_ms=1000, concurrencies=(1, 2), calls_per_step=30, step_s=10)
        tight = find_max_load(url, requests, p99_ms=1e-6, concurrencies=(1, 2), calls_per_step=10, step_s=10)
        bad = find_max_load(url, [{"request_id": "x", "context": {}}], concurrencies=(1, 2), calls_per_step=5)
    assert [s.concurrency for s in found.steps] == [1, 2] and found.best in found.steps
    assert found.best is not None and found.best.errors == 0 and "highest zero-error load" in found.summary()
    assert len(tight.steps) == 1 and tight.best is None and "broke the p99 bound" in tight.stopped
    assert len(bad.steps) == 1 and bad.best is None and "error" in bad.stopped and "no load" in bad.summary()
    with pytest.raises(ValueError, match="p99_ms"):
        find_max_load("http://127.0.0.1:1", requests, p99_ms=0)


def test_server_process_with_two_workers_shares_the_port_and_the_log(artifact: Path, tmp_path: Path) -> None:
    requests = random_requests(load_artifact(artifact).manifest, 64, seed=5)
    with ServerProcess(artifact, seed=0, decision_log=str(tmp_path / "log"), workers=2) as server:
        res = run_load(server.url, requests, n_calls=40, concurrency=4, time_limit_s=30)
    assert res.errors == 0 and res.calls == 40
    log = read_decision_log(tmp_path / "log")  # both workers' lines, none torn, after a graceful stop
    assert len(log) == 40 and log["request_id"].is_unique


def test_workers_refuse_admin_and_bad_counts(artifact: Path) -> None:
    from pushrl.policies.serving.http import serve

    with pytest.raises(ValueError, match="workers must be >= 1"):
        serve(artifact, workers=0)
    with pytest.raises(ValueError, match="--workers 1"):
        serve(artifact, workers=2, admin_token="t0ken-for-the-tests-0123456789")


def test_loadtest_cli_finds_and_prints_the_highest_zero_error_load(artifact: Path, capsys) -> None:
    from pushrl.experiments.cli import loadtest_cli

    code = loadtest_cli([str(artifact), "--find-max", "--concurrency", "2", "--calls", "20", "--time-limit", "10",
                         "--p99-ms", "1000"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "highest zero-error load with p99 <= 1000 ms: concurrency" in out and out.count("\n") >= 4
    assert loadtest_cli([str(artifact), "--find-max", "--p99-ms", "0"]) != 0
