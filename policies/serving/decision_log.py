"""The decision log: every served decision as one JSON line, read back as LoggedData for OPE.

Files `decisions-000001.jsonl`, `decisions-000002.jsonl`, ... in one folder; a
new file starts when the current one reaches `max_bytes`, and with
`max_files` set the oldest are deleted. One record per decision:

    {"request_id", "timestamp" (UTC ISO 8601), "policy_version", "context": {raw fields},
     "actions": [ids in slot order], "propensities": [...], optional "exclude", "pushes_in_window"}

Crash safety: a writer thread appends each batch with one `os.write` on an
O_APPEND descriptor and `fsync`s it before the batch counts as logged (batches
that arrive together share one fsync: group commit). A crash can only tear
the last line of the last file; reading skips such a line and reports the
count, and reopening the log starts a fresh file rather than append to it.
One writing process per folder (each server gets its own folder).

Catalogue updates (feature-based artifacts) are recorded beside the records:
`catalogues/<policy_version>.json` holds the action set that version served
(written atomically, once), so `logged_action_ids` can give `join_rewards`
every id the log may hold.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pushrl.envs.common.atomic import write_json
from pushrl.envs.data.catalogue import Catalogue
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.schema import LogSchema

logger = logging.getLogger(__name__)
FILE_PATTERN = re.compile(r"^decisions-(\d{6})\.jsonl$")
CATALOGUE_DIR = "catalogues"  # recorded catalogue updates, one file per policy_version
RECORD_KEYS = ("request_id", "timestamp", "policy_version", "context", "actions", "propensities")
EVENT_KEYS = ("request_id", "action")


class LogTicket:
    """Completion of one appended batch; `wait()` returns once it is on disk (or raises the write error)."""

    def __init__(self) -> None:
        self._done = threading.Event()
        self._error: BaseException | None = None

    def _finish(self, error: BaseException | None = None) -> None:
        self._error = error
        self._done.set()

    def wait(self, timeout: float | None = 30.0) -> None:
        if not self._done.wait(timeout):
            raise TimeoutError(f"decision log write not confirmed within {timeout} s")
        if self._error is not None:
            raise OSError(f"decision log write failed: {self._error}") from self._error


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class DecisionLog:
    """Append-only, size-rotated JSON-lines log written by one background thread."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        max_bytes: int = 64 * 2**20,
        max_files: int | None = None,
        fsync: bool = True,
    ) -> None:
        if max_bytes < 1 or (max_files is not None and max_files < 1):
            raise ValueError(f"max_bytes and max_files must be >= 1, got {max_bytes}, {max_files}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.max_files, self.fsync = max_bytes, max_files, fsync
        files = log_files(self.folder)
        self._index = int(FILE_PATTERN.match(files[-1].name).group(1)) if files else 1  # type: ignore[union-attr]
        if files and not _ends_cleanly(files[-1]):
            self._index += 1  # never append after a torn line
        self._fd = self._open(self._index)
        self._size = os.fstat(self._fd).st_size
        self._queue: queue.SimpleQueue[tuple[bytes, LogTicket] | None] = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="decision-log", daemon=True)
        self._thread.start()

    @property
    def current_file(self) -> Path:
        return self.folder / f"decisions-{self._index:06d}.jsonl"

    def append(self, records: Sequence[Mapping[str, Any]]) -> LogTicket:
        """Queue records (serialised here, in the caller's thread); the ticket says when they are durable."""
        if self._closed:
            raise RuntimeError("the decision log is closed")
        data = "".join(json.dumps(r, default=_json_default, allow_nan=False, separators=(",", ":")) + "\n"
                       for r in records).encode()
        ticket = LogTicket()
        self._queue.put((data, ticket))
        return ticket

    def record_catalogue(self, policy_version: str, catalogue: Sequence[Mapping[str, Any]]) -> Path:
        """Keep the action set served under `policy_version` (a catalogue update) beside the log; idempotent."""
        path = self.folder / CATALOGUE_DIR / f"{policy_version}.json"
        if not path.exists():
            write_json(path, [dict(item) for item in catalogue])
        return path

    def flush(self) -> None:
        """Wait until everything appended so far is on disk."""
        self.append([]).wait()

    def close(self) -> None:
        """Write what is queued, stop the writer thread, close the file."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=60)
        os.close(self._fd)

    def __enter__(self) -> DecisionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, index: int) -> int:
        path = self.folder / f"decisions-{index:06d}.jsonl"
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            batch: list[tuple[bytes, LogTicket]] = []
            while item is not None:
                batch.append(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            stop = item is None
            if not batch:
                continue
            error: BaseException | None = None
            try:
                self._write(b"".join(data for data, _ in batch))
            except OSError as exc:
                error = exc
                logger.error("decision log %s: write failed, %d batch(es) not logged: %s", self.folder, len(batch), exc)
            for _, ticket in batch:
                ticket._finish(error)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        if self.fsync and data:
            os.fsync(self._fd)
        self._size += len(data)
        if self._size >= self.max_bytes:
            os.close(self._fd)
            self._index += 1
            self._fd = self._open(self._index)
            self._size = 0
            if self.max_files is not None:
                for old in log_files(self.folder)[: -self.max_files]:
                    old.unlink(missing_ok=True)


def logged_action_ids(folder: str | os.PathLike[str], manifest: Any) -> list[Any]:
    """Every action id the log at `folder` may hold: the manifest's, then those added by recorded catalogue
    updates (oldest first), each once; pass it to `join_rewards(..., action_ids=...)`."""
    ids = list(manifest.action_ids)
    known = {(type(a), a) for a in ids}
    recorded = sorted((Path(folder) / CATALOGUE_DIR).glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    for path in recorded:
        try:
            items = json.loads(path.read_text(encoding="utf-8"))
            new = [item["id"] for item in items]
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, KeyError) as exc:
            raise ValueError(f"{path} is not a recorded catalogue (a list of {{'id', 'features'}}): {exc}") from exc
        for a in new:
            if (type(a), a) not in known:
                known.add((type(a), a))
                ids.append(a)
    return ids


def log_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The log's files, oldest first."""
    return sorted(p for p in Path(folder).iterdir() if FILE_PATTERN.match(p.name))


