"""Fit the response model once per config and training data: a rerun in the same folder reuses it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pushrl.envs.common.atomic import write_json
from pushrl.envs.data.split import Split
from pushrl.envs.model.response_model import ResponseModel, ResponseModelConfig


def fit_or_resume(config: ResponseModelConfig, split: Split, folder: Path,
                  say: Callable[[str], object] = lambda _m: None) -> ResponseModel:
    """Fit the response model, or reload the one a previous (interrupted) run in `folder` saved for the same
    config and the same training data; `fit.json` records both and is written last."""
    stamp = {"config": {k: v for k, v in vars(config).items() if k != "progress"},
             "train": split.train.fingerprint(), "validation": split.validation.fingerprint()}
    marker = folder / "fit.json"
    if marker.exists() and json.loads(marker.read_text()) == json.loads(json.dumps(stamp)):
        say(f"  reusing the response model saved in {folder}")
        return ResponseModel.load(folder)
    model = ResponseModel.fit(split.train, split.validation, config)
    model.save(folder)
    write_json(marker, stamp)
    return model
