"""Saving and loading a response model: `model.pt` (state_dict) and `schema.json` (feature schema + config).

Format versions: 1 (reward heads only) and 2 (the same, plus an unsubscribe head when its feature schema has an
`unsubscribe` key). A model without an unsubscribe head is written as version 1, byte for byte as before, so
older pushrl versions still read it; both versions load.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pushrl.envs.common.atomic import write_json, write_with
from pushrl.envs.model.response_config import ResponseModelConfig
from pushrl.envs.model.response_net import Head, Net

FORMAT_VERSION = 2
"""The newest format written (a model with an unsubscribe head); READABLE lists every version `read_model` loads."""
READABLE = (1, 2)


def first_difference(expected: Any, actual: Any, path: str = "") -> str | None:
    """Dotted path of the first place two JSON values differ (None if equal)."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in expected or key not in actual:
                return sub
            found = first_difference(expected[key], actual[key], sub)
            if found:
                return found
        return None
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return f"{path} (length {len(expected)} vs {len(actual)})"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            found = first_difference(e, a, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if expected == actual else path or "<root>"


def plain_json(obj: Any) -> Any:
    """`obj` as plain JSON values (numpy scalars unwrapped, anything else as str)."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def save_model(folder: Path, net: Net, schema: dict[str, Any], config: ResponseModelConfig, n_features: int) -> Path:
    """Write `folder/model.pt` and `folder/schema.json`, each atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    write_with(folder / "model.pt", lambda tmp: torch.save(net.state_dict(), tmp))
    version = FORMAT_VERSION if net.unsubscribe is not None else 1
    doc = {"format_version": version, "feature_schema": schema, "config": asdict(config),
           "shapes": {"d": n_features, "q": int(net.z.shape[1])}}
    write_json(folder / "schema.json", doc)
    return folder


def read_model(folder: Path, expected_schema: dict[str, Any] | None) -> tuple[dict[str, Any], ResponseModelConfig, Net]:
    """(feature schema, config, loaded net) of a saved model; ValueError naming the key if the schema differs."""
    doc = json.loads((folder / "schema.json").read_text(encoding="utf-8"))
    if doc.get("format_version") not in READABLE:
        raise ValueError(f"{folder}: format_version {doc.get('format_version')!r}, this pushrl reads {list(READABLE)}")
    schema = doc["feature_schema"]
    if expected_schema is not None:
        where = first_difference(plain_json(expected_schema), schema)
        if where is not None:
            raise ValueError(f"{folder}: feature schema mismatch at key '{where}': the saved model was fitted on a different schema")
    known = {f.name for f in fields(ResponseModelConfig)}
    config = ResponseModelConfig(**{k: v for k, v in doc["config"].items() if k in known})
    chain = [(r, p, link) for r, p, link in schema["reward_chain"]]
    a, d, q, k = len(schema["catalogue_ids"]), doc["shapes"]["d"], doc["shapes"]["q"], config.embedding_dim
    heads = {r: Head(d, q, a, schema["n_positions"], k, link, config.context_clip) for r, _, link in chain}
    unsub = Head(d, q, a, schema["n_positions"], k, "logit", config.context_clip) if "unsubscribe" in schema else None
    net = Net(heads, np.zeros((a, q)), np.zeros(a), 1.0, [1.0] * len(chain), unsub)
    state = torch.load(folder / "model.pt", weights_only=True)
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{folder}/model.pt does not match its schema.json: {err}") from err
    return schema, config, net