def _ends_cleanly(path: Path) -> bool:
    size = path.stat().st_size
    if size == 0:
        return True
    with open(path, "rb") as fh:
        fh.seek(size - 1)
        return fh.read(1) == b"\n"


OPTIONAL_KEYS = ("exclude", "pushes_in_window", "retired", "shadow_version", "shadow_probabilities")


def read_decision_log(folder: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per logged decision, oldest first: the record fields, `timestamp` as UTC datetimes.

    A torn last line (no newline at the end of a file: a crash mid-write) is
    skipped with a warning; `frame.attrs["torn_lines"]` holds the count. Any
    other line that is not a valid record raises ValueError naming file and line.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"decision log folder {str(folder)!r} does not exist")
    rows: list[dict[str, Any]] = []
    torn = 0
    for path in log_files(folder):
        lines = path.read_bytes().split(b"\n")
        last = len(lines) - 1  # after the final "\n" this is b""; otherwise an unterminated line
        for no, line in enumerate(lines, start=1):
            if not line:
                continue
            try:
                rec = json.loads(line)
                ok = isinstance(rec, dict) and all(k in rec for k in RECORD_KEYS)
            except (json.JSONDecodeError, UnicodeDecodeError):
                ok = False
            if not ok:
                if no - 1 == last:
                    torn += 1
                    continue
                raise ValueError(f"{path.name} line {no} is not a decision record: {line[:120]!r}")
            rows.append(rec)
    if torn:
        warnings.warn(f"decision log {str(folder)!r}: skipped {torn} torn last line(s) (a crash mid-write)",
                      stacklevel=2)
    frame = pd.DataFrame(rows, columns=list(RECORD_KEYS) + list(OPTIONAL_KEYS))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    frame.attrs["torn_lines"] = torn
    return frame


