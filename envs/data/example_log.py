"""The tutorial's sample own-log: a shop's push log and promotion catalogue, with known truth.

`write_example_log(directory)` writes two CSV files (atomically; the folder is created if missing):

``push_log.csv``: one row per push decision, sorted by time, columns in this order:
    user_id        str, "U00001".."U<n_users>" (n_users = n_rows // 10, clipped to 2,000..10,000:
                   5,000 for the default 50,000 rows; users come back many times)
    timestamp      ISO 8601 UTC date-time to the second ("2026-01-03T07:15:42Z"), over 28 days from 2026-01-01
    age            int, 18..80
    tenure_days    int, days since sign-up
    past_orders    int, orders before the log started
    sessions_30d   int, site/app sessions in the last 30 days
    device         str, "ios" / "android" / "web"
    region         str, "north" / "south" / "east" (the user's segment)
    recent_pushes  int, pushes (no-push decisions excluded) the user got in the 3 days before this row;
                   the true click rate falls with it (push fatigue)
    action         str, the promotion id pushed: one of the catalogue's, or "no_push" (nothing was sent)
    propensity     float, the logging policy's probability of that action for that row (exact)
    click          0/1 (always 0 for "no_push")
    conversion     0/1, a purchase: after a click, or organic (without one: also under "no_push")
    revenue        float >= 0, the purchase's value (0 without a purchase; 2 decimals)

``promotions.csv``: the catalogue, one row per action in the log's action order, columns
    action (id), discount (fraction, 0..0.5), category (fashion/electronics/home/beauty; "none"),
    channel (email/push/sms; "none"). The last row is "no_push": discount 0, category and channel "none".

The user columns are fixed per user and are deterministic transforms of the generator's latent user
features (age <- u0, tenure_days <- u1, past_orders <- u2, sessions_30d and device <- u3, region <-
segment), so a model that reads them can learn the true response. The shop is a `SyntheticConfig`
with 10 promotions + no-push, organic conversions (`EXAMPLE_ORGANIC`), readable promotions, and by
default the softmax business-rule logging policy ("rule": its deterministic argmax; any of
`LOGGING_POLICIES`). `example_truth` returns the generator's truth for the same arguments, with the
file's user ids, so `truth.policy_value(load_log(...), action_dist, reward)` is any policy's true
value on the file's rows. Same arguments, byte-identical files.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd

from pushrl.envs.common.atomic import atomic_path
from pushrl.envs.data.synthetic import (
    SyntheticConfig,
    SyntheticTruth,
    catalogue_frame,
    make_truth,
    simulate_rows,
)

LOG_FILE = "push_log.csv"
CATALOGUE_FILE = "promotions.csv"
EXAMPLE_PROMOTIONS = 10  # promotions, the no-push action comes on top
EXAMPLE_ORGANIC = 0.1  # SyntheticConfig.organic_conversion of the example shop
USERS_PER_ROW = 0.1
USER_RANGE = (2_000, 10_000)
REGIONS = ("north", "south", "east", "west", "central")
USER_COLUMNS = ("age", "tenure_days", "past_orders", "sessions_30d", "device", "region")
LOG_COLUMNS = ("user_id", "timestamp", *USER_COLUMNS, "recent_pushes", "action", "propensity", "click",
               "conversion", "revenue")


def example_config(n_rows: int = 50_000, seed: int = 0, logging: str = "business_rule") -> SyntheticConfig:
    """The example shop's generator settings (validated by SyntheticConfig)."""
    if isinstance(n_rows, bool) or not isinstance(n_rows, int | np.integer) or n_rows <= 0:
        raise ValueError(f"n_rows must be a positive integer, got {n_rows!r}")
    n_users = int(np.clip(int(n_rows * USERS_PER_ROW), *USER_RANGE))
    return SyntheticConfig(n_rows=int(n_rows), n_users=n_users, n_actions=EXAMPLE_PROMOTIONS + 1, no_push=True,
                           organic_conversion=EXAMPLE_ORGANIC, readable_promotions=True, logging=logging, seed=seed)


def example_truth(n_rows: int = 50_000, seed: int = 0, logging: str = "business_rule") -> SyntheticTruth:
    """The truth behind `write_example_log(dir, n_rows, seed, logging)`, keyed by the file's user ids."""
    truth = make_truth(example_config(n_rows, seed, logging))
    ids = np.array([f"U{i + 1:05d}" for i in range(truth.config.n_users)], dtype=object)
    return dataclasses.replace(truth, user_ids=ids)


def user_profiles(truth: SyntheticTruth) -> pd.DataFrame:
    """(n_users rows) readable user columns, index = the truth's user index; monotone in the latent features."""
    x = truth.user_features
    device = np.where(x[:, 3] > 0.4, "ios", np.where(x[:, 3] < -0.4, "web", "android"))
    return pd.DataFrame({
        "age": np.clip(np.round(38 + 11 * x[:, 0]), 18, 80).astype(np.int64),
        "tenure_days": np.round(300 * np.exp(0.8 * x[:, 1])).astype(np.int64),
        "past_orders": np.floor(20 * np.exp(0.5 * x[:, 2])).astype(np.int64),
        "sessions_30d": np.round(15 * np.exp(0.5 * x[:, 3])).astype(np.int64),
        "device": device.astype(object),
        "region": np.array([REGIONS[s % len(REGIONS)] for s in truth.user_segment], dtype=object),
    })


def example_frames(n_rows: int = 50_000, seed: int = 0, logging: str = "business_rule"
                   ) -> tuple[pd.DataFrame, pd.DataFrame, SyntheticTruth]:
    """(push log, promotions catalogue, truth) as written by `write_example_log`."""
    truth = example_truth(n_rows, seed, logging)
    rows = simulate_rows(truth)
    users = rows["user_id"].to_numpy()
    log = user_profiles(truth).iloc[users].reset_index(drop=True)
    log.insert(0, "timestamp", rows["timestamp"].dt.floor("s").dt.strftime("%Y-%m-%dT%H:%M:%SZ").to_numpy())
    log.insert(0, "user_id", truth.user_ids[users])
    log["recent_pushes"] = rows["recent_pushes"].to_numpy().astype(np.int64)
    log["action"] = rows["action"].to_numpy()
    log["propensity"] = rows["propensity"].to_numpy()
    for reward in ("click", "conversion"):
        log[reward] = rows[reward].to_numpy().astype(np.int64)
    log["revenue"] = rows["revenue"].to_numpy()
    return log[list(LOG_COLUMNS)], catalogue_frame(truth), truth


def write_example_log(directory: str | os.PathLike[str], n_rows: int = 50_000, seed: int = 0,
                      logging: str = "business_rule") -> tuple[Path, Path]:
    """Write `push_log.csv` and `promotions.csv` into `directory`; returns (log path, catalogue path).

    Both files are renamed into place only after both were written in full."""
    folder = Path(directory)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"directory {str(folder)!r} is a file, expected a folder for {LOG_FILE} and {CATALOGUE_FILE}")
    log, catalogue, _ = example_frames(n_rows, seed, logging)
    log_path, catalogue_path = folder / LOG_FILE, folder / CATALOGUE_FILE
    with atomic_path(log_path) as log_tmp, atomic_path(catalogue_path) as catalogue_tmp:
        log.to_csv(log_tmp, index=False)
        catalogue.to_csv(catalogue_tmp, index=False)
    return log_path, catalogue_path
