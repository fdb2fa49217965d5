"""The exported policy: a folder with `policy.onnx` and `manifest.json`.

The manifest (schema_version 1) says everything serving needs besides the
model: the raw input fields and their encoding (a `ContextEncoder` dict), the
action ids exactly as logged, what the ONNX output means ("scores" or
"probabilities"), the exploration setting, the slate size, the optional
"no push" action, the business-rule defaults, where the policy came from (data
fingerprint, training config, headline metrics, created_at, pushrl version),
the SHA-256 of every other file, and `content_sha256`, the hash of the
manifest itself (canonical JSON without that key). So any edit to either file
is refused on load, naming the file. `policy_version` is
`{policy_kind}-{content_sha256[:12]}`: it changes whenever anything changes.

Loading checks the model against the manifest with onnxruntime (no torch):
one input of width `encoder.n_features`, one output of width `len(action_ids)`.

Feature-based artifacts (schema_version 2, e.g. a shared-feature LinUCB) also
carry `catalogue`: the promotion-feature encoder and every action's raw
features, in `action_ids` order. Their model has a second input,
"action_features" (n_actions, catalogue encoder width), with a dynamic action
axis, so the serving runtime can score a new catalogue without retraining
(`PolicyRuntime.with_catalogue`). Loading probes that axis with one extra row.
Artifacts without a catalogue are written as schema_version 1.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import onnxruntime as ort

from pushrl.envs.data.features import ContextEncoder

SCHEMA_VERSION = 2  # the newest this pushrl reads; 1 = fixed action set, 2 = adds `catalogue`
MODEL_FILE = "policy.onnx"
MANIFEST_FILE = "manifest.json"
OUTPUT_KINDS = ("scores", "probabilities")
EXPLORATION_TYPES = ("none", "epsilon", "softmax")

ActionId = str | int
MANIFEST_KEYS = (
    "schema_version", "policy_kind", "input_fields", "encoder", "action_ids", "no_push_action", "output",
    "exploration", "slate_size", "business_rules", "data_fingerprint", "training_config", "metrics",
    "created_at", "pushrl_version", "files", "content_sha256", "catalogue",
)
ACTION_FEATURES_INPUT = "action_features"


class ArtifactError(ValueError):
    """An artifact folder is incomplete, edited, from the future or inconsistent."""


@dataclass(frozen=True)
class Exploration:
    """How scores become probabilities: greedy, epsilon-greedy or softmax(scores / temperature)."""

    type: str = "none"
    epsilon: float = 0.0
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.type not in EXPLORATION_TYPES:
            raise ValueError(f"exploration.type must be one of {EXPLORATION_TYPES}, got {self.type!r}")
        if not _is_number(self.epsilon) or not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"exploration.epsilon must be a number in [0, 1], got {self.epsilon!r}")
        if not _is_number(self.temperature) or not self.temperature > 0:
            raise ValueError(f"exploration.temperature must be a number > 0, got {self.temperature!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "epsilon": float(self.epsilon), "temperature": float(self.temperature)}


@dataclass(frozen=True)
class BusinessRules:
    """Serving defaults that are not the model's: the frequency cap and whether "no push" may be chosen.

    frequency_cap: at most this many pushes per user per window (the caller
        counts them and sends `pushes_in_window`); None means no cap.
    allow_no_push: False masks the "no push" action except where the cap forces it.
    """

    frequency_cap: int | None = None
    allow_no_push: bool = True

    def __post_init__(self) -> None:
        cap = self.frequency_cap
        if cap is not None and (not isinstance(cap, int | np.integer) or isinstance(cap, bool) or cap < 0):
            raise ValueError(f"business_rules.frequency_cap must be None or an integer >= 0, got {cap!r}")
        if not isinstance(self.allow_no_push, bool):
            raise ValueError(f"business_rules.allow_no_push must be true or false, got {self.allow_no_push!r}")

    def to_dict(self) -> dict[str, Any]:
        cap = None if self.frequency_cap is None else int(self.frequency_cap)
        return {"frequency_cap": cap, "allow_no_push": self.allow_no_push}


@dataclass(frozen=True)
class CatalogueSpec:
    """The promotion features a feature-based policy scores: their encoder and each action's raw values.

    features[i] maps every field of `encoder.input_fields` to action i's raw value (numbers for numeric
    fields, strings / integers for categorical ones), in the manifest's `action_ids` order.
    """

    encoder: ContextEncoder
    features: tuple[Mapping[str, Any], ...]

    def __post_init__(self) -> None:
        fields = set(self.encoder.input_fields)
        rows = tuple(dict(f) for f in self.features) if isinstance(self.features, list | tuple) else None
        if rows is None:
            raise ValueError(f"catalogue.features must be a list of objects, got {type(self.features).__name__}")
        for i, row in enumerate(rows):
            if set(row) != fields:
                missing, extra = sorted(fields - set(row)), sorted(set(row) - fields)
                raise ValueError(f"catalogue.features[{i}] must have exactly the fields {self.encoder.input_fields}; "
                                 f"missing {missing}, unknown {extra}")
            for name in self.encoder.numeric:
                if not _is_number(row[name]):
                    raise ValueError(f"catalogue.features[{i}].{name} must be a finite number, got {row[name]!r}")
            for name in self.encoder.categorical:
                if not isinstance(row[name], str | int) or isinstance(row[name], bool):
                    raise ValueError(f"catalogue.features[{i}].{name} must be a string or integer, got {row[name]!r}")
        object.__setattr__(self, "features", rows)

    def to_dict(self) -> dict[str, Any]:
        return {"encoder": self.encoder.to_dict(), "features": [dict(f) for f in self.features]}

    @classmethod
    def from_frame(cls, encoder: ContextEncoder, frame: Any) -> CatalogueSpec:
        """From a table with one row per action (in action order) holding the encoder's fields."""
        rows = frame[encoder.input_fields].to_dict(orient="records")
        return cls(encoder, tuple({k: plain_value(v) for k, v in r.items()} for r in rows))


