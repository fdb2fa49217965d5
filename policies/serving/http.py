"""HTTP decision service: `POST /v1/decide` (the decision contract), health, manifest, hot swap.

Contract:
    POST /v1/decide {"requests": [{"request_id": "c-1", "context": {...raw fields...},
                                   "exclude": ["No E-Mail"], "k": 1, "pushes_in_window": 0}],
                     "propensities": "all"}
    (exclude, k, pushes_in_window optional; pushes_in_window required when the
    policy has a frequency cap; at most `max_batch` requests per call; "propensities":
    "chosen" leaves out every decision's `probabilities` over all actions, "all" (default)
    keeps them, refused over MAX_PROBABILITIES numbers per response)
    200 {"policy_version": "...", "decisions": [{"request_id": "c-1", "actions": ["Mens E-Mail"],
         "propensities": [0.92], "probabilities": {"No E-Mail": 0.04, ...}}]}   (probabilities when k = 1)
    4xx {"detail": "<field>: <problem>", "field": "<field path>"}. Never a 500 for bad input.

    GET /healthz, GET /v1/policy (the manifest, with the serving policy_version and action_ids),
    GET /openapi.json (typed from the served artifact: context fields, categories as enums).

Refused before anything is decided or logged (the constants below are the limits):
    400 a body that is not UTF-8 JSON, nested deeper than MAX_JSON_DEPTH, with a duplicate key,
        or holding a lone surrogate (text that cannot be written as UTF-8);
    409 a request_id already decided: the last `recent_ids` ids (default RECENT_IDS) are kept, per
        server process, seeded at start from the decision log's newest records;
    413 a body over MAX_BODY_BYTES (counted while reading, chunked bodies too), more than
        `max_batch` requests, a catalogue of more than MAX_CATALOGUE promotions;
    415 a content type other than application/json (charset, when given, utf-8);
    422 any invalid field, a request_id over MAX_REQUEST_ID_CHARS characters or with a control
        character, a string (or key) over MAX_STRING_CHARS characters.

Admin (only with an admin token; every call needs `Authorization: Bearer <token>`: 401 without
one, 403 for a wrong one, compared in constant time):
    POST /v1/admin/reload {"path": "..."}: a folder under `artifact_root` (default: the started
    artifact's parent; relative paths are taken from it; `..` or symlinks out: 403, the same
    answer whether the folder exists or not). Builds the new runtime fully (off the event loop),
    refuses one whose context fields, their kinds (number / category) or action set differ from
    the live policy's (409 naming the first difference; the live policy keeps serving), then
    swaps one reference; requests already running finish on the runtime they started with.
    POST /v1/admin/retire {"ids": [...]}: retire promotions (see `PolicyRuntime.retire`).
    POST /v1/admin/catalogue {"catalogue": [{"id": ..., "features": {...}}, ...]}: feature-based
    artifacts only; the new action set is scored by the same model (no retraining) and swapped in
    like a reload (see `PolicyRuntime.with_catalogue`). With `catalogue_file`, the catalogue
    served is kept in that JSON file: read at start (an update survives a restart), rewritten
    atomically before each swap. A served catalogue update (kept in a file or not) is applied to
    every reloaded artifact (model deployments and catalogue changes stay independent).
"""

from __future__ import annotations

import gc
import hmac
import importlib.util
import json
import logging
import os
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from pushrl.envs.common.atomic import write_json
from pushrl.policies.artifact import ArtifactError, BusinessRules
from pushrl.policies.serving.decision_log import DecisionLog, log_files
from pushrl.policies.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from pushrl.policies.serving.metrics import ServingMetrics
from pushrl.policies.serving.runtime import PolicyRuntime, RequestError

try:  # the `serve` extra's fast JSON encoder; the standard library's otherwise
    import orjson
except ImportError:  # pragma: no cover - orjson is in the serve extra
    orjson = None  # type: ignore[assignment]

WORKER_ENV = "PUSHRL_SERVE_WORKER"  # how `serve(workers=N)` hands the artifact and options to each worker process

logger = logging.getLogger(__name__)
MAX_BATCH = 1000
MAX_BODY_BYTES = 16 * 2**20
MAX_JSON_DEPTH = 32  # a decide body needs 4 levels, an admin catalogue 4
MAX_REQUEST_ID_CHARS = 256
MAX_STRING_CHARS = 1024  # any string or object key in a body
MAX_CATALOGUE = 10_000  # promotions in one catalogue
MAX_PROBABILITIES = 1_000_000  # numbers in one response's `probabilities` ("propensities": "all")
RECENT_IDS = 1_000_000  # request ids remembered against reuse (about 80 MB: one 64-bit hash each)
MIN_TOKEN_CHARS = 16
PROPENSITY_OPTIONS = ("all", "chosen")
_BAD_ID_CHAR = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_LOGGED_ID = re.compile(rb'^\{"request_id":("(?:[^"\\\n]|\\.)*")', re.MULTILINE)


