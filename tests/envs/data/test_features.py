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


def test_ranges_are_the_training_min_and_max_and_round_trip():
    frame = pd.DataFrame({"a": [1.0, np.nan, -3.0], "b": [5, 5, 7], "c": ["x", "y", "x"]})
    enc = ContextEncoder.fit(frame, ["a", "b"], ["c"])
    assert enc.ranges == {"a": (-3.0, 1.0), "b": (5.0, 7.0)}  # NaN left out of the range
    d = enc.to_dict()
    assert d["ranges"] == {"a": [-3.0, 1.0], "b": [5.0, 7.0]}
    assert ContextEncoder.from_dict(d) == enc
    assert ContextEncoder.fit(frame.iloc[:0], ["a"], []).ranges == {}  # no rows: no range


def test_encoders_saved_without_ranges_still_load_and_serialise_unchanged():
    old = {"numeric": ["a"], "means": [0.0], "stds": [1.0], "categorical": ["c"], "vocabularies": {"c": ["x"]},
           "unknown": "bucket"}
    enc = ContextEncoder.from_dict(old)
    assert enc.ranges == {} and enc.to_dict() == old  # an old manifest's content hash is unchanged


@pytest.mark.parametrize(("ranges", "message"), [
    ({"a": [1.0]}, r"ranges\.a: must be \[min, max\] numbers"),
    ({"a": [True, 2]}, r"ranges\.a: must be \[min, max\] numbers"),
    ({"a": [3.0, 1.0]}, r"ranges\.a: must be finite \[min, max\] with min <= max"),
    ({"zz": [0, 1]}, r"ranges\.zz: not a numeric field"),
    ([0, 1], r"ranges must be an object"),
])
def test_bad_ranges_refused_naming_the_field(ranges, message):
    d = {**ContextEncoder.fit(FRAME, ["a"], ["c"]).to_dict(), "ranges": ranges}
    with pytest.raises(ValueError, match=message):
        ContextEncoder.from_dict(d)