def plain_value(value: Any) -> Any:
    """A numpy scalar as the plain Python value (JSON-able); anything else unchanged."""
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class Manifest:
    """What `manifest.json` holds; `files`, `created_at`, `pushrl_version` are filled on write."""

    policy_kind: str
    encoder: ContextEncoder
    action_ids: tuple[ActionId, ...]
    output: str = "scores"
    exploration: Exploration = field(default_factory=Exploration)
    slate_size: int = 1
    no_push_action: ActionId | None = None
    business_rules: BusinessRules = field(default_factory=BusinessRules)
    data_fingerprint: str | None = None
    training_config: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    created_at: str = ""
    pushrl_version: str = ""
    files: Mapping[str, str] = field(default_factory=dict)
    catalogue: CatalogueSpec | None = None
    schema_version: int | None = None  # None: 2 with a catalogue, else 1

    def __post_init__(self) -> None:
        ids = tuple(_native_id(a, "action_ids") for a in self.action_ids)
        object.__setattr__(self, "action_ids", ids)
        if not ids:
            raise ValueError("action_ids must name at least one action")
        dup = sorted({str(a) for a in ids if ids.count(a) > 1})
        if dup:
            raise ValueError(f"action_ids must be unique; repeated: {dup}")
        if not isinstance(self.policy_kind, str) or not self.policy_kind:
            raise ValueError(f"policy_kind must be a non-empty string, got {self.policy_kind!r}")
        if self.output not in OUTPUT_KINDS:
            raise ValueError(f"output must be one of {OUTPUT_KINDS}, got {self.output!r}")
        if self.output == "probabilities" and self.exploration.type != "none":
            raise ValueError("output='probabilities' is used as is; exploration must be type 'none', "
                             f"got {self.exploration.type!r}")
        if isinstance(self.slate_size, bool) or not isinstance(self.slate_size, int) or self.slate_size < 1:
            raise ValueError(f"slate_size must be an integer >= 1, got {self.slate_size!r}")
        if self.slate_size > len(ids):
            raise ValueError(f"slate_size {self.slate_size} exceeds the number of actions {len(ids)}")
        if self.no_push_action is not None:
            object.__setattr__(self, "no_push_action", _native_id(self.no_push_action, "no_push_action"))
            if self.no_push_action not in ids:
                raise ValueError(f"no_push_action {self.no_push_action!r} is not one of action_ids {list(ids)[:10]}")
        required = 1 if self.catalogue is None else 2
        if self.schema_version is None:
            object.__setattr__(self, "schema_version", required)
        if self.schema_version != required:
            raise ValueError(f"schema_version must be {required} "
                             f"({'with' if self.catalogue is not None else 'without'} a catalogue), "
                             f"got {self.schema_version!r}")
        if self.catalogue is not None and len(self.catalogue.features) != len(ids):
            raise ValueError(f"catalogue.features has {len(self.catalogue.features)} rows but action_ids has "
                             f"{len(ids)}: one row of features per action, in action_ids order")

    @property
    def input_fields(self) -> list[str]:
        return self.encoder.input_fields

    @property
    def feature_based(self) -> bool:
        """True when the model scores actions from their features (a catalogue update needs no retraining)."""
        return self.catalogue is not None

    @property
    def n_actions(self) -> int:
        return len(self.action_ids)

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout of manifest.json (without `content_sha256`)."""
        body = {
            "schema_version": self.schema_version,
            "policy_kind": self.policy_kind,
            "input_fields": self.input_fields,
            "encoder": self.encoder.to_dict(),
            "action_ids": list(self.action_ids),
            "no_push_action": self.no_push_action,
            "output": self.output,
            "exploration": self.exploration.to_dict(),
            "slate_size": self.slate_size,
            "business_rules": self.business_rules.to_dict(),
            "data_fingerprint": self.data_fingerprint,
            "training_config": dict(self.training_config),
            "metrics": dict(self.metrics),
            "created_at": self.created_at,
            "pushrl_version": self.pushrl_version,
            "files": dict(self.files),
        }
        if self.catalogue is not None:
            body["catalogue"] = self.catalogue.to_dict()
        return body

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Manifest:
        """Parse a manifest dict (schema_version 1); errors name the manifest field."""
        extra = sorted(set(d) - set(MANIFEST_KEYS))
        if extra:
            raise ArtifactError(f"manifest.json has unknown field(s) {extra} for schema_version {SCHEMA_VERSION}")
        missing = sorted({"policy_kind", "encoder", "action_ids", "input_fields"} - set(d))
        if missing:
            raise ArtifactError(f"manifest.json is missing field(s) {missing}")
        try:
            encoder = ContextEncoder.from_dict(d["encoder"])
            catalogue = None
            if d.get("catalogue") is not None:
                cat = d["catalogue"]
                if not isinstance(cat, Mapping) or set(cat) != {"encoder", "features"}:
                    raise ValueError("catalogue must be an object with fields ['encoder', 'features']")
                catalogue = CatalogueSpec(ContextEncoder.from_dict(cat["encoder"]), cat["features"])
            manifest = cls(
                policy_kind=d["policy_kind"],
                encoder=encoder,
                action_ids=tuple(d["action_ids"]),
                output=d.get("output", "scores"),
                exploration=Exploration(**d.get("exploration", {})),
                slate_size=d.get("slate_size", 1),
                no_push_action=d.get("no_push_action"),
                business_rules=BusinessRules(**d.get("business_rules", {})),
                data_fingerprint=d.get("data_fingerprint"),
                training_config=d.get("training_config", {}),
                metrics=d.get("metrics", {}),
                created_at=d.get("created_at", ""),
                pushrl_version=d.get("pushrl_version", ""),
                files=d.get("files", {}),
                catalogue=catalogue,
                schema_version=d["schema_version"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"manifest.json is invalid: {exc}") from exc
        if list(d["input_fields"]) != encoder.input_fields:
            raise ArtifactError(f"manifest.json input_fields {list(d['input_fields'])} do not match the "
                                f"encoder's fields {encoder.input_fields}")
        return manifest


@dataclass(frozen=True)
class Artifact:
    """A loaded, verified artifact: its manifest, the model bytes and an onnxruntime session."""

    folder: Path
    manifest: Manifest
    content_sha256: str
    session: ort.InferenceSession

    @property
    def policy_version(self) -> str:
        return f"{self.manifest.policy_kind}-{self.content_sha256[:12]}"

    @property
    def input_name(self) -> str:
        return self.session.get_inputs()[0].name

    @property
    def output_name(self) -> str:
        return self.session.get_outputs()[0].name

    def manifest_dict(self) -> dict[str, Any]:
        """The manifest as stored, with `content_sha256` and `policy_version`."""
        return {**self.manifest.to_dict(), "content_sha256": self.content_sha256,
                "policy_version": self.policy_version}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def content_hash(manifest_dict: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a manifest dict, `content_sha256` left out."""
    body = {k: v for k, v in manifest_dict.items() if k != "content_sha256"}
    return sha256_bytes(json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode())


