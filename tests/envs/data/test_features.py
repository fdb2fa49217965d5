"""Context encoding: standardisation, one-hot with an explicit unknown bucket, JSON round-trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pushrl.envs.data.features import ContextEncoder

FRAME = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [5, 5, 5, 5], "c": ["x", "y", "x", "z"]})


def test_numeric_standardised_and_constant_column_safe():
    enc = ContextEncoder.fit(FRAME, ["a", "b"], ["c"])
    x = enc.transform(FRAME)
    np.testing.assert_allclose(x[:, 0], (FRAME["a"] - 2.5) / FRAME["a"].std(ddof=0))
    np.testing.assert_allclose(x[:, 1], 0.0)


def test_one_hot_with_unknown_bucket():
    enc = ContextEncoder.fit(FRAME, ["a"], ["c"])
    assert enc.feature_names == ["a", "c=x", "c=y", "c=z", "c=__unknown__"]
    x = enc.transform(pd.DataFrame({"a": [1.0, 1.0], "c": ["y", "never-seen"]}))
    np.testing.assert_array_equal(x[:, 1:], [[0, 1, 0, 0], [0, 0, 0, 1]])


def test_unknown_refused_when_configured():
    enc = ContextEncoder.fit(FRAME, ["a"], ["c"], unknown="refuse")
    with pytest.raises(ValueError, match="field 'c' has unknown category 'w' at row 1"):
        enc.transform([{"a": 1, "c": "x"}, {"a": 2, "c": "w"}])


def test_missing_field_and_nan_refused():
    enc = ContextEncoder.fit(FRAME, ["a"], ["c"])
    with pytest.raises(ValueError, match=r"missing field\(s\) \['c'\]"):
        enc.transform([{"a": 1.0}])
    with pytest.raises(ValueError, match="field 'a' is not a finite number at row 0"):
        enc.transform([{"a": float("nan"), "c": "x"}])


def test_dict_round_trip_and_dicts_equal_frame():
    enc = ContextEncoder.fit(FRAME, ["a", "b"], ["c"])
    again = ContextEncoder.from_dict(enc.to_dict())
    np.testing.assert_array_equal(enc.transform(FRAME), again.transform(FRAME.to_dict(orient="records")))
