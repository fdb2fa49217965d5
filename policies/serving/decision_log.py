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

Every line is valid UTF-8 JSON: non-ASCII text is written as UTF-8, and a
lone surrogate (e.g. a request_id "\\ud800", which UTF-8 cannot encode) is
written as the six characters `\\ud800` (Python's "backslashreplace"), so
any JSON reader can read the log. The reader gives records written before
that rule the same treatment, and skips (with one warning naming file and
line, and a count) any line that is not a decision record.

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
SAFE_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")  # a policy_version that may name a catalogue file


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


def _utf8_safe(value: Any) -> Any:
    """`value` with every string (and dict key) that UTF-8 cannot encode (a lone surrogate such as
    "\\ud800") rewritten with its surrogates as the text `\\ud800` ("backslashreplace"); the rest as is."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, Mapping):
        return {_utf8_safe(k): _utf8_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_utf8_safe(v) for v in value]
    return value


def _dumps(record: Mapping[str, Any]) -> str:
    return json.dumps(record, default=_json_default, allow_nan=False, ensure_ascii=False, separators=(",", ":"))


def encode_records(records: Sequence[Mapping[str, Any]]) -> bytes:
    """Records as JSON lines, always valid UTF-8 (lone surrogates written as `\\udXXXX` text)."""
    text = "".join(_dumps(r) + "\n" for r in records)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # rare: some string holds a lone surrogate
        return "".join(_dumps(_utf8_safe(r)) + "\n" for r in records).encode("utf-8")


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
        data = encode_records(records)
        ticket = LogTicket()
        self._queue.put((data, ticket))
        return ticket

    def record_catalogue(self, policy_version: str, catalogue: Sequence[Mapping[str, Any]]) -> Path:
        """Keep the action set served under `policy_version` (a catalogue update) beside the log; idempotent."""
        if not isinstance(policy_version, str) or not SAFE_VERSION.fullmatch(policy_version):
            raise ValueError(f"policy_version {policy_version!r} is not a safe file name (letters, digits, '._+-', "
                             "at most 200 characters, not starting with '.')")
        path = self.folder / CATALOGUE_DIR / f"{policy_version}.json"
        if not path.exists():
            write_json(path, [_utf8_safe(dict(item)) for item in catalogue])
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


OPTIONAL_KEYS = ("exclude", "pushes_in_window", "retired", "shadow_version", "shadow_probabilities", "ood")


MAX_SKIPPED_SHOWN = 10  # file:line entries in the warning
MAX_SKIPPED_KEPT = 1000  # ... and in frame.attrs["skipped"]
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")  # a JSON \\uD800-\\uDFFF escape


def _record_problem(rec: Any) -> str | None:
    """Why a parsed line is not a decision record (None: it is one)."""
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not an object"
    missing = [k for k in RECORD_KEYS if k not in rec]
    if missing:
        return f"missing field(s) {missing}"
    for key in ("request_id", "timestamp", "policy_version"):
        if not isinstance(rec[key], str) or not rec[key]:
            return f"{key} is not a non-empty string"
    if not isinstance(rec["context"], dict):
        return "context is not an object"
    actions, props = rec["actions"], rec["propensities"]
    if not isinstance(actions, list) or not isinstance(props, list) or len(actions) != len(props):
        return "actions and propensities are not lists of one length"
    if not all(isinstance(p, (int, float)) and not isinstance(p, bool) and 0 < p <= 1 for p in props):
        return "propensities are not numbers in (0, 1]"
    return None


def read_decision_log(folder: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per logged decision, oldest first: the record fields, `timestamp` as UTC datetimes.

    A bad record never poisons the reader:
    - a torn last line (no newline at the end of a file: a crash mid-write) is skipped with a
      warning; `frame.attrs["torn_lines"]` holds the count;
    - any other line that is not a decision record (invalid JSON, bytes that are not UTF-8, a
      record missing fields or with fields of the wrong type, a timestamp that does not parse)
      is skipped with one warning naming each file:line (the first few) and why;
      `frame.attrs["skipped_records"]` holds the count, `frame.attrs["skipped"]` the
      "file:line: why" of each (the first 1,000);
    - a string holding a lone surrogate (written as a `\\ud800` escape before the writer made
      every line valid UTF-8) is kept, its surrogates as the text `\\ud800` (what the writer
      writes now), so the frame and `join_rewards` can always encode it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"decision log folder {str(folder)!r} does not exist")
    rows: list[dict[str, Any]] = []
    where: list[str] = []
    skipped: list[str] = []
    torn = 0
    for path in log_files(folder):
        lines = path.read_bytes().split(b"\n")
        last = len(lines) - 1  # after the final "\n" this is b""; otherwise an unterminated line
        for no, line in enumerate(lines, start=1):
            if not line:
                continue
            try:
                rec = json.loads(line)
                problem = _record_problem(rec)
            except UnicodeDecodeError:
                problem = "not UTF-8 text"
            except (json.JSONDecodeError, RecursionError) as exc:
                problem = f"invalid JSON ({str(exc)[:60]})"
            if problem is not None:
                if no - 1 == last:
                    torn += 1
                else:
                    skipped.append(f"{path.name}:{no}: {problem}")
                continue
            if _SURROGATE_ESCAPE.search(line):
                rec = _utf8_safe(rec)
            rows.append(rec)
            where.append(f"{path.name}:{no}")
    frame = pd.DataFrame(rows, columns=list(RECORD_KEYS) + list(OPTIONAL_KEYS))
    stamps = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601", errors="coerce")
    bad = stamps.isna().to_numpy()
    if bad.any():
        skipped.extend(f"{where[i]}: timestamp {frame['timestamp'].iloc[i]!r} does not parse"
                       for i in np.flatnonzero(bad))
        keep = ~bad
        frame, stamps = frame.loc[keep].reset_index(drop=True), stamps.loc[keep].reset_index(drop=True)
    frame["timestamp"] = stamps
    if torn:
        warnings.warn(f"decision log {str(folder)!r}: skipped {torn} torn last line(s) (a crash mid-write)",
                      stacklevel=2)
    if skipped:
        skipped.sort(key=_file_line)
        shown = "; ".join(skipped[:MAX_SKIPPED_SHOWN])
        more = f"; and {len(skipped) - MAX_SKIPPED_SHOWN} more" if len(skipped) > MAX_SKIPPED_SHOWN else ""
        warnings.warn(f"decision log {str(folder)!r}: skipped {len(skipped)} line(s) that are not decision "
                      f"records: {shown}{more}", stacklevel=2)
    frame.attrs["torn_lines"] = torn
    frame.attrs["skipped_records"] = len(skipped)
    frame.attrs["skipped"] = skipped[:MAX_SKIPPED_KEPT]
    return frame


def _file_line(entry: str) -> tuple[str, int]:
    name, no, _ = entry.split(":", 2)
    return name, int(no)


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
    try:
        contexts = pd.DataFrame(joined["context"].tolist(), index=joined.index)
    except UnicodeEncodeError:  # a context string with a lone surrogate (a frame not from read_decision_log)
        contexts = pd.DataFrame([_utf8_safe(c) for c in joined["context"]], index=joined.index)
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