def write_artifact(folder: str | os.PathLike[str], onnx_bytes: bytes, manifest: Manifest) -> Path:
    """Write the artifact atomically and return its folder.

    Builds everything in a temp folder beside `folder`, verifies it with
    `load_artifact`, and only then renames it into place; an existing
    artifact at `folder` is moved aside first and deleted after the rename.
    (If the process dies between those two renames the old artifact is left
    at `.{name}.old-*` beside it.)
    """
    target = Path(folder)
    if target.exists() and not (target.is_dir() and ((target / MANIFEST_FILE).is_file() or not any(target.iterdir()))):
        raise ArtifactError(f"{str(target)!r} exists and is not an artifact folder; refusing to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    manifest = replace(
        manifest,
        files={MODEL_FILE: sha256_bytes(onnx_bytes)},
        created_at=manifest.created_at or datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        pushrl_version=manifest.pushrl_version or _pushrl_version(),
    )
    body = manifest.to_dict()
    for key in ("training_config", "metrics"):
        try:
            json.dumps(body[key], allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"manifest {key} must be plain JSON without NaN/inf: {exc}") from exc
    body["content_sha256"] = content_hash(body)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _write_synced(tmp / MODEL_FILE, onnx_bytes)
        _write_synced(tmp / MANIFEST_FILE, (json.dumps(body, indent=2, allow_nan=False) + "\n").encode())
        load_artifact(tmp)  # refuse to install anything that would not load
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / target.name)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_artifact(folder: str | os.PathLike[str], *, threads: int = 1) -> Artifact:
    """Load and verify an artifact folder (raises ArtifactError naming what is wrong)."""
    root = Path(folder)
    if not root.is_dir():
        raise ArtifactError(f"artifact folder {str(root)!r} does not exist")
    for name in (MANIFEST_FILE, MODEL_FILE):
        if not (root / name).is_file():
            raise ArtifactError(f"artifact {str(root)!r} is missing {name}")
    try:
        raw = json.loads((root / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{MANIFEST_FILE} in {str(root)!r} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ArtifactError(f"{MANIFEST_FILE} must hold a JSON object, got {type(raw).__name__}")
    version = raw.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ArtifactError(f"{MANIFEST_FILE} schema_version must be an integer >= 1, got {version!r}")
    if version > SCHEMA_VERSION:
        raise ArtifactError(
            f"{MANIFEST_FILE} has schema_version {version}, newer than this pushrl reads ({SCHEMA_VERSION}); "
            "upgrade pushrl to serve this artifact"
        )
    recorded = raw.get("content_sha256")
    actual = content_hash(raw)
    if recorded != actual:
        raise ArtifactError(f"{MANIFEST_FILE} was edited after it was written (content_sha256 "
                            f"{str(recorded)[:12]}... recorded, {actual[:12]}... now); re-export the artifact")
    manifest = Manifest.from_dict(raw)
    if MODEL_FILE not in manifest.files:
        raise ArtifactError(f"{MANIFEST_FILE} lists no checksum for {MODEL_FILE}")
    contents = {}
    for name, digest in manifest.files.items():
        path = _inside_artifact(root, name)
        if not path.is_file():
            raise ArtifactError(f"artifact {str(root)!r} is missing {name} (listed in {MANIFEST_FILE})")
        contents[name] = path.read_bytes()  # read once: checked, then loaded
        if sha256_bytes(contents[name]) != digest:
            raise ArtifactError(f"{name} does not match its SHA-256 in {MANIFEST_FILE}: the file was edited or is corrupt")
    session = _session(contents[MODEL_FILE], threads)
    _check_widths(session, manifest)
    return Artifact(root, manifest, actual, session)


def _inside_artifact(root: Path, name: Any) -> Path:
    """The file a manifest `files` entry names: a plain relative path that stays inside the artifact folder
    (no absolute path, no `..`, no symlink out); ArtifactError naming the entry otherwise."""
    where = f"{MANIFEST_FILE} files entry {str(name)[:200]!r}"
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        raise ArtifactError(f"{where} is not a file name inside the artifact folder")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or os.path.isabs(name) or PureWindowsPath(name).drive or ".." in parts:
        raise ArtifactError(f"{where} points outside the artifact folder (absolute or '..'): refused")
    path = root / name
    if not path.resolve().is_relative_to(root.resolve()):
        raise ArtifactError(f"{where} resolves outside the artifact folder (a symlink): refused")
    return path


def _session(onnx_bytes: bytes, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ArtifactError(f"{MODEL_FILE} is not a model onnxruntime can load: {exc}") from exc


def _check_widths(session: ort.InferenceSession, manifest: Manifest) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    n_in = 1 if manifest.catalogue is None else 2
    if len(inputs) != n_in or len(outputs) != 1:
        raise ArtifactError(f"{MODEL_FILE} must have {n_in} input(s) and one output, has {len(inputs)} and {len(outputs)}"
                            + ("" if n_in == 1 else f" (inputs: contexts, {ACTION_FEATURES_INPUT})"))
    d, a = manifest.encoder.n_features, manifest.n_actions
    in_shape, out_shape = inputs[0].shape, outputs[0].shape
    if len(in_shape) != 2 or (isinstance(in_shape[1], int) and in_shape[1] != d):
        raise ArtifactError(f"{MODEL_FILE} input width {in_shape[-1]} (shape {in_shape}) != encoder width {d} "
                            "(manifest encoder.n_features)")
    if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != a and n_in == 1):
        raise ArtifactError(f"{MODEL_FILE} output width {out_shape[-1]} (shape {out_shape}) != number of actions "
                            f"{a} (manifest action_ids)")
    feeds = {inputs[0].name: np.zeros((2, d), np.float32)}
    if manifest.catalogue is not None:
        if inputs[1].name != ACTION_FEATURES_INPUT:
            raise ArtifactError(f"{MODEL_FILE}'s second input must be named {ACTION_FEATURES_INPUT!r}, "
                                f"got {inputs[1].name!r}")
        m = manifest.catalogue.encoder.n_features
        if len(inputs[1].shape) != 2 or (isinstance(inputs[1].shape[1], int) and inputs[1].shape[1] != m):
            raise ArtifactError(f"{MODEL_FILE} input {ACTION_FEATURES_INPUT} has shape {inputs[1].shape}; expected "
                                f"(n_actions, {m}) (manifest catalogue.encoder.n_features)")
        for rows in (a, a + 1):  # the action axis must be dynamic: a catalogue update changes it
            try:
                out = session.run(None, {**feeds, ACTION_FEATURES_INPUT: np.zeros((rows, m), np.float32)})[0]
            except Exception as exc:
                raise ArtifactError(f"{MODEL_FILE} does not accept ({rows}, {m}) action features (a catalogue of "
                                    f"{rows} actions): {exc}") from exc
            if out.shape != (2, rows):
                raise ArtifactError(f"{MODEL_FILE} scores {out.shape[-1]} actions for a catalogue of {rows}: the "
                                    "action axis must follow the action_features input")
        return
    try:  # symbolic widths: probe one row
        out = session.run(None, feeds)[0]
    except Exception as exc:
        raise ArtifactError(f"{MODEL_FILE} does not accept (n, {d}) float32 inputs (encoder width {d}): {exc}") from exc
    if out.shape != (2, a):
        raise ArtifactError(f"{MODEL_FILE} output width {out.shape[-1]} != number of actions {a} (manifest action_ids)")


def _native_id(value: Any, name: str) -> ActionId:
    """An action id as a plain str or int (numpy ints accepted); anything else is refused."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
        return int(value)
    raise ValueError(f"{name} must hold strings or integers exactly as logged, got {value!r} ({type(value).__name__})")


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool) and math.isfinite(x)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pushrl_version() -> str:
    try:
        return importlib_metadata.version("pushrl")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"

