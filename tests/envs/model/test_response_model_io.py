"""ResponseModel save/load: round trip, atomic files, schema-mismatch refusal."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from pushrl.envs.data.split import split_log
from pushrl.envs.data.synthetic import SyntheticConfig, generate_log
from pushrl.envs.model.response_model import ResponseModel, ResponseModelConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def fitted():
    data, _ = generate_log(SyntheticConfig(n_rows=4_000, n_users=400, n_actions=5, n_positions=2, seed=2))
    split = split_log(data)
    return split, ResponseModel.fit(split.train, split.validation, ResponseModelConfig(epochs=2, progress=False))


def test_round_trip_gives_identical_weights_and_predictions(fitted, tmp_path):
    split, model = fitted
    folder = model.save(tmp_path / "m")
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt", "schema.json"]  # no temp files left
    loaded = ResponseModel.load(folder, expected_schema=model.schema)
    a, b = model.net.state_dict(), loaded.net.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.reward_names == model.reward_names and loaded.config == model.config
    for r, v in model.predict_log(split.test).items():
        np.testing.assert_array_equal(loaded.predict_log(split.test)[r], v)


def test_schema_names_the_feature_contract(fitted):
    _, model = fitted
    s = model.schema
    assert s["catalogue_ids"] == [0, 1, 2, 3, 4]
    assert s["reward_names"] == ["click", "conversion", "revenue"]
    assert s["context_encoder"]["numeric"] == ["u0", "u1", "u2", "u3"]
    json.dumps(s)  # plain JSON


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (lambda s: s["catalogue_ids"].__setitem__(0, 42), r"catalogue_ids\[0\]"),
        (lambda s: s["context_encoder"]["means"].__setitem__(1, 9.0), r"context_encoder\.means\[1\]"),
        (lambda s: s["context_encoder"]["vocabularies"].__setitem__("segment", ["s0"]), r"context_encoder\.vocabularies\.segment"),
        (lambda s: s.__setitem__("reward_names", ["click"]), "reward_names"),
        (lambda s: s.pop("n_positions"), "n_positions"),
        (lambda s: s.__setitem__("extra", 1), "extra"),
    ],
)
def test_load_refuses_a_schema_mismatch_naming_the_key(fitted, tmp_path, edit, key):
    _, model = fitted
    model.save(tmp_path / "m")
    expected = copy.deepcopy(model.schema)
    edit(expected)
    with pytest.raises(ValueError, match=rf"schema mismatch at key '{key}"):
        ResponseModel.load(tmp_path / "m", expected_schema=expected)


def test_load_refuses_weights_that_do_not_match_the_schema(fitted, tmp_path):
    _, model = fitted
    folder = model.save(tmp_path / "m")
    doc = json.loads((folder / "schema.json").read_text())
    doc["config"]["embedding_dim"] = model.config.embedding_dim + 1
    (folder / "schema.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="model.pt does not match its schema.json"):
        ResponseModel.load(folder)


def test_saving_again_replaces_the_files_atomically(fitted, tmp_path):
    _, model = fitted
    folder = model.save(tmp_path / "m")
    before = (folder / "schema.json").read_text()
    model.save(folder)
    assert (folder / "schema.json").read_text() == before
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
