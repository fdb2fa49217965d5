"""Where the embedded real samples live."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "PUSHRL_DATA_DIR"


def data_root() -> Path:
    """`$PUSHRL_DATA_DIR`, else the repository's `data/` folder."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "data"
