"""data.features (allow-list) and data.exclude: what a model may read, refused by name when wrong."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from pushrl.envs.common.errors import LoggedDataError
from pushrl.envs.data.describe import describe_file
from pushrl.envs.data.loaders import iter_log_chunks, load_catalogue, load_log
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.schema import LogSchema
from pushrl.envs.data.split import split_log
from pushrl.envs.data.synthetic import SCHEMA
from pushrl.envs.model.response_model import ResponseModel, ResponseModelConfig

torch.set_num_threads(1)


def _schema(**kw) -> LogSchema:
    return dataclasses.replace(SCHEMA, **kw)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("key", ["features", "exclude"])
def test_unknown_name_refused_with_the_name_and_the_file_columns(log_files, raw_log, fmt, key):
    schema = _schema(**{key: ("u0", "discount_pct")})
    cat = log_files["catalogue"]
    calls = {
        "load_log": lambda: load_log(log_files[fmt], schema, catalogue=cat),
        "load_log chunked": lambda: load_log(log_files[fmt], schema, catalogue=cat, chunksize=50),
        "describe_file": lambda: describe_file(log_files[fmt], schema, load_catalogue(cat), chunksize=50),
        "from_frame": lambda: LoggedData.from_frame(raw_log, schema=schema),
    }
    for how, call in calls.items():
        with pytest.raises(LoggedDataError) as info:
            call()
        msg = str(info.value)
        assert info.value.column == "discount_pct", how
        assert "'discount_pct'" in msg and f"data.{key}" in msg and "\n" not in msg, how
        assert all(f"'{c}'" in msg for c in raw_log.columns), how  # the file's columns are listed


def test_a_feature_with_a_role_or_excluded_is_refused_by_name():
    with pytest.raises(ValueError, match=r"column 'propensity' is both a feature \(data.features\) and a declared role "
                                         r"\(data.propensity\)"):
        _schema(features=("u0", "propensity"))
    with pytest.raises(ValueError, match=r"column 'click' is both a feature .* \(data.rewards\)"):
        _schema(features=("click",))
    with pytest.raises(ValueError, match=r"column 'u1' is both a feature \(data.features\) and excluded"):
        _schema(features=("u0", "u1"), exclude=("u1",))
    with pytest.raises(ValueError, match=r"column 'click' is both excluded \(data.exclude\) and a required reward"):
        _schema(exclude=("click",))
    with pytest.raises(ValueError, match=r"LogSchema.exclude lists \['u0'\] more than once"):
        _schema(exclude=["u0", "u0"])
    with pytest.raises(ValueError, match=r"must be a list of column names, got the string 'u0'"):
        _schema(features="u0")


def test_allow_list_restricts_the_features_in_its_order(raw_log):
    data = LoggedData.from_frame(raw_log, schema=_schema(features=["segment", "u2", "u0"]))  # a list, as from a config
    assert data.columns.numeric_features == ("u2", "u0") and data.columns.categorical_features == ("segment",)
    assert set(data.frame.columns).isdisjoint({"u1", "u3", "recent_pushes"})
    assert data.reward_names == ("click", "conversion", "revenue")  # roles are untouched


def test_allow_list_keeps_declared_types(raw_log):
    frame = raw_log.assign(tier=np.arange(len(raw_log)) % 3)  # numbers that are categories
    data = LoggedData.from_frame(frame, schema=_schema(features=("tier", "u1"), categorical_features=("tier",)))
    assert data.columns.numeric_features == ("u1",) and data.columns.categorical_features == ("tier",)
    assert set(data.frame["tier"]) == {"0", "1", "2"}


def test_allow_list_is_what_the_response_model_encodes(raw_log):
    data = LoggedData.from_frame(raw_log, schema=_schema(features=("u0", "segment")))
    split = split_log(data)
    model = ResponseModel.fit(split.train, split.validation, ResponseModelConfig(epochs=1, progress=False))
    assert model.encoder.input_fields == ["u0", "segment"]
    assert model.encoder.n_features == 1 + raw_log["segment"].nunique() + 1  # u0, one-hot segments, unknown bucket
    assert model.predict_log(split.test)["click"].shape == (split.test.n_rounds,)


def test_exclude_removes_a_column_and_skips_its_validation(raw_log):
    frame = raw_log.assign(note=["free text"] * (len(raw_log) - 1) + [None], u3=np.nan)  # both would be refused
    data = LoggedData.from_frame(frame, schema=_schema(exclude=("note", "u3")))
    assert "u3" not in data.feature_names and "note" not in data.feature_names
    assert {"u3", "note"}.isdisjoint(data.frame.columns)
    assert data.feature_names == ("u0", "u1", "u2", "recent_pushes", "segment")
    with pytest.raises(LoggedDataError, match="NaN"):
        LoggedData.from_frame(frame, schema=_schema(exclude=("note",)))


def test_excluding_an_optional_role_turns_it_off(raw_log):
    data = LoggedData.from_frame(raw_log, schema=_schema(exclude=("revenue", "timestamp", "propensity")))
    assert data.reward_names == ("click", "conversion")
    assert data.timestamp is None and data.pscore is None
    assert {"revenue", "timestamp", "propensity"}.isdisjoint(data.feature_names)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_streamed_paths_honour_features_and_exclude(log_files, fmt):
    cat = load_catalogue(log_files["catalogue"])
    schema = _schema(exclude=("u1", "segment"))
    desc = describe_file(log_files[fmt], schema, cat, chunksize=50)
    assert desc.features == {"numeric": ["u0", "u2", "u3", "recent_pushes"], "categorical": []}
    chunks = [c for c, _, _ in iter_log_chunks(log_files[fmt], _schema(features=("u3",)), cat, chunksize=64)]
    assert len(chunks) == 7 and all("u3" in c.columns and "u0" not in c.columns for c in chunks)
    whole = load_log(log_files[fmt], schema, catalogue=cat, chunksize=50)
    assert whole.feature_names == ("u0", "u2", "u3", "recent_pushes")


def test_config_keys_reach_the_schema(tmp_path, raw_log, raw_catalogue):
    from omegaconf import OmegaConf

    from pushrl.experiments.config import DataConfig
    from pushrl.experiments.data import load_data

    raw_log.to_csv(tmp_path / "log.csv", index=False)
    raw_catalogue.to_csv(tmp_path / "cat.csv", index=False)
    cfg = OmegaConf.structured(DataConfig(kind="file", name="mine", path=str(tmp_path / "log.csv"),
                                          catalogue=str(tmp_path / "cat.csv"), features=["u0", "segment"],
                                          exclude=["revenue"]))
    data, _ = load_data(cfg)
    assert data.feature_names == ("u0", "segment") and data.reward_names == ("click", "conversion")
    cfg.features = ["u0", "basket"]
    with pytest.raises(LoggedDataError, match=r"column 'basket': data.features names a column that is not in the file"):
        load_data(cfg)
    cfg.features, cfg.exclude = None, []
    assert load_data(cfg)[0].feature_names == ("u0", "u1", "u2", "u3", "recent_pushes", "segment")


def test_no_allow_list_is_unchanged(raw_log):
    """None (the default) keeps today's rule: every column without a role is a feature."""
    data = LoggedData.from_frame(raw_log, schema=SCHEMA)
    rest = [c for c in raw_log.columns if c not in SCHEMA.role_columns]
    assert sorted(data.feature_names) == sorted(rest)
    assert pd.api.types.is_float_dtype(data.frame["u0"])


def test_describe_names_the_features(log_files):
    desc = describe_file(log_files["csv"], _schema(features=("u2", "segment")), load_catalogue(log_files["catalogue"]))
    assert "features (model inputs; choose them with data.features / data.exclude): 1 numeric (u2), " \
           "1 categorical (segment)" in desc.to_text()


def test_declared_categorical_columns_are_categories_and_the_rest_is_inferred():
    import pandas as pd

    from pushrl.envs.data.logged_data import LoggedData
    from pushrl.envs.data.schema import LogSchema

    frame = pd.DataFrame({"action": [0, 1, 0, 1], "click": [0, 1, 0, 0], "store_id": [3, 7, 3, 12],
                          "age": [20.0, 31.0, 45.0, 52.0], "city": ["a", "b", "a", "c"]})
    schema = LogSchema(propensity=None, timestamp=None, user_id=None, position=None, optional_rewards=(),
                       categorical_features=("store_id",))
    data = LoggedData.from_frame(frame, schema=schema)
    assert data.columns.numeric_features == ("age",)
    assert set(data.columns.categorical_features) == {"store_id", "city"}