class HTTPError(Exception):
    """A client error with a status code and the offending field."""

    def __init__(self, status: int, field: str | None, problem: str, headers: dict[str, str] | None = None) -> None:
        self.status, self.field, self.problem, self.headers = status, field, problem, headers
        super().__init__(f"{field}: {problem}" if field else problem)


class FastJSONResponse(JSONResponse):
    """A JSONResponse rendered by orjson when it is installed (several times faster on a decision's
    probabilities); the standard library's encoder for anything orjson refuses, so the bytes mean the same."""

    def render(self, content: Any) -> bytes:
        if orjson is not None:
            try:
                return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)
            except (TypeError, ValueError):  # e.g. a lone surrogate, an int over 64 bits
                pass
        return super().render(content)


def _error(status: int, field: str | None, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "field": field}, status_code=status, headers=headers)


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return out


def _check_content_type(request: Request) -> None:
    ctype = request.headers.get("content-type")
    if ctype is None:
        raise HTTPError(415, "content-type", "missing; send application/json (UTF-8)")
    mime, *params = (part.strip().lower() for part in ctype.split(";"))
    if mime != "application/json":
        raise HTTPError(415, "content-type", f"{ctype[:100]!r} is not application/json")
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            raise HTTPError(415, "content-type", f"charset {value.strip()[:40]!r}: bodies are UTF-8 JSON only")


async def _json_body(request: Request, limit: int = MAX_BODY_BYTES) -> Any:
    """The body as JSON (see the module docstring for what is refused); read at most `limit` bytes."""
    _check_content_type(request)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, "body", f"{declared} bytes, at most {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():  # counted while reading: a chunked body cannot grow past the limit
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, "body", f"more than {limit} bytes")
        chunks.append(chunk)
    try:
        text = b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPError(400, "body", f"not UTF-8 (byte {exc.start}): bodies are UTF-8 JSON only") from exc
    try:
        body = json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as exc:
        raise HTTPError(400, "body", f"duplicate key {exc.key[:MAX_STRING_CHARS]!r} in one object") from exc
    except RecursionError as exc:
        raise HTTPError(400, "body", f"nested deeper than {MAX_JSON_DEPTH} levels") from exc
    except ValueError as exc:  # JSONDecodeError, and integers too long to convert
        raise HTTPError(400, "body", f"malformed JSON: {str(exc)[:200]}") from exc
    if len(text) > MAX_STRING_CHARS or "\\u" in text or text.count("[") + text.count("{") > MAX_JSON_DEPTH:
        _check_tree(body)
    return body


