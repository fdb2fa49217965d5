"""The artifact folder: round trip, edits refused by name, future schema versions, width mismatches."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.agents.export import linear_onnx
from pushrl.envs.data.features import ContextEncoder
from pushrl.policies.artifact import (
    MANIFEST_FILE,
    MODEL_FILE,
    ArtifactError,
    BusinessRules,
    Exploration,
    Manifest,
    content_hash,
    load_artifact,
    write_artifact,
)

ACTIONS = ("No E-Mail", "Mens E-Mail", "Womens E-Mail")


@pytest.fixture()
def encoder() -> ContextEncoder:
    frame = pd.DataFrame({"recency": [1.0, 5.0, 9.0], "history": [10.0, 200.0, 40.0],
                          "channel": ["Web", "Phone", "Web"]})
    return ContextEncoder.fit(frame, ["recency", "history"], ["channel"])  # width 2 + (2 + 1) = 5


def make_manifest(encoder: ContextEncoder, **kw) -> Manifest:
    base = dict(policy_kind="linear", encoder=encoder, action_ids=ACTIONS, no_push_action="No E-Mail",
                exploration=Exploration("epsilon", 0.1), data_fingerprint="abc123",
                training_config={"lr": 0.01}, metrics={"ips": 0.12})
    return Manifest(**{**base, **kw})


def model(encoder: ContextEncoder, n_actions: int = 3, seed: int = 0) -> bytes:
    return linear_onnx(np.random.default_rng(seed).normal(size=(n_actions, encoder.n_features)))


def test_round_trip(tmp_path: Path, encoder: ContextEncoder) -> None:
    folder = write_artifact(tmp_path / "art", model(encoder), make_manifest(encoder))
    art = load_artifact(folder)
    m = art.manifest
    assert m.encoder == encoder and m.action_ids == ACTIONS and m.no_push_action == "No E-Mail"
    assert m.exploration == Exploration("epsilon", 0.1) and m.slate_size == 1
    assert m.business_rules == BusinessRules()
    assert m.metrics == {"ips": 0.12} and m.training_config == {"lr": 0.01} and m.data_fingerprint == "abc123"
    assert m.created_at.endswith("Z") and m.pushrl_version
    assert set(m.files) == {MODEL_FILE}
    raw = json.loads((folder / MANIFEST_FILE).read_text())
    assert raw["input_fields"] == ["recency", "history", "channel"]
    assert raw["content_sha256"] == content_hash(raw) == art.content_sha256
    assert art.policy_version == f"linear-{art.content_sha256[:12]}"
    assert sorted(p.name for p in folder.iterdir()) == [MANIFEST_FILE, MODEL_FILE]
    assert [p.name for p in tmp_path.iterdir()] == ["art"]  # no temp folders left


def test_integer_action_ids_stay_integers(tmp_path: Path, encoder: ContextEncoder) -> None:
    ids = (np.int64(3), 7, 11)
    folder = write_artifact(tmp_path / "a", model(encoder), make_manifest(encoder, action_ids=ids, no_push_action=None))
    assert load_artifact(folder).manifest.action_ids == (3, 7, 11)
    assert json.loads((folder / MANIFEST_FILE).read_text())["action_ids"] == [3, 7, 11]


@pytest.mark.parametrize("name", [MODEL_FILE, MANIFEST_FILE])
def test_edited_file_is_refused_by_name(tmp_path: Path, encoder: ContextEncoder, name: str) -> None:
    folder = write_artifact(tmp_path / "a", model(encoder), make_manifest(encoder))
    if name == MODEL_FILE:
        data = bytearray((folder / name).read_bytes())
        data[-5] ^= 0xFF
        (folder / name).write_bytes(bytes(data))
    else:
        raw = json.loads((folder / name).read_text())
        raw["exploration"]["epsilon"] = 0.5
        (folder / name).write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match=name.replace(".", r"\.")):
        load_artifact(folder)


def test_missing_file_is_named(tmp_path: Path, encoder: ContextEncoder) -> None:
    folder = write_artifact(tmp_path / "a", model(encoder), make_manifest(encoder))
    (folder / MODEL_FILE).unlink()
    with pytest.raises(ArtifactError, match="missing policy.onnx"):
        load_artifact(folder)
    with pytest.raises(ArtifactError, match="does not exist"):
        load_artifact(tmp_path / "nowhere")


def test_future_schema_version_is_refused_clearly(tmp_path: Path, encoder: ContextEncoder) -> None:
    folder = write_artifact(tmp_path / "a", model(encoder), make_manifest(encoder))
    raw = json.loads((folder / MANIFEST_FILE).read_text())
    raw["schema_version"] = 3
    raw["a_field_from_the_future"] = {"x": 1}
    raw["content_sha256"] = content_hash(raw)
    (folder / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match=r"schema_version 3, newer than this pushrl reads \(2\); upgrade"):
        load_artifact(folder)


def test_fixed_action_set_artifacts_stay_schema_version_1(tmp_path: Path, encoder: ContextEncoder) -> None:
    """Only feature-based artifacts (with a catalogue) need version 2, so older readers keep loading the rest."""
    folder = write_artifact(tmp_path / "a", model(encoder), make_manifest(encoder))
    raw = json.loads((folder / MANIFEST_FILE).read_text())
    assert raw["schema_version"] == 1 and "catalogue" not in raw
    raw["schema_version"] = 2  # claims a catalogue it does not have
    raw["content_sha256"] = content_hash(raw)
    (folder / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="schema_version must be 1"):
        load_artifact(folder)


def test_input_width_mismatch_names_both_numbers(tmp_path: Path, encoder: ContextEncoder) -> None:
    wrong = linear_onnx(np.ones((3, encoder.n_features + 2)))
    with pytest.raises(ArtifactError, match=r"input width 7 .* != encoder width 5"):
        write_artifact(tmp_path / "a", wrong, make_manifest(encoder))
    assert list(tmp_path.iterdir()) == []  # nothing installed, no temp folder left


def test_output_width_mismatch_names_both_numbers(tmp_path: Path, encoder: ContextEncoder) -> None:
    with pytest.raises(ArtifactError, match=r"output width 4 .* != number of actions 3"):
        write_artifact(tmp_path / "a", model(encoder, n_actions=4), make_manifest(encoder))


def test_replacing_an_artifact_only_after_the_new_one_is_complete(tmp_path: Path, encoder: ContextEncoder) -> None:
    folder = write_artifact(tmp_path / "a", model(encoder, seed=1), make_manifest(encoder))
    first = load_artifact(folder).policy_version
    with pytest.raises(ArtifactError):  # a broken new artifact leaves the old one in place
        write_artifact(folder, model(encoder, n_actions=4), make_manifest(encoder))
    assert load_artifact(folder).policy_version == first
    write_artifact(folder, model(encoder, seed=2), make_manifest(encoder))
    assert load_artifact(folder).policy_version != first
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"action_ids": ("a", "a", "b")}, "unique"),
        ({"action_ids": ("a", 1.5, "b")}, "strings or integers"),
        ({"no_push_action": "Nope"}, "no_push_action 'Nope' is not one of"),
        ({"output": "logits"}, "output must be one of"),
        ({"output": "probabilities"}, "exploration must be type 'none'"),
        ({"slate_size": 4}, "exceeds the number of actions 3"),
        ({"slate_size": 0}, "slate_size must be an integer >= 1"),
    ],
)
def test_invalid_manifests_are_refused(encoder: ContextEncoder, kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_manifest(encoder, **kw)


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"type": "ucb"}, "exploration.type"), ({"type": "epsilon", "epsilon": 1.5}, "epsilon"),
     ({"type": "softmax", "temperature": 0.0}, "temperature")],
)
def test_invalid_exploration(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Exploration(**kw)


def test_non_json_metrics_are_refused(tmp_path: Path, encoder: ContextEncoder) -> None:
    with pytest.raises(ValueError, match="metrics"):
        write_artifact(tmp_path / "a", model(encoder), make_manifest(encoder, metrics={"ips": float("nan")}))


def test_a_folder_that_is_not_an_artifact_is_never_replaced(tmp_path: Path, encoder: ContextEncoder) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="not an artifact folder"):
        write_artifact(tmp_path / "notes", model(encoder), make_manifest(encoder))
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
    (tmp_path / "empty").mkdir()
    assert load_artifact(write_artifact(tmp_path / "empty", model(encoder), make_manifest(encoder)))


@pytest.mark.parametrize("entry", ["../../../../etc/hostname", "/etc/hostname", "sub/../../x", "..", "a\\..\\b"])
def test_manifest_files_must_stay_inside_the_folder(tmp_path: Path, encoder: ContextEncoder, entry: str) -> None:
    """A manifest naming a file outside the artifact (with a matching hash and content_sha256) is refused by name."""
    folder = write_artifact(tmp_path / "a", model(encoder), make_manifest(encoder))
    secret = tmp_path / "secret"
    secret.write_bytes(b"not yours")
    raw = json.loads((folder / MANIFEST_FILE).read_text())
    raw["files"][entry] = hashlib.sha256(b"not yours").hexdigest()
    raw["content_sha256"] = content_hash(raw)
    (folder / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="files entry") as err:
        load_artifact(folder)
    assert repr(entry) in str(err.value)


def test_manifest_file_symlinked_out_is_refused(tmp_path: Path, encoder: ContextEncoder) -> None:
    folder = write_artifact(tmp_path / "a", model(encoder), make_manifest(encoder))
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"outside")
    (folder / "extra.bin").symlink_to(outside)
    raw = json.loads((folder / MANIFEST_FILE).read_text())
    raw["files"]["extra.bin"] = hashlib.sha256(b"outside").hexdigest()
    raw["content_sha256"] = content_hash(raw)
    (folder / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="'extra.bin' resolves outside"):
        load_artifact(folder)
