"""data.history wiring: an own log with repeat users gets `recent_pushes` (the response model's fatigue input, not a
context feature); data.history=off and the embedded samples are left as they were."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from pushrl.envs.data.hillstrom import load_hillstrom
from pushrl.envs.data.history import history_skip_reason
from pushrl.envs.data.obd import load_obd
from pushrl.experiments.config import register_configs
from pushrl.experiments.outputs import RunFolder
from pushrl.experiments.stages import stage_data


def compose_cfg(*overrides: str):
    GlobalHydra.instance().clear()
    register_configs()
    try:
        with initialize_config_module(config_module="pushrl.configs", version_base="1.3"):
            return compose("config", overrides=["also=[]", "progress=false", *overrides])
    finally:
        GlobalHydra.instance().clear()


@pytest.fixture(scope="module")
def log_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame({
        "user_id": rng.integers(0, 25, n).astype(str),
        "timestamp": pd.Timestamp("2026-03-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 60, n) / 4, unit="D"),
        "x0": rng.normal(size=n),
        "action": rng.choice(["a", "b", "none"], n),
        "propensity": 1 / 3,
        "click": rng.integers(0, 2, n),
    }).drop_duplicates(["user_id", "timestamp", "action"]).reset_index(drop=True)
    path = tmp_path_factory.mktemp("log") / "log.csv"
    frame.to_csv(path, index=False)
    return path, frame


def brute_recent(frame: pd.DataFrame, window_days: float) -> np.ndarray:
    t = frame["timestamp"].to_numpy()
    out = np.zeros(len(frame))
    for i in range(len(frame)):
        for j in range(len(frame)):
            same = frame["user_id"].iat[j] == frame["user_id"].iat[i] and frame["action"].iat[j] != "none"
            if same and t[j] < t[i] and t[j] >= t[i] - pd.Timedelta(days=window_days):
                out[i] += 1
    return out


def _cfg(path, *extra):
    return compose_cfg("data=custom", f"data.path={path}", "data.no_push_action=none", *extra)


def test_auto_adds_recent_pushes_equal_to_brute_force(log_file, tmp_path):
    path, frame = log_file
    cfg = _cfg(path)
    run = RunFolder(tmp_path)
    log = stage_data(cfg, run)
    data = log.data
    assert "recent_pushes" in data.frame.columns and "recent_pushes" not in data.feature_names
    assert data.feature_names == ("x0",)
    want = brute_recent(frame, cfg.sequential.fatigue_window)
    # the loaded log keeps the file's row order
    np.testing.assert_array_equal(data.frame["recent_pushes"].to_numpy(), want)
    assert want.max() >= 2
    # the split keeps the column (the response model reads it from every part)
    assert "recent_pushes" in log.split.train.frame.columns
    assert (tmp_path / "custom" / "history.csv").is_file()
    assert run.metrics["custom/data/history/repeat_users"] > 0
    assert run.metrics["custom/data/history/mean_recent_pushes"] == pytest.approx(want.mean())
    assert any("push history derived" in body for _, body in run.sections)


def test_off_leaves_the_log_as_it_was(log_file, tmp_path):
    path, _ = log_file
    run = RunFolder(tmp_path)
    data = stage_data(_cfg(path, "data.history=off"), run).data
    assert "recent_pushes" not in data.frame.columns
    assert not any(k.startswith("custom/data/history") for k in run.metrics)


def test_bad_mode_is_refused(log_file, tmp_path):
    path, _ = log_file
    with pytest.raises(ValueError, match="data.history"):
        stage_data(_cfg(path, "data.history=sometimes"), RunFolder(tmp_path))


def test_embedded_samples_are_not_touched():
    assert history_skip_reason(load_obd("all")) is not None
    assert history_skip_reason(load_hillstrom()) is not None
