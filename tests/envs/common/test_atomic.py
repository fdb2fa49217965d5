"""Atomic writes: a crash mid-write leaves the earlier file intact and no temp files behind."""

from __future__ import annotations

import json

import pytest

from pushrl.envs.common.atomic import atomic_path, write_json, write_text


def test_crash_keeps_previous_file(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "half')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_write_creates_parents_and_replaces(tmp_path):
    target = tmp_path / "a" / "b" / "report.md"
    write_text(target, "one")
    write_text(target, "two")
    assert target.read_text() == "two"


def test_nan_refused_in_json(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "x.json", {"v": float("nan")})
    assert not (tmp_path / "x.json").exists()
