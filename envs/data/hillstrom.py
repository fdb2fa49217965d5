"""The Hillstrom e-mail campaign (MineThatData, 2008) as LoggedData.

One row per customer; the action is the randomised `segment`, with ids exactly
the three logged strings; "No E-Mail" is a real action with its own outcomes.
Propensity 1/3 for every row (the experiment's design). Rewards: visit,
conversion, spend. No timestamps and no user ids: `split_log` falls back to a
seeded random split stratified by action and says so. The data config
(`configs/data/hillstrom.yaml`) declares "No E-Mail" as the log's no-push action,
which is all the run's generic uplift analysis needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pushrl.envs.common.errors import LoggedDataError
from pushrl.envs.data.catalogue import Catalogue
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.paths import data_root
from pushrl.envs.data.schema import LogSchema

ACTIONS = ("No E-Mail", "Mens E-Mail", "Womens E-Mail")
NUMERIC = ("recency", "history", "mens", "womens", "newbie")
CATEGORICAL = ("history_segment", "zip_code", "channel")
REWARDS = ("visit", "conversion", "spend")
SCHEMA = LogSchema(
    action="segment",
    rewards=REWARDS,
    optional_rewards=(),
    propensity="propensity",
    timestamp=None,
    user_id=None,
    position=None,
    numeric_features=NUMERIC,
    categorical_features=CATEGORICAL,
)


def hillstrom_catalogue() -> Catalogue:
    """The three actions with two promotion features: is it an e-mail, and whose merchandise."""
    frame = pd.DataFrame(
        {"action": list(ACTIONS), "is_email": [0.0, 1.0, 1.0], "merchandise": ["none", "mens", "womens"]}
    )
    return Catalogue.from_frame(frame, id_column="action")


def load_hillstrom(path: str | Path | None = None) -> LoggedData:
    """Load the embedded sample (or another file with the same columns) as validated LoggedData."""
    path = Path(path) if path is not None else data_root() / "hillstrom" / "hillstrom.csv"
    if not path.exists():
        raise LoggedDataError("file does not exist", expected="the Hillstrom CSV (see data/hillstrom/README.md)", source=str(path))
    raw = pd.read_csv(path)
    if "segment" in raw.columns and "propensity" not in raw.columns:
        raw["propensity"] = np.float64(1.0 / len(ACTIONS))
    for col in ("history", "spend", "recency"):
        if col in raw.columns and pd.api.types.is_numeric_dtype(raw[col]):
            neg = raw[col].to_numpy() < 0
            if neg.any():
                raise LoggedDataError("negative value", column=col, rows=np.flatnonzero(neg), expected="a value >= 0", source=str(path))
    data = LoggedData.from_frame(raw, schema=SCHEMA, catalogue=hillstrom_catalogue(), name="hillstrom", source=str(path))
    return data.with_notes(
        "Hillstrom e-mail campaign sample (MineThatData, 2008): uniform random over 3 actions, propensity 1/3 by design"
    )
