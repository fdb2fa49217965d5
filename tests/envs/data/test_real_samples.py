"""The embedded real samples: bytes as published, and adapters that agree with a plain pandas read."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.envs.common.errors import LoggedDataError
from pushrl.envs.data.hillstrom import ACTIONS, load_hillstrom
from pushrl.envs.data.obd import CAMPAIGNS, load_obd, obd_files
from pushrl.envs.data.paths import data_root


def _readme_hashes(readme: Path) -> dict[str, str]:
    pairs = re.findall(r"^([0-9a-f]{64})\s+(\S+)$", readme.read_text(), flags=re.M)
    return {name: digest for digest, name in pairs}


def test_obd_files_are_byte_identical_to_their_readme():
    root = data_root() / "obd"
    hashes = _readme_hashes(root / "README.md")
    assert len(hashes) == 6
    for name, digest in hashes.items():
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == digest, name


def test_hillstrom_file_is_byte_identical_to_its_readme():
    path = data_root() / "hillstrom" / "hillstrom.csv"
    readme = (data_root() / "hillstrom" / "README.md").read_text()
    digest = re.search(r"SHA-256 `([0-9a-f]{64})`,\s*2,775,799 bytes", readme.replace("\n", " ")).group(1)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert b"\r\n" in path.read_bytes()[:200]  # CR LF kept (.gitattributes -text)


@pytest.mark.parametrize("campaign", CAMPAIGNS)
def test_obd_adapter_agrees_with_plain_read(campaign):
    data = load_obd(campaign)
    log_path, item_path = obd_files(campaign)
    raw = pd.read_csv(log_path, index_col=0).sort_values("timestamp", kind="stable")
    items = pd.read_csv(item_path, index_col=0)
    assert data.n_rounds == len(raw)
    assert data.n_actions == len(items) and data.n_positions == 3
    np.testing.assert_array_equal(data.catalogue.ids[data.action], raw["item_id"].to_numpy())
    np.testing.assert_array_equal(data.position, raw["position"].to_numpy() - 1)
    np.testing.assert_array_equal(data.pscore, raw["propensity_score"].to_numpy())
    assert data.reward("click").sum() == raw["click"].sum()
    assert data.timestamp.is_monotonic_increasing
    assert set(data.columns.categorical_features) == {f"user_feature_{i}" for i in range(4)}
    assert len(data.columns.numeric_features) == len(items)  # one affinity column per item


def test_hillstrom_adapter():
    data = load_hillstrom()
    raw = pd.read_csv(data_root() / "hillstrom" / "hillstrom.csv")
    assert tuple(data.action_ids) == ACTIONS
    np.testing.assert_array_equal(data.catalogue.ids[data.action], raw["segment"].to_numpy())
    assert np.all(data.pscore == 1 / 3)
    for r in ("visit", "conversion", "spend"):
        np.testing.assert_array_equal(data.reward(r), raw[r].to_numpy(dtype=float))
    assert data.timestamp is None and data.user_id is None


def _write(tmp_path, frame):
    p = tmp_path / "h.csv"
    frame.to_csv(p, index=False)
    return p


@pytest.mark.parametrize(
    "corrupt, column, fragment",
    [
        (lambda f: f.assign(segment=f["segment"].where(f.index != 3, "Kids E-Mail")), "segment", "not in the catalogue"),
        (lambda f: f.assign(spend=f["spend"].where(f.index != 0, 25.0)), "spend", "spend > 0 where conversion is 0"),
        (lambda f: f.assign(history=f["history"].where(f.index != 2, -5.0)), "history", "negative"),
        (lambda f: f.assign(spend=f["spend"].where(f.index != 1, -1.0)), "spend", "negative"),
        (lambda f: f.drop(columns=["channel"]), "channel", "missing"),
    ],
)
def test_hillstrom_bad_input(tmp_path, corrupt, column, fragment):
    raw = pd.read_csv(data_root() / "hillstrom" / "hillstrom.csv", nrows=200)
    with pytest.raises(LoggedDataError, match=fragment) as info:
        load_hillstrom(_write(tmp_path, corrupt(raw)))
    assert info.value.column == column
