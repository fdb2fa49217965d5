"""Policies from other systems, given as action probabilities per logged row.

Two file forms:
  - `.npy` in the Open Bandit Pipeline's `action_dist` layout,
    shape (n_rounds, n_actions, n_positions), or (1, n_actions, n_positions)
    for a context-free policy (the same distribution for every row). Opened
    memory-mapped, so a 10M-row file is never loaded whole.
  - `.parquet` / `.csv` in long form, columns `row, action, position, probability`
    (pairs not listed have probability 0).

Actions are the log's action indices (catalogue order); positions are 0-based.
Validation names the array, the expected shape and the first offending index.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from pushrl.envs.common.errors import show
from pushrl.policies.ope.validation import check_distribution_values

LONG_COLUMNS = ("row", "action", "position", "probability")
VALIDATE_CHUNK = 200_000


class ExternalPolicy:
    """Action probabilities for the rows of one log (not a function of contexts)."""

    def __init__(self, action_dist: np.ndarray, name: str = "external") -> None:
        self.action_dist = action_dist
        self.name = name
        self.context_free = action_dist.shape[0] == 1

    @property
    def n_actions(self) -> int:
        return int(self.action_dist.shape[1])

    @property
    def n_positions(self) -> int:
        return int(self.action_dist.shape[2])

    def rows(self, rows: np.ndarray | slice) -> np.ndarray:
        """(len(rows), n_actions, n_positions) probabilities for those log rows."""
        if self.context_free:
            n = len(range(*rows.indices(10**18))) if isinstance(rows, slice) else len(rows)
            return np.broadcast_to(self.action_dist[0], (n, *self.action_dist.shape[1:]))
        return np.asarray(self.action_dist[rows], dtype=np.float64)


def check_policy_file(
    dist: np.ndarray, n_rounds: int, n_actions: int, n_positions: int, name: str = "action_dist"
) -> None:
    """Shape against this log, then values chunk by chunk (works on memmaps; see `check_distribution_values`)."""
    expected = f"({n_rounds}, {n_actions}, {n_positions}) or (1, {n_actions}, {n_positions})"
    if dist.ndim != 3:
        raise ValueError(f"{name} must be 3-D (n_rounds, n_actions, n_positions) = {expected}, got shape {dist.shape}")
    if dist.shape[1:] != (n_actions, n_positions) or dist.shape[0] not in (1, n_rounds):
        raise ValueError(f"{name} has shape {dist.shape}; expected {expected} for this log")
    check_distribution_values(dist, name, VALIDATE_CHUNK)


def _from_long(frame: pd.DataFrame, n_rounds: int, n_actions: int, n_positions: int, name: str) -> np.ndarray:
    missing = [c for c in LONG_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing column(s) {missing}; long form needs columns {list(LONG_COLUMNS)}")
    idx = {}
    for col, limit in (("row", n_rounds), ("action", n_actions), ("position", n_positions)):
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy()
        bad = ~np.isfinite(values) | (values < 0) | (values >= limit) | (values != np.round(values))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name}: column '{col}' at line {i} is {show(frame[col].iloc[i])}; expected an integer in [0, {limit})")
        idx[col] = values.astype(np.int64)
    dup = pd.DataFrame(idx).duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise ValueError(f"{name}: (row, action, position) at line {i} appears twice")
    prob = pd.to_numeric(frame["probability"], errors="coerce").to_numpy(dtype=np.float64)
    dist = np.zeros((n_rounds, n_actions, n_positions))
    dist[idx["row"], idx["action"], idx["position"]] = prob
    return dist


def load_external_policy(
    path: str | os.PathLike[str], n_rounds: int, n_actions: int, n_positions: int
) -> ExternalPolicy:
    """Read and validate a policy file against a log's dimensions."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"policy file {p} does not exist")
    suffix = p.suffix.lower()
    name = p.name
    if suffix == ".npy":
        try:
            dist = np.load(p, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{name}: not a readable .npy array ({exc})") from exc
    elif suffix in (".parquet", ".pq"):
        dist = _from_long(pd.read_parquet(p), n_rounds, n_actions, n_positions, name)
    elif suffix == ".csv":
        dist = _from_long(pd.read_csv(p), n_rounds, n_actions, n_positions, name)
    else:
        raise ValueError(f"policy file {p}: unsupported extension {suffix!r}; expected .npy, .parquet or .csv")
    check_policy_file(dist, n_rounds, n_actions, n_positions, name=name)
    return ExternalPolicy(dist, name=p.stem)
