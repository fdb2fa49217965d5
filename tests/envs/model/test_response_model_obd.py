"""ResponseModel on the real Open Bandit sample (10,000 rows, 38 clicks).

The sample has no click signal a 28-click training split can detect (per-item
click counts are Poisson-like), so the model must not fit noise: its
noise-aware early stopping keeps the base-rate model unless the validation
split shows a real gain. The baselines below fit the same prior but no
validation check, and pick up noise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pushrl.envs.data.obd import load_obd
from pushrl.envs.data.split import split_log
from pushrl.envs.model.metrics import log_loss
from pushrl.envs.model.model_report import EmpiricalRate, LogisticRegression
from pushrl.envs.model.response_model import ResponseModel, ResponseModelConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def obd():
    split = split_log(load_obd("all"))
    return split, ResponseModel.fit(split.train, split.validation, ResponseModelConfig(progress=False))


def test_beats_both_baselines_on_held_out_log_loss(obd):
    split, model = obd
    y = split.test.reward()
    ll_model = log_loss(y, model.predict_log(split.test)["click"])
    ll_rate = log_loss(y, EmpiricalRate(model.config.l2).fit(split.train).predict_log(split.test))
    ll_lr = log_loss(y, LogisticRegression(model.config.l2).fit(split.train).predict_log(split.test))
    assert ll_model < ll_rate and ll_model < ll_lr, (ll_model, ll_rate, ll_lr)


def test_falls_back_to_the_base_rate_when_validation_shows_no_real_gain(obd):
    split, model = obd
    history = model.history["click"]
    kept = [h["epoch"] for h in history if h["kept"]]
    p = model.predict_log(split.test)["click"]
    assert kept == [0], history
    np.testing.assert_allclose(p, split.train.reward().mean(), rtol=1e-5)


def test_plain_early_stopping_fits_validation_noise(obd):
    """Why stop_se exists: with stop_se=0 a noisy epoch is kept and held-out loss gets worse."""
    split, model = obd
    plain = ResponseModel.fit(split.train, split.validation, ResponseModelConfig(stop_se=0.0, progress=False))
    y = split.test.reward()
    assert any(h["kept"] for h in plain.history["click"][1:])
    assert log_loss(y, model.predict_log(split.test)["click"]) < log_loss(y, plain.predict_log(split.test)["click"])
