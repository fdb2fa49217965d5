"""Model predictions with every row scored in each display slot (what OPE's estimated rewards need)."""

from __future__ import annotations

import numpy as np

from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.model.model_uncertainty import BootstrapRefits
from pushrl.envs.model.response_model import ResponseModel


def slot_predictions(model: ResponseModel, contexts: np.ndarray, recent_pushes: np.ndarray, n_positions: int,
                     logged: dict[str, np.ndarray] | None = None) -> list[dict[str, np.ndarray]]:
    """[slot] {reward: (n, A)} of `model`, every row scored in each of n_positions slots; with one slot,
    `logged` (the predictions at the logged position) when given."""
    if n_positions == 1 and logged is not None:
        return [logged]
    n = contexts.shape[0]
    return [model.predict(contexts, recent_pushes, np.full(n, k)) for k in range(n_positions)]


def refit_slot_predictions(refits: BootstrapRefits | None, data: LoggedData, n_positions: int
                           ) -> list[list[dict[str, np.ndarray]]] | None:
    """[slot][refit] {reward: (n, A)} of every refit on the log's rows (None without refits)."""
    if refits is None:
        return None
    if n_positions == 1:
        return [refits.predict(data)]
    return [refits.predict(data, np.full(data.n_rounds, k)) for k in range(n_positions)]
