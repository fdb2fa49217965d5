"""Train/validation/test splits that never leak the future.

With timestamps: cut points in time; every row of the validation split is
strictly later than every training row, and likewise for test. Without
timestamps (e.g. the Hillstrom campaign): a seeded random split stratified by
action, and the returned note says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pushrl.envs.data.logged_data import LoggedData


@dataclass(frozen=True)
class Split:
    train: LoggedData
    validation: LoggedData
    test: LoggedData
    method: str  # "time" or "random-stratified"
    note: str
    rows: tuple[np.ndarray, np.ndarray, np.ndarray] = ()  # row indices of train, validation, test in the log


def _check_fractions(fractions: tuple[float, float, float]) -> None:
    if len(fractions) != 3 or any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"split fractions must be three positive numbers summing to 1, got {fractions}")


def time_split_indices(timestamps: np.ndarray, fractions: tuple[float, float, float]) -> list[np.ndarray]:
    """Row indices of each split; ties at a cut go to the earlier split."""
    _check_fractions(fractions)
    order = np.argsort(timestamps, kind="stable")
    ts = np.asarray(timestamps)[order]
    n = len(ts)
    bounds = []
    for cum in np.cumsum(fractions)[:2]:
        k = min(max(int(round(cum * n)), 1), n - 1)
        # move the cut past rows that share the boundary timestamp
        k = int(np.searchsorted(ts, ts[k - 1], side="right"))
        bounds.append(k)
    a, b = bounds
    b = max(b, a)
    return [order[:a], order[a:b], order[b:]]


def stratified_split_indices(actions: np.ndarray, fractions: tuple[float, float, float], seed: int) -> list[np.ndarray]:
    """Seeded random split with each action's share kept in every part."""
    _check_fractions(fractions)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for a in np.unique(actions):
        rows = rng.permutation(np.flatnonzero(actions == a))
        cuts = np.round(np.cumsum(fractions)[:2] * len(rows)).astype(int)
        for i, piece in enumerate(np.split(rows, cuts)):
            parts[i].append(piece)
    return [np.sort(np.concatenate(p)) for p in parts]


def split_indices(data: LoggedData, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
                  seed: int = 0) -> list[np.ndarray]:
    """Row indices of train, validation and test: by time if the log has timestamps, else stratified random."""
    if data.timestamp is not None:
        return time_split_indices(data.timestamp.to_numpy(), fractions)
    return stratified_split_indices(data.action, fractions, seed)


def split_log(data: LoggedData, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0) -> Split:
    """Time split when the log has timestamps, otherwise a stated stratified random split."""
    idx = split_indices(data, fractions, seed)
    if data.timestamp is not None:
        if any(len(i) == 0 for i in idx):
            raise ValueError(
                f"time split of {data.n_rounds} rows with fractions {fractions} leaves a split empty "
                "(too few distinct timestamps)"
            )
        method = "time"
        ts = data.timestamp.to_numpy()
        note = (
            f"time split {fractions}: train {ts[idx[0]].min()} .. {ts[idx[0]].max()}, "
            f"validation .. {ts[idx[1]].max()}, test .. {ts[idx[2]].max()}"
        )
    else:
        method = "random-stratified"
        note = (
            f"the log has no timestamps: seeded random split (seed {seed}) stratified by action, "
            f"fractions {fractions}; not a time split"
        )
    names = ("train", "validation", "test")
    parts = [data.subset(i, name=f"{data.name}/{n}").with_notes(note) for i, n in zip(idx, names, strict=True)]
    return Split(*parts, method=method, note=note, rows=tuple(idx))