def join_rewards(
    decisions: pd.DataFrame,
    events: pd.DataFrame,
    *,
    manifest: Any | None = None,
    missing_reward: float | None = 0.0,
    name: str = "decision-log",
    action_ids: Sequence[Any] | None = None,
) -> LoggedData:
    """Join reward events to logged decisions and return LoggedData (one row per chosen slot).

    events: `request_id`, optional `action` (needed for slates: which promoted
        action the reward belongs to), and reward columns (every other column;
        the first is the primary reward).
    manifest: the artifact's Manifest; gives the catalogue (all action ids, in
        order) and which context fields are numeric or categorical. Without it
        they are inferred from the log.
    missing_reward: the reward of a decision with no event (0.0: "no event
        means no click"); None refuses decisions without an event.
    action_ids: the whole action set when it differs from the manifest's (the
        catalogue was updated while serving: pass every id served, e.g. the
        manifest's followed by the new ones); ids logged outside it are refused.
    The propensity of slot j is its conditional probability given slots < j
    (the runtime's); decisions with no action (cap / all excluded) are left out.
    Every choice made here is recorded in the result's `notes`.
    """
    dups = decisions["request_id"][decisions["request_id"].duplicated()]
    if len(dups):
        raise ValueError(f"decisions has repeated request_id values {list(dups.unique()[:5])}; one decision per id")
    if "request_id" not in events.columns:
        raise ValueError(f"events needs a 'request_id' column; it has {list(events.columns)}")
    rewards = [c for c in events.columns if c not in EVENT_KEYS]
    if not rewards:
        raise ValueError(f"events has no reward column besides {list(EVENT_KEYS)}: {list(events.columns)}")
    n_actions = decisions["actions"].map(len)
    empty = int((n_actions == 0).sum())
    slots = decisions.loc[n_actions > 0, ["request_id", "timestamp", "actions", "propensities", "context"]]
    slots = slots.explode(["actions", "propensities"]).rename(columns={"actions": "action", "propensities": "propensity"})
    slots["propensity"] = slots["propensity"].astype(np.float64)
    slots["position"] = slots.groupby(level=0).cumcount()
    slots = slots.reset_index(drop=True)
    keys = ["request_id", "action"] if "action" in events.columns else ["request_id"]
    if keys == ["request_id"] and (slots["position"] > 0).any():
        raise ValueError("the log holds slates (k > 1); events need an 'action' column saying which slot was rewarded")
    ev_dups = events.duplicated(keys)
    if ev_dups.any():
        raise ValueError(f"events has repeated {keys} rows, e.g. {events.loc[ev_dups, keys].iloc[0].tolist()}; "
                         "aggregate them first")
    joined = slots.merge(events[keys + rewards], on=keys, how="left", indicator=True)
    matched = joined["_merge"] == "both"
    n_missing = int((~matched).sum())
    if n_missing and missing_reward is None:
        raise ValueError(f"{n_missing} decisions have no reward event (e.g. request_id "
                         f"{joined.loc[~matched, 'request_id'].iloc[0]!r}) and missing_reward=None")
    if n_missing:
        joined.loc[~matched, rewards] = missing_reward
    n_unmatched = len(events) - int(matched.sum())
    contexts = pd.DataFrame(joined["context"].tolist(), index=joined.index)
    frame = pd.concat([joined.drop(columns=["context", "_merge"]), contexts], axis=1)
    if manifest is not None:
        schema = LogSchema(action="action", rewards=tuple(rewards), optional_rewards=(), user_id=None,
                           numeric_features=tuple(manifest.encoder.numeric),
                           categorical_features=tuple(manifest.encoder.categorical))
        catalogue = Catalogue.from_ids(list(manifest.action_ids if action_ids is None else action_ids))
    else:
        schema = LogSchema(action="action", rewards=tuple(rewards), optional_rewards=(), user_id=None,
                           exclude=("request_id",))
        catalogue = None if action_ids is None else Catalogue.from_ids(list(action_ids))
    data = LoggedData.from_frame(frame, schema=schema, catalogue=catalogue, name=name, source="decision log")
    notes = [f"{len(slots)} logged slot(s) from {len(decisions)} decision(s) read from the serving decision log"]
    if empty:
        notes.append(f"{empty} decision(s) with no action (frequency cap or all excluded) are not rows")
    if n_missing:
        notes.append(f"{n_missing} row(s) had no reward event and got reward {missing_reward}")
    if n_unmatched:
        notes.append(f"{n_unmatched} reward event(s) matched no logged decision and were ignored")
    if (slots["position"] > 0).any():
        notes.append("slot propensities are conditional on the earlier slots of the same slate")
    return data.with_notes(*notes)
