"""The Open Bandit Dataset sample (ZOZOTOWN, uniform-random logging) as LoggedData.

Mapping (the same conventions as the Open Bandit Pipeline's `OpenBanditDataset`):
rows sorted by timestamp; `item_id` -> action (promotion id); `position` 1/2/3
-> 0/1/2; `propensity_score` -> propensity; `click` -> reward. Context:
`user_feature_0..3` (categorical hashes) and the `user-item_affinity_*`
columns (numeric). Catalogue: `item_context.csv` (`item_feature_0` numeric,
`item_feature_1..3` categorical).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pushrl.envs.common.errors import LoggedDataError
from pushrl.envs.data.catalogue import Catalogue
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.paths import data_root
from pushrl.envs.data.schema import LogSchema

CAMPAIGNS = ("all", "men", "women")
N_POSITIONS = 3
USER_FEATURES = tuple(f"user_feature_{i}" for i in range(4))


def obd_files(campaign: str, root: str | Path | None = None, policy: str = "random") -> tuple[Path, Path]:
    """Paths of the campaign's log and item_context.csv."""
    if campaign not in CAMPAIGNS:
        raise ValueError(f"unknown OBD campaign {campaign!r}; allowed: {list(CAMPAIGNS)}")
    base = Path(root) if root is not None else data_root() / "obd"
    folder = base / policy / campaign
    return folder / f"{campaign}.csv", folder / "item_context.csv"


def load_obd_catalogue(path: str | Path) -> Catalogue:
    items = pd.read_csv(path, index_col=0)
    for col in ("item_feature_1", "item_feature_2", "item_feature_3"):
        items[col] = items[col].astype(str)
    return Catalogue.from_frame(items, id_column="item_id", source=str(path))


def load_obd(campaign: str = "all", root: str | Path | None = None, policy: str = "random") -> LoggedData:
    """Load one campaign of the embedded OBD sample as validated LoggedData."""
    log_path, item_path = obd_files(campaign, root, policy)
    for p in (log_path, item_path):
        if not p.exists():
            raise LoggedDataError("file does not exist", expected="the embedded OBD sample (see data/obd/README.md)", source=str(p))
    raw = pd.read_csv(log_path, index_col=0)
    raw = raw.sort_values("timestamp", kind="stable").reset_index(drop=True)
    if raw["position"].min() < 1:
        raise LoggedDataError("position below 1", column="position", expected="the OBD slots 1, 2, 3", source=str(log_path))
    raw["position"] = raw["position"] - 1
    affinity = tuple(c for c in raw.columns if c.startswith("user-item_affinity_"))
    schema = LogSchema(
        action="item_id",
        rewards=("click",),
        optional_rewards=(),
        propensity="propensity_score",
        timestamp="timestamp",
        user_id=None,
        position="position",
        numeric_features=affinity,
        categorical_features=USER_FEATURES,
    )
    data = LoggedData.from_frame(
        raw,
        schema=schema,
        catalogue=load_obd_catalogue(item_path),
        n_positions=N_POSITIONS,
        name=f"obd_{campaign}",
        source=str(log_path),
    )
    return data.with_notes(f"Open Bandit Dataset sample, {policy} policy, campaign '{campaign}' (Saito et al., NeurIPS 2021)")
