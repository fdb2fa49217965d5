"""Random corruptions of a valid log: accepted unchanged, or a LoggedDataError — never another exception."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushrl.envs.common.errors import LoggedDataError
from pushrl.envs.data.catalogue import Catalogue
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.schema import LogSchema
from pushrl.envs.data.synthetic import (
    SCHEMA,
    SyntheticConfig,
    catalogue_frame,
    make_truth,
    simulate_rows,
)

TRUTH = make_truth(SyntheticConfig(n_rows=60, n_users=10, n_actions=4, n_positions=2, seed=3))
BASE = simulate_rows(TRUTH)
CATALOGUE = Catalogue.from_frame(catalogue_frame(TRUTH), id_column="action")
VALUES = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-10, max_value=10),
    st.text(max_size=5),
    st.booleans(),
)


@st.composite
def corruptions(draw):
    frame = BASE.copy()
    n_edits = draw(st.integers(min_value=0, max_value=4))
    for _ in range(n_edits):
        kinds = ["drop_rows"] + (["cell", "drop_column"] if len(frame) and len(frame.columns) else [])
        kind = draw(st.sampled_from(kinds))
        if kind == "cell":
            col = draw(st.sampled_from(list(frame.columns)))
            row = draw(st.integers(min_value=0, max_value=len(frame) - 1))
            value = draw(VALUES)
            frame[col] = frame[col].astype(object)
            frame.iloc[row, frame.columns.get_loc(col)] = value
        elif kind == "drop_column":
            frame = frame.drop(columns=[draw(st.sampled_from(list(frame.columns)))])
        else:
            k = draw(st.integers(min_value=0, max_value=len(frame)))
            frame = frame.iloc[k:]
    return frame


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corruptions())
def test_corruption_is_refused_or_accepted_unchanged(frame: pd.DataFrame):
    original = frame.copy()
    try:
        data = LoggedData.from_frame(frame, schema=SCHEMA, catalogue=CATALOGUE, n_positions=2)
    except LoggedDataError:
        return
    # accepted: the input is untouched and every row survives with its values
    pd.testing.assert_frame_equal(frame, original)
    assert data.n_rounds == len(frame)
    np.testing.assert_array_equal(data.reward("click"), pd.to_numeric(frame["click"]).to_numpy(dtype=float))
    np.testing.assert_array_equal(data.catalogue.ids[data.action], frame["action"].to_numpy())


WORDS = st.sampled_from(["unknown", "n/a", "?", "12abc", "True", "-"])


@st.composite
def numbers_with_words(draw):
    """An integer feature written as text, with some cells replaced by words (and some left missing)."""
    n = draw(st.integers(min_value=1, max_value=80))
    cells: list[object] = [str(v) for v in draw(st.lists(st.integers(-10**6, 10**6), min_size=n, max_size=n))]
    words = draw(st.sets(st.integers(0, n - 1), max_size=n))
    missing = draw(st.sets(st.integers(0, n - 1), max_size=3)) - words
    for i in words:
        cells[i] = draw(WORDS)
    for i in missing:
        cells[i] = None
    return cells, sorted(words), n - len(missing)


@settings(max_examples=150, deadline=None)
@given(numbers_with_words())
def test_numbers_with_a_few_words_are_refused_naming_exactly_those_rows(case):
    cells, words, n_present = case
    frame = pd.DataFrame({"action": [0] * len(cells), "click": [0.0] * len(cells), "store": cells})
    schema = LogSchema(rewards=("click",), optional_rewards=())
    catalogue = Catalogue.from_ids([0])
    looking = 0 < len(words) <= 0.05 * n_present
    try:
        data = LoggedData.from_frame(frame, schema=schema, catalogue=catalogue)
    except LoggedDataError as err:
        if looking:
            assert err.column == "store" and err.rows == words[:5] and err.n_bad == len(words)
            assert "data.categorical" in str(err)
        else:  # not numeric-looking: then only a missing category (or number) can be refused
            assert "missing" in str(err) and err.column == "store"
        return
    assert not looking and n_present == len(cells)
    assert data.columns.categorical_features == ("store",)  # text in a frame: categorical, as its dtype says
    # declared categorical, the same column always loads (when nothing is missing)
    if n_present == len(cells):
        declared = LogSchema(rewards=("click",), optional_rewards=(), categorical_features=("store",))
        data = LoggedData.from_frame(frame, schema=declared, catalogue=catalogue)
        assert data.frame["store"].tolist() == [str(c) for c in cells]
