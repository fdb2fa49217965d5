"""How well the response model scores a promotion it never saw, on a synthetic shop with a known truth.

One promotion is removed from the log (it stays in the catalogue with its
features), the model is fitted on the rest exactly as `pushrl run` fits one,
and on the held-out rows its predicted click rate for that promotion is
compared with the true rate, and with the naive guess "like the average known
promotion" (the model's mean over the promotions it did see).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from pushrl.envs.data.split import split_log
from pushrl.envs.data.synthetic import SyntheticConfig, generate_log
from pushrl.envs.model.response_model import ResponseModel, ResponseModelConfig


def cold_start_errors(shop: SyntheticConfig, held_out: Sequence[int], config: ResponseModelConfig) -> pd.DataFrame:
    """One row per held-out promotion: true click rate, the model's feature-only score, the average-promotion guess
    and both relative errors. `shop` should be feature-driven (`SyntheticConfig(feature_driven=True)`)."""
    data, truth = generate_log(shop)  # its catalogue holds every promotion with its features
    rows = []
    for new in held_out:
        if not 0 <= new < shop.n_actions:
            raise ValueError(f"held_out promotion {new} is not in the shop's 0..{shop.n_actions - 1}")
        split = split_log(data.subset(np.flatnonzero(data.action != new)))  # never logged, but in the catalogue
        model = ResponseModel.fit(split.train, split.validation, replace(config, progress=False))
        x, recent = model.encode(split.test)
        q = model.predict(x, recent, split.test.position)["click"]
        true_rate = float(truth.expected_rewards(*truth.row_inputs(split.test))[:, new].mean())
        predicted, average = float(q[:, new].mean()), float(np.delete(q, new, axis=1).mean())
        rows.append({"promotion": new, "true_rate": true_rate, "predicted": predicted,
                     "relative_error": abs(predicted - true_rate) / true_rate, "average_known": average,
                     "average_relative_error": abs(average - true_rate) / true_rate})
    return pd.DataFrame(rows)


def known_promotion_log_loss(shop: SyntheticConfig, config: ResponseModelConfig,
                             dropouts: Sequence[float] = (0.0, 0.5)) -> dict[float, float]:
    """Held-out click log loss of the model at each id-dropout rate on a log where every promotion is known:
    the price of training the content path (largest when features do not explain the promotions)."""
    data, _ = generate_log(shop)
    split = split_log(data)
    y = split.test.reward("click")
    out = {}
    for d in dropouts:
        model = ResponseModel.fit(split.train, split.validation, replace(config, progress=False, id_dropout=d))
        p = np.clip(model.predict_log(split.test)["click"], 1e-12, 1 - 1e-12)
        out[float(d)] = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    return out