def _tree_ok(node: Any) -> bool:
    """No nesting deeper than MAX_JSON_DEPTH, no string or key over MAX_STRING_CHARS or with a lone surrogate."""
    stack = [(node, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return False
        if isinstance(item, dict):
            for key, value in item.items():
                if len(key) > MAX_STRING_CHARS or _SURROGATE.search(key):
                    return False
                if isinstance(value, dict | list):
                    stack.append((value, depth + 1))
                elif isinstance(value, str) and (len(value) > MAX_STRING_CHARS or _SURROGATE.search(value)):
                    return False
        elif isinstance(item, list):
            for value in item:
                if isinstance(value, dict | list):
                    stack.append((value, depth + 1))
                elif isinstance(value, str) and (len(value) > MAX_STRING_CHARS or _SURROGATE.search(value)):
                    return False
        elif isinstance(item, str) and (len(item) > MAX_STRING_CHARS or _SURROGATE.search(item)):
            return False
    return True


def _check_tree(body: Any) -> None:
    """Raise the HTTPError naming the first problem `_tree_ok` finds (a second, slower pass with paths)."""
    if _tree_ok(body):
        return

    def string(value: str, where: str) -> None:
        if _SURROGATE.search(value):
            raise HTTPError(400, where or "body", "holds a lone surrogate (not valid Unicode text)")
        if len(value) > MAX_STRING_CHARS:
            raise HTTPError(422, where or "body", f"a string of {len(value)} characters, at most {MAX_STRING_CHARS}")

    def walk(node: Any, where: str, depth: int) -> None:
        if depth > MAX_JSON_DEPTH:
            raise HTTPError(400, "body", f"nested deeper than {MAX_JSON_DEPTH} levels (at {where[:200]})")
        if isinstance(node, dict):
            for key, value in node.items():
                string(key, f"{where}.{key[:40]!r}" if where else repr(key[:40]))
                walk(value, f"{where}.{key}" if where else key, depth + 1)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]", depth + 1)
        elif isinstance(node, str):
            string(node, where)

    walk(body, "", 1)


def _check_request_ids(requests: list[Any]) -> list[str]:
    """The string request ids of a decide call; long ones or ones with control characters: 422."""
    ids = []
    for i, r in enumerate(requests):
        rid = r.get("request_id") if isinstance(r, dict) else None
        if type(rid) is not str:
            continue  # the runtime names the problem
        if len(rid) > MAX_REQUEST_ID_CHARS:
            raise HTTPError(422, f"requests[{i}].request_id", f"{len(rid)} characters, at most {MAX_REQUEST_ID_CHARS}")
        bad = _BAD_ID_CHAR.search(rid)
        if bad:
            raise HTTPError(422, f"requests[{i}].request_id",
                            f"holds a control character or lone surrogate (U+{ord(bad.group()):04X}) at {bad.start()}")
        ids.append(rid)
    return ids


class RecentIds:
    """The last `capacity` request ids decided (their 64-bit hashes), to refuse a reused id.

    `reserve` refuses an id decided or in flight; `release` ends a reservation, remembering the ids
    only if the call succeeded. The oldest ids are forgotten first. One instance per process."""

    def __init__(self, capacity: int = RECENT_IDS) -> None:
        self.capacity = capacity
        self._seen: set[int] = set()
        self._order: deque[int] = deque()
        self._pending: set[int] = set()

    def __len__(self) -> int:
        return len(self._seen)

    def reserve(self, ids: Sequence[str]) -> int | None:
        """Reserve `ids`; the index of the first one decided before (nothing reserved then), or None."""
        if not self.capacity:
            return None
        hashes = [hash(rid) for rid in ids]
        for i, h in enumerate(hashes):
            if h in self._seen or h in self._pending:
                return i
        self._pending.update(hashes)
        return None

    def release(self, ids: Sequence[str], decided: bool) -> None:
        if not self.capacity:
            return
        hashes = [hash(rid) for rid in ids]
        self._pending.difference_update(hashes)
        if decided:
            self.add(hashes)

    def add(self, hashes: Iterable[int]) -> None:
        for h in hashes:
            if h not in self._seen:
                self._seen.add(h)
                self._order.append(h)
        while len(self._order) > self.capacity:
            self._seen.discard(self._order.popleft())

    def seed_from_log(self, folder: str | os.PathLike[str]) -> int:
        """Remember the ids of the log's newest records (up to `capacity`); returns how many were read."""
        if not self.capacity or not Path(folder).is_dir():
            return 0
        found: list[list[int]] = []
        total = 0
        for path in reversed(log_files(folder)):
            try:
                data = path.read_bytes()
            except OSError:
                continue
            ids = []
            for match in _LOGGED_ID.finditer(data):
                try:
                    ids.append(hash(json.loads(match.group(1))))
                except ValueError:
                    continue
            found.append(ids)
            total += len(ids)
            if total >= self.capacity:
                break
        for ids in reversed(found):
            self.add(ids)
        return total


def read_admin_token(path: str | os.PathLike[str]) -> str:
    """The admin token kept in `path` (surrounding whitespace dropped); ValueError naming the file if unfit."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"admin token file {str(path)!r} cannot be read: {exc}") from exc
    _check_token(token, f"admin token file {str(path)!r}")
    return token


def _check_token(token: str, where: str) -> None:
    if len(token) < MIN_TOKEN_CHARS or not token.isascii() or not token.isprintable() or " " in token:
        raise ValueError(f"{where}: the admin token must be at least {MIN_TOKEN_CHARS} printable ASCII characters "
                         "without spaces (e.g. `openssl rand -hex 32`)")


def _authorize(request: Request, token: bytes) -> None:
    header = request.headers.get("authorization")
    challenge = {"WWW-Authenticate": 'Bearer realm="pushrl admin"'}
    if not header:
        raise HTTPError(401, "authorization", "missing; admin calls need Authorization: Bearer <admin token>",
                        challenge)
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise HTTPError(401, "authorization", "must be Bearer <admin token>", challenge)
    if not hmac.compare_digest(given.strip().encode("latin-1", "replace"), token):
        raise HTTPError(403, "authorization", "wrong admin token")


def _inside_root(path: str, root: Path) -> Path:
    """`path` (relative paths: from `root`) resolved, symlinks included; 403 unless inside `root`.

    The answer is the same whether or not the folder exists, so it reveals nothing outside the root."""
    outside = HTTPError(403, "path", "must be an artifact folder under the server's artifact root")
    if "\x00" in path or not path:
        raise outside
    candidate = Path(path) if os.path.isabs(path) else root / path
    try:
        resolved = candidate.resolve()
    except (OSError, RuntimeError) as exc:
        raise outside from exc
    if resolved == root or not resolved.is_relative_to(root):
        raise outside
    return resolved


def incompatibility(live: PolicyRuntime, new: PolicyRuntime) -> str | None:
    """The first difference between two runtimes' request schemas (context fields and their kinds) or action
    sets (ids in order), as one line; None when `new` can take over `live`'s traffic."""
    a, b = live.manifest.encoder, new.manifest.encoder
    for name in a.input_fields:
        if name not in b.input_fields:
            return f"context field {name!r} is served now but not by the new artifact (its fields: {b.input_fields[:10]})"
    for name in b.input_fields:
        if name not in a.input_fields:
            return f"context field {name!r} is new: the live policy does not take it (its fields: {a.input_fields[:10]})"
    for name in a.input_fields:
        kind_a = "number" if name in a.numeric else "category"
        kind_b = "number" if name in b.numeric else "category"
        if kind_a != kind_b:
            return f"context field {name!r} is a {kind_a} now and a {kind_b} in the new artifact"
    ids_a, ids_b = [str(x) for x in live.action_ids], [str(x) for x in new.action_ids]
    for i, (x, y) in enumerate(zip(ids_a, ids_b, strict=False)):
        if x != y:
            return f"action_ids[{i}] is {x!r} now and {y!r} in the new artifact"
    if len(ids_a) != len(ids_b):
        return f"the live policy serves {len(ids_a)} actions, the new artifact {len(ids_b)}"
    return None


def _error_schema() -> dict[str, Any]:
    return {"type": "object", "required": ["detail", "field"], "properties": {
        "detail": {"type": "string"}, "field": {"type": ["string", "null"]}}}


_STATUS_TEXT = {400: "malformed body (not UTF-8 JSON, too deep, duplicate key, lone surrogate)",
                401: "no admin token", 403: "wrong admin token, or a path outside the artifact root",
                409: "conflict (a reused request_id; an incompatible artifact)",
                413: "too large (body, batch, catalogue or response)", 415: "not application/json (UTF-8)",
                422: "an invalid field (named in `field`)"}


def _responses(ok: dict[str, Any], *codes: int) -> dict[str, Any]:
    out: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {"schema": ok}}}}
    for code in codes:
        out[str(code)] = {"description": _STATUS_TEXT[code],
                          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return out


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _fields_schema(encoder: Any, description: str) -> dict[str, Any]:
    """A JSON schema of raw fields: numbers, categories as enums of the trained vocabulary."""
    props: dict[str, Any] = {}
    for name in encoder.input_fields:
        if name in encoder.numeric:
            props[name] = {"type": "number"}
        else:
            vocab = [v if isinstance(v, str | int) else str(v) for v in encoder.vocabularies[name]]
            props[name] = {"enum": vocab} if vocab else {"type": "string", "maxLength": MAX_STRING_CHARS}
    return {"type": "object", "description": description, "additionalProperties": False,
            "required": list(encoder.input_fields), "properties": props}


def openapi_spec(runtime: PolicyRuntime, *, admin: bool, max_batch: int = MAX_BATCH) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the service serving `runtime`: its context fields and action ids typed."""
    m = runtime.manifest
    action = {"enum": list(runtime.action_ids)}
    unknown = ("an unknown category is refused" if m.encoder.unknown == "refuse"
               else "a category outside the enum is served through the unknown bucket")
    request = {"type": "object", "additionalProperties": False, "required": ["request_id", "context"]
               + (["pushes_in_window"] if runtime.rules.frequency_cap is not None else []),
               "properties": {
                   "request_id": {"type": "string", "minLength": 1, "maxLength": MAX_REQUEST_ID_CHARS,
                                  "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$",
                                  "description": "unique across calls: a reused id is refused (409)"},
                   "context": _fields_schema(m.encoder, f"raw context fields of the manifest; {unknown}"),
                   "exclude": {"type": "array", "items": action},
                   "k": {"type": "integer", "minimum": 1, "maximum": m.slate_size},
                   "pushes_in_window": {"type": "integer", "minimum": 0}}}
    decide_body = {"type": "object", "additionalProperties": False, "required": ["requests"], "properties": {
        "requests": {"type": "array", "minItems": 1, "maxItems": max_batch, "items": request},
        "propensities": {"enum": list(PROPENSITY_OPTIONS), "default": "all",
                         "description": "chosen: only the chosen slate's propensities, without `probabilities`"}}}
    decision = {"type": "object", "required": ["request_id", "actions", "propensities"], "properties": {
        "request_id": {"type": "string"}, "actions": {"type": "array", "items": action},
        "propensities": {"type": "array", "items": {"type": "number"}},
        "probabilities": {"type": "object", "additionalProperties": {"type": "number"}}}}
    decide_ok = {"type": "object", "required": ["policy_version", "decisions"], "properties": {
        "policy_version": {"type": "string"}, "decisions": {"type": "array", "items": decision}}}
    paths: dict[str, Any] = {
        "/healthz": {"get": {"summary": "health", "responses": _responses({"type": "object"})}},
        "/v1/policy": {"get": {"summary": "the manifest", "responses": _responses({"type": "object"})}},
        "/v1/decide": {"post": {"summary": "decide a batch of requests", "requestBody": _body(decide_body),
                                "responses": _responses(decide_ok, 400, 409, 413, 415, 422)}},
    }
    # /metrics: the metrics helper (policies/serving/metrics.py) adds its path here when it is wired in.
    if admin:
        secured = {"security": [{"adminToken": []}]}
        swapped = {"type": "object", "properties": {"policy_version": {"type": "string"},
                                                    "previous_version": {"type": "string"}}}
        promotion: dict[str, Any] = {"type": "object", "additionalProperties": False, "required": ["id", "features"],
                                     "properties": {"id": {"type": ["string", "integer"]},
                                                    "features": {"type": "object"}}}
        if m.catalogue is not None:
            promotion["properties"]["features"] = _fields_schema(m.catalogue.encoder, "raw promotion features")
        paths["/v1/admin/reload"] = {"post": {
            "summary": "hot swap to another artifact under the artifact root", **secured,
            "requestBody": _body({"type": "object", "additionalProperties": False, "required": ["path"],
                                  "properties": {"path": {"type": "string", "minLength": 1,
                                                          "maxLength": MAX_STRING_CHARS}}}),
            "responses": _responses(swapped, 400, 401, 403, 409, 413, 415, 422)}}
        paths["/v1/admin/retire"] = {"post": {
            "summary": "retire promotions ([] un-retires all)", **secured,
            "requestBody": _body({"type": "object", "additionalProperties": False, "required": ["ids"],
                                  "properties": {"ids": {"type": "array", "items": action}}}),
            "responses": _responses({"type": "object", "properties": {"retired": {"type": "array"}}},
                                    400, 401, 403, 413, 415, 422)}}
        paths["/v1/admin/catalogue"] = {"post": {
            "summary": "serve a new action set (feature-based artifacts)", **secured,
            "requestBody": _body({"type": "object", "additionalProperties": False, "required": ["catalogue"],
                                  "properties": {"catalogue": {"type": "array", "minItems": 1,
                                                               "maxItems": MAX_CATALOGUE, "items": promotion}}}),
            "responses": _responses({**swapped, "properties": {**swapped["properties"],
                                                               "action_ids": {"type": "array"}}},
                                    400, 401, 403, 409, 413, 415, 422)}}
    components: dict[str, Any] = {"schemas": {"Error": _error_schema()}}
    if admin:
        components["securitySchemes"] = {"adminToken": {"type": "http", "scheme": "bearer"}}
    return {"openapi": "3.1.0", "info": {"title": "pushrl decision service", "version": runtime.policy_version},
            "paths": paths, "components": components}


async def _admin_field(request: Request, key: str, kind: type, example: str) -> Any:
    """The one field of an admin request's body ({key: <kind>}); 422 naming it otherwise."""
    body = await _json_body(request)
    if not isinstance(body, dict) or set(body) != {key} or not isinstance(body[key], kind):
        raise HTTPError(422, key, f"the body must be {example}")
    return body[key]


def create_app(
    artifact_path: str | os.PathLike[str],
    *,
    seed: int | None = None,
    decision_log: DecisionLog | str | os.PathLike[str] | None = None,
    rules: BusinessRules | None = None,
    max_batch: int = MAX_BATCH,
    durable_log: bool = False,
    admin_token: str | None = None,
    artifact_root: str | os.PathLike[str] | None = None,
    shadow: str | os.PathLike[str] | None = None,
    catalogue_file: str | os.PathLike[str] | None = None,
    recent_ids: int = RECENT_IDS,
    strict: bool = False,
    metrics: ServingMetrics | None = None,
) -> FastAPI:
    """The FastAPI app serving the artifact at `artifact_path`.

    decision_log: a DecisionLog (owned by the caller) or a folder (opened here,
        closed at shutdown). durable_log: answer only after the decisions are
        fsynced (adds the fsync to latency); otherwise they reach disk within
        one group commit and a crash can lose only that last unsynced batch.
    seed: one SeedSequence; each loaded runtime (first and every reload) gets a child.
    admin_token: the admin endpoints exist only with one (at least MIN_TOKEN_CHARS characters);
        each admin call must send it as `Authorization: Bearer <token>`.
    artifact_root: the folder reloads must stay inside (default: the artifact's parent folder).
    shadow: a candidate artifact served in shadow mode beside the live one (see `PolicyRuntime.attach_shadow`);
        needs a decision log, where its probabilities are written.
    catalogue_file: where the serving catalogue of a feature-based artifact is kept (see the module
        docstring); a file that exists at start must hold a valid catalogue for the artifact.
    recent_ids: how many request ids are remembered to refuse a reused one (409); 0 turns the check off.
    strict: refuse (422 naming the field) contexts outside the training distribution: unknown categories
        and numbers outside the training range (see `PolicyRuntime`); without it they are served and counted.
    metrics: the Prometheus metrics served at GET /metrics (None: new ones); every reloaded runtime counts
        on the same ones.
    """
    if admin_token is not None:
        _check_token(admin_token, "admin_token")
    token = None if admin_token is None else admin_token.encode("latin-1")
    root = Path(artifact_root if artifact_root is not None else Path(artifact_path).resolve().parent).resolve()
    if admin_token is not None and not root.is_dir():
        raise ArtifactError(f"artifact root {str(root)!r} is not a folder")
    seeds = np.random.SeedSequence(seed)
    owns_log = decision_log is not None and not isinstance(decision_log, DecisionLog)
    log = DecisionLog(decision_log) if owns_log else decision_log  # type: ignore[arg-type]
    metrics = metrics if metrics is not None else ServingMetrics()
    try:
        first = PolicyRuntime.load(artifact_path, seed=seeds.spawn(1)[0], rules=rules, decision_log=log,
                                   strict=strict, metrics=metrics)
        if shadow is not None:
            if log is None:
                raise ArtifactError("shadow mode writes the candidate's probabilities to the decision log: give one")
            first.attach_shadow(PolicyRuntime.load(shadow, seed=0))
        if catalogue_file is not None:
            first = apply_catalogue_file(catalogue_file, first, seeds.spawn(1)[0])
    except BaseException:
        if owns_log and log is not None:
            log.close()
        raise
    recent = RecentIds(recent_ids)
    if log is not None:
        recent.seed_from_log(log.folder)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        yield
        if owns_log and log is not None:
            log.close()

    app = FastAPI(title="pushrl decision service", lifespan=lifespan)
    app.state.runtime = first
    app.state.metrics = metrics
    app.state.recent_ids = recent
    app.state.artifact_root = root
    reload_lock = threading.Lock()
    specs: dict[str, dict[str, Any]] = {}

    def spec() -> dict[str, Any]:
        runtime: PolicyRuntime = app.state.runtime
        if runtime.policy_version not in specs:
            specs.clear()
            specs[runtime.policy_version] = openapi_spec(runtime, admin=token is not None, max_batch=max_batch)
        return specs[runtime.policy_version]

    app.openapi = spec  # type: ignore[method-assign]

    @app.exception_handler(HTTPError)
    async def _http_error(_: Request, exc: HTTPError) -> JSONResponse:
        metrics.errors.inc(status=exc.status)
        return _error(exc.status, exc.field, str(exc), exc.headers)

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
        metrics.errors.inc(status=422)
        return _error(422, exc.field, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        metrics.errors.inc(status=exc.status_code)
        return _error(exc.status_code, None, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error while serving a request")
        metrics.errors.inc(status=500)
        return _error(500, None, f"internal error: {type(exc).__name__}")

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        """Prometheus text format 0.0.4: decisions, errors by status, OOD values by field and kind, latency."""
        return Response(metrics.exposition(), media_type=METRICS_CONTENT_TYPE)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "policy_version": app.state.runtime.policy_version}

    @app.get("/v1/policy")
    async def policy() -> dict[str, Any]:
        runtime: PolicyRuntime = app.state.runtime
        out = {**runtime.artifact.manifest_dict(), "policy_version": runtime.policy_version,
               "action_ids": runtime.action_ids}
        if runtime.catalogue is not None:
            out["serving_catalogue"] = runtime.catalogue
        return out

    @app.post("/v1/decide")
    async def decide(request: Request) -> JSONResponse:
        start = time.perf_counter()
        try:
            return await _decide(request)
        finally:
            metrics.latency.observe(time.perf_counter() - start, route="/v1/decide")

    async def _decide(request: Request) -> JSONResponse:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise HTTPError(422, "body", f"must be an object {{\"requests\": [...]}}, got {type(body).__name__}")
        extra = sorted(set(body) - {"requests", "propensities"})
        if extra:
            raise HTTPError(422, extra[0], "unknown field; the body has only 'requests' and 'propensities'")
        if "requests" not in body:
            raise HTTPError(422, "requests", "missing field")
        requests = body["requests"]
        if not isinstance(requests, list):
            raise HTTPError(422, "requests", f"must be a list, got {type(requests).__name__}")
        if len(requests) > max_batch:
            raise HTTPError(413, "requests", f"{len(requests)} requests in one call, at most {max_batch}")
        option = body.get("propensities", "all")
        if option not in PROPENSITY_OPTIONS:
            raise HTTPError(422, "propensities", f"must be one of {list(PROPENSITY_OPTIONS)}, got {option!r}")
        runtime: PolicyRuntime = app.state.runtime  # one reference: a reload never changes it mid-request
        full = option == "all"
        if full:
            singles = sum(1 for r in requests if not isinstance(r, dict) or r.get("k", 1) == 1)
            if singles * runtime.n_actions > MAX_PROBABILITIES:
                raise HTTPError(413, "propensities", f"{singles} decisions x {runtime.n_actions} actions of "
                                f"probabilities exceed {MAX_PROBABILITIES:,} numbers per response: send "
                                "\"propensities\": \"chosen\" or fewer requests per call")
        ids = _check_request_ids(requests)
        reused = recent.reserve(ids)
        if reused is not None:
            where = next(i for i, r in enumerate(requests) if isinstance(r, dict) and r.get("request_id") == ids[reused])
            raise HTTPError(409, f"requests[{where}].request_id",
                            f"{ids[reused][:80]!r} was already decided (ids of the last {recent.capacity:,} decisions "
                            "are kept); every decision needs a new request_id")
        decided = False
        try:
            if durable_log:
                decisions = await run_in_threadpool(runtime.decide, requests, wait_logged=True, probabilities=full)
            else:
                decisions = runtime.decide(requests, wait_logged=False, probabilities=full)
            decided = True
        finally:
            recent.release(ids, decided)
        return FastJSONResponse({"policy_version": runtime.policy_version,
                                 "decisions": [d.to_dict() for d in decisions]})

    if token is not None:
        @app.post("/v1/admin/reload")
        async def reload(request: Request) -> dict[str, Any]:
            _authorize(request, token)
            path = _inside_root(await _admin_field(request, "path", str, '{"path": "<artifact folder>"}'), root)
            with reload_lock:
                child = seeds.spawn(1)[0]
            try:
                new = await run_in_threadpool(PolicyRuntime.load, path, seed=child, rules=rules,
                                              decision_log=log, strict=strict, metrics=metrics)
            except (ArtifactError, OSError) as exc:  # OSError: e.g. a name too long; its path stays out of the answer
                raise HTTPError(422, "path", str(exc) if isinstance(exc, ArtifactError)
                                else f"cannot be read: {exc.strerror}") from exc
            live: PolicyRuntime = app.state.runtime
            old = live.policy_version
            if live.catalogue is not None and (catalogue_file is not None
                                               or live.policy_version != live.artifact.policy_version):
                try:  # the catalogue is managed apart from the model: the new artifact serves the live one
                    new = new.with_catalogue(live.catalogue)
                except RequestError as exc:
                    raise HTTPError(409, "path", f"the new artifact cannot serve the live catalogue: {exc}") from exc
            problem = incompatibility(live, new)
            if problem is not None:
                raise HTTPError(409, "path", f"incompatible with the live policy ({old}): {problem}; "
                                             "the live policy keeps serving")
            try:
                new.attach_shadow(live.shadow)
            except ArtifactError as exc:
                raise HTTPError(409, "path", str(exc)) from exc
            new.retire([live.action_ids[j] for j in live.retired])
            app.state.runtime = new
            logger.info("policy swapped: %s -> %s", old, new.policy_version)
            return {"policy_version": new.policy_version, "previous_version": old}

        @app.post("/v1/admin/retire")
        async def retire(request: Request) -> dict[str, Any]:
            _authorize(request, token)
            ids = await _admin_field(request, "ids", list, '{"ids": [<action id>, ...]}')
            runtime: PolicyRuntime = app.state.runtime
            runtime.retire(ids)
            return {"retired": [runtime.action_ids[j] for j in runtime.retired]}

        @app.post("/v1/admin/catalogue")
        async def catalogue(request: Request) -> dict[str, Any]:
            _authorize(request, token)
            promotions = await _admin_field(request, "catalogue", list,
                                             '{"catalogue": [{"id": ..., "features": {...}}, ...]}')
            if len(promotions) > MAX_CATALOGUE:
                raise HTTPError(413, "catalogue", f"{len(promotions):,} promotions, at most {MAX_CATALOGUE:,}")
            with reload_lock:
                child = seeds.spawn(1)[0]
            old: PolicyRuntime = app.state.runtime
            new = await run_in_threadpool(old.with_catalogue, promotions, child)
            if catalogue_file is not None:
                write_json(Path(catalogue_file), new.catalogue)  # durable before it is served
            app.state.runtime = new
            logger.info("catalogue updated: %s -> %s (%d actions)", old.policy_version, new.policy_version,
                        new.n_actions)
            return {"policy_version": new.policy_version, "previous_version": old.policy_version,
                    "action_ids": new.action_ids}

    return app


def apply_catalogue_file(path: str | os.PathLike[str], runtime: PolicyRuntime,
                         seed: np.random.SeedSequence) -> PolicyRuntime:
    """`runtime` serving the catalogue kept at `path` (unchanged while the file does not exist yet).

    Refused (ArtifactError naming the file and entry): a fixed-set artifact, a file that is not JSON,
    a catalogue the artifact cannot serve."""
    if not runtime.manifest.feature_based:
        raise ArtifactError(f"a catalogue file ({path}) needs a feature-based artifact; "
                            f"{runtime.manifest.policy_kind} scores a fixed action set")
    file = Path(path)
    if not file.exists():
        return runtime
    try:
        kept = json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"catalogue file {str(file)!r} is not valid JSON: {exc}") from exc
    if isinstance(kept, list) and len(kept) > MAX_CATALOGUE:
        raise ArtifactError(f"catalogue file {str(file)!r} holds {len(kept):,} promotions, at most {MAX_CATALOGUE:,}")
    try:
        return runtime.with_catalogue(kept, seed)
    except RequestError as exc:
        raise ArtifactError(f"catalogue file {str(file)!r}: {exc}") from exc


def _start_banner(runtime: PolicyRuntime, artifact: str | os.PathLike[str], host: str, port: int,
                  admin_root: Path | None = None) -> str:
    """What `serve` prints at start: address, routes, artifact, policy kind/version and action count."""
    m = runtime.manifest
    address = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    exploration = m.exploration.type
    if exploration == "epsilon":
        exploration += f" (epsilon {m.exploration.epsilon:g})"
    elif exploration == "softmax":
        exploration += f" (temperature {m.exploration.temperature:g})"
    lines = [f"pushrl serve: {address}  (POST /v1/decide, GET /healthz, GET /v1/policy, GET /metrics)",
             f"  artifact: {Path(artifact).resolve()}",
             f"  policy: {m.policy_kind}, version {runtime.policy_version}, {len(runtime.action_ids)} actions, "
             f"exploration {exploration}"]
    if m.no_push_action is not None:
        lines.append(f"  no-push action: {m.no_push_action}")
    if runtime.strict:
        lines.append("  strict: contexts outside the training distribution are refused (422)")
    if runtime.shadow is not None:
        lines.append(f"  shadow: {runtime.shadow.manifest.policy_kind}, version {runtime.shadow.policy_version}")
    if admin_root is None:
        lines.append("  admin: off (--admin-token-file enables /v1/admin/*)")
    else:
        lines.append(f"  admin: on (Authorization: Bearer <token>), reloads from under {admin_root}")
    return "\n".join(lines)


def server_options() -> dict[str, str]:
    """uvicorn's fastest event loop and HTTP parser when installed (uvloop, httptools: the `serve` extra)."""
    return {"loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
            "http": "httptools" if importlib.util.find_spec("httptools") else "h11"}


def worker_app() -> FastAPI:
    """The app of one `serve(workers=N)` worker process (a uvicorn factory): built from WORKER_ENV."""
    spec = json.loads(os.environ[WORKER_ENV])
    options = spec["options"]
    if options.get("seed") is not None:  # workers draw independent exploration streams from one seed
        options["seed"] = [options["seed"], os.getpid()]
    app = create_app(spec["artifact"], **options)
    gc.collect()
    gc.freeze()
    return app


def serve(artifact: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8000, *,
          log_level: str = "warning", workers: int = 1, **app_options: Any) -> None:
    """Serve the artifact with uvicorn until interrupted (binds `host`, loopback by default).

    Prints the address and the loaded policy first, before uvicorn's own log lines. Uses uvloop and
    httptools when installed (`server_options`).

    workers: uvicorn worker processes sharing the port (the kernel spreads connections over them); each
        loads the artifact and opens the decision log folder itself (whole batches appended with O_APPEND,
        so lines never interleave). Per process, so with workers > 1: the reused-request_id check (409)
        sees only the ids its own process decided (plus the log's newest at start), each process rotates
        its own log files, and /metrics counts one process. Admin calls would change only the worker that
        received them, so admin tokens need workers=1 (ValueError otherwise); options must be JSON values.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers > 1 and app_options.get("admin_token") is not None:
        raise ValueError("admin calls (--admin-token-file) change one worker process only: serve them with "
                         "--workers 1")
    app = create_app(artifact, **app_options)
    admin_root = app.state.artifact_root if app_options.get("admin_token") is not None else None
    banner = _start_banner(app.state.runtime, artifact, host, port, admin_root)
    if workers == 1:
        print(banner, flush=True)
        gc.collect()
        gc.freeze()  # startup objects (onnxruntime, fastapi) leave the collector's view: shorter GC pauses
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, **server_options())
        return
    try:  # the parent only checks the options and prints the banner; each worker builds its own app
        spec = json.dumps({"artifact": str(artifact), "options": app_options})
    except TypeError as exc:
        raise ValueError(f"with workers > 1 every serve option must be a JSON value: {exc}") from exc
    finally:
        log = app.state.runtime.decision_log
        if log is not None and not isinstance(app_options.get("decision_log"), DecisionLog):
            log.close()
    del app
    print(banner + f"\n  workers: {workers} processes (request_id reuse is checked per process)", flush=True)
    os.environ[WORKER_ENV] = spec
    uvicorn.run("pushrl.policies.serving.http:worker_app", factory=True, workers=workers, host=host, port=port,
                log_level=log_level, access_log=False, **server_options())


@contextmanager
def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", *, timeout_s: float = 30.0) -> Iterator[str]:
    """Run `app` with uvicorn in a background thread on a free port; yields the base URL, stops on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"the server did not start within {timeout_s} s")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout_s)
        sock.close()

