"""Random corruptions of a valid log: accepted unchanged, or a LoggedDataError — never another exception."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pushrl.envs.common.errors import LoggedDataError
from pushrl.envs.data.catalogue import Catalogue
from pushrl.envs.data.logged_data import LoggedData
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
