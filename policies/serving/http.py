"""HTTP decision service: `POST /v1/decide` (the decision contract), health, manifest, hot swap.

Contract:
    POST /v1/decide {"requests": [{"request_id": "c-1", "context": {...raw fields...},
                                   "exclude": ["No E-Mail"], "k": 1, "pushes_in_window": 0}]}
    (exclude, k, pushes_in_window optional; pushes_in_window required when the
    policy has a frequency cap; at most `max_batch` requests per call)
    200 {"policy_version": "...", "decisions": [{"request_id": "c-1", "actions": ["Mens E-Mail"],
         "propensities": [0.92], "probabilities": {"No E-Mail": 0.04, ...}}]}   (probabilities when k = 1)
    4xx {"detail": "<field>: <problem>", "field": "<field path>"}: 400 malformed JSON,
    413 too many requests or too large a body, 422 any invalid field. Never a 500 for bad input.

    GET /healthz, GET /v1/policy (the manifest, with the serving policy_version and action_ids),
    POST /v1/admin/reload {"path": "..."}: builds the new runtime fully (off the event loop) and
    then swaps one reference; requests already running finish on the runtime they started with.
    POST /v1/admin/retire {"ids": [...]}: retire promotions (see `PolicyRuntime.retire`).
    POST /v1/admin/catalogue {"catalogue": [{"id": ..., "features": {...}}, ...]}: feature-based
    artifacts only; the new action set is scored by the same model (no retraining) and swapped in
    like a reload (see `PolicyRuntime.with_catalogue`). With `catalogue_file`, the catalogue
    served is kept in that JSON file: read at start (an update survives a restart), rewritten
    atomically before each swap, and applied to every reloaded artifact (model deployments
    and catalogue changes stay independent).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from pushrl.envs.common.atomic import write_json
from pushrl.policies.artifact import ArtifactError, BusinessRules
from pushrl.policies.serving.decision_log import DecisionLog
from pushrl.policies.serving.runtime import PolicyRuntime, RequestError

logger = logging.getLogger(__name__)
MAX_BATCH = 1000
MAX_BODY_BYTES = 16 * 2**20

_REQUEST_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["requests"],
    "properties": {"requests": {"type": "array", "maxItems": MAX_BATCH, "items": {
        "type": "object", "additionalProperties": False, "required": ["request_id", "context"],
        "properties": {
            "request_id": {"type": "string"},
            "context": {"type": "object", "description": "raw context fields named in the manifest"},
            "exclude": {"type": "array", "items": {"type": ["string", "integer"]}},
            "k": {"type": "integer", "minimum": 1},
            "pushes_in_window": {"type": "integer", "minimum": 0},
        }}}},
}


class HTTPError(Exception):
    """A client error with a status code and the offending field."""

    def __init__(self, status: int, field: str, problem: str) -> None:
        self.status, self.field, self.problem = status, field, problem
        super().__init__(f"{field}: {problem}")


def _error(status: int, field: str | None, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail, "field": field}, status_code=status)


async def _json_body(request: Request, limit: int = MAX_BODY_BYTES) -> Any:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, "body", f"{declared} bytes, at most {limit}")
    body = await request.body()
    if len(body) > limit:
        raise HTTPError(413, "body", f"{len(body)} bytes, at most {limit}")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPError(400, "body", f"malformed JSON: {exc}") from exc


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
    enable_admin: bool = True,
    shadow: str | os.PathLike[str] | None = None,
    catalogue_file: str | os.PathLike[str] | None = None,
) -> FastAPI:
    """The FastAPI app serving the artifact at `artifact_path`.

    decision_log: a DecisionLog (owned by the caller) or a folder (opened here,
        closed at shutdown). durable_log: answer only after the decisions are
        fsynced (adds the fsync to latency); otherwise they reach disk within
        one group commit and a crash can lose only that last unsynced batch.
    seed: one SeedSequence; each loaded runtime (first and every reload) gets a child.
    shadow: a candidate artifact served in shadow mode beside the live one (see `PolicyRuntime.attach_shadow`);
        needs a decision log, where its probabilities are written.
    catalogue_file: where the serving catalogue of a feature-based artifact is kept (see the module
        docstring); a file that exists at start must hold a valid catalogue for the artifact.
    """
    seeds = np.random.SeedSequence(seed)
    owns_log = decision_log is not None and not isinstance(decision_log, DecisionLog)
    log = DecisionLog(decision_log) if owns_log else decision_log  # type: ignore[arg-type]
    try:
        first = PolicyRuntime.load(artifact_path, seed=seeds.spawn(1)[0], rules=rules, decision_log=log)
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

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        yield
        if owns_log and log is not None:
            log.close()

    app = FastAPI(title="pushrl decision service", lifespan=lifespan)
    app.state.runtime = first
    reload_lock = threading.Lock()

    @app.exception_handler(HTTPError)
    async def _http_error(_: Request, exc: HTTPError) -> JSONResponse:
        return _error(exc.status, exc.field, str(exc))

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
        return _error(422, exc.field, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _starlette_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, None, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error while serving a request")
        return _error(500, None, f"internal error: {type(exc).__name__}")

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

    @app.post("/v1/decide", openapi_extra={"requestBody": {
        "required": True, "content": {"application/json": {"schema": _REQUEST_SCHEMA}}}})
    async def decide(request: Request) -> JSONResponse:
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise HTTPError(422, "body", f"must be an object {{\"requests\": [...]}}, got {type(body).__name__}")
        extra = sorted(set(body) - {"requests"})
        if extra:
            raise HTTPError(422, extra[0], "unknown field; the body has only 'requests'")
        if "requests" not in body:
            raise HTTPError(422, "requests", "missing field")
        requests = body["requests"]
        if not isinstance(requests, list):
            raise HTTPError(422, "requests", f"must be a list, got {type(requests).__name__}")
        if len(requests) > max_batch:
            raise HTTPError(413, "requests", f"{len(requests)} requests in one call, at most {max_batch}")
        runtime: PolicyRuntime = app.state.runtime  # one reference: a reload never changes it mid-request
        if durable_log:
            decisions = await run_in_threadpool(runtime.decide, requests, wait_logged=True)
        else:
            decisions = runtime.decide(requests, wait_logged=False)
        return JSONResponse({"policy_version": runtime.policy_version,
                             "decisions": [d.to_dict() for d in decisions]})

    if enable_admin:
        @app.post("/v1/admin/reload")
        async def reload(request: Request) -> dict[str, Any]:
            path = await _admin_field(request, "path", str, '{"path": "<artifact folder>"}')
            with reload_lock:
                child = seeds.spawn(1)[0]
            try:
                new = await run_in_threadpool(PolicyRuntime.load, path, seed=child, rules=rules,
                                              decision_log=log)
            except ArtifactError as exc:
                raise HTTPError(422, "path", str(exc)) from exc
            old = app.state.runtime.policy_version
            new.attach_shadow(app.state.runtime.shadow)
            if catalogue_file is not None and app.state.runtime.catalogue is not None:
                try:  # the catalogue is managed apart from the model: the new artifact serves the kept one
                    new = new.with_catalogue(app.state.runtime.catalogue)
                except RequestError as exc:
                    raise HTTPError(422, "path", f"the new artifact cannot serve the kept catalogue "
                                                 f"({catalogue_file}): {exc}") from exc
            new.retire([app.state.runtime.action_ids[j] for j in app.state.runtime.retired])
            app.state.runtime = new
            logger.info("policy swapped: %s -> %s", old, new.policy_version)
            return {"policy_version": new.policy_version, "previous_version": old}

        @app.post("/v1/admin/retire")
        async def retire(request: Request) -> dict[str, Any]:
            ids = await _admin_field(request, "ids", list, '{"ids": [<action id>, ...]}')
            runtime: PolicyRuntime = app.state.runtime
            runtime.retire(ids)
            return {"retired": [runtime.action_ids[j] for j in runtime.retired]}

        @app.post("/v1/admin/catalogue")
        async def catalogue(request: Request) -> dict[str, Any]:
            promotions = await _admin_field(request, "catalogue", list,
                                             '{"catalogue": [{"id": ..., "features": {...}}, ...]}')
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
    try:
        return runtime.with_catalogue(kept, seed)
    except RequestError as exc:
        raise ArtifactError(f"catalogue file {str(file)!r}: {exc}") from exc


def _start_banner(runtime: PolicyRuntime, artifact: str | os.PathLike[str], host: str, port: int) -> str:
    """What `serve` prints at start: address, routes, artifact, policy kind/version and action count."""
    m = runtime.manifest
    address = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    exploration = m.exploration.type
    if exploration == "epsilon":
        exploration += f" (epsilon {m.exploration.epsilon:g})"
    elif exploration == "softmax":
        exploration += f" (temperature {m.exploration.temperature:g})"
    lines = [f"pushrl serve: {address}  (POST /v1/decide, GET /healthz, GET /v1/policy)",
             f"  artifact: {Path(artifact).resolve()}",
             f"  policy: {m.policy_kind}, version {runtime.policy_version}, {len(runtime.action_ids)} actions, "
             f"exploration {exploration}"]
    if m.no_push_action is not None:
        lines.append(f"  no-push action: {m.no_push_action}")
    if runtime.shadow is not None:
        lines.append(f"  shadow: {runtime.shadow.manifest.policy_kind}, version {runtime.shadow.policy_version}")
    return "\n".join(lines)


def serve(artifact: str | os.PathLike[str], host: str = "127.0.0.1", port: int = 8000, *,
          log_level: str = "warning", **app_options: Any) -> None:
    """Serve the artifact with uvicorn until interrupted (binds `host`, loopback by default).

    Prints the address and the loaded policy first, before uvicorn's own log lines."""
    app = create_app(artifact, **app_options)
    print(_start_banner(app.state.runtime, artifact, host, port), flush=True)
    gc.collect()
    gc.freeze()  # startup objects (onnxruntime, fastapi) leave the collector's view: shorter GC pauses
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


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

