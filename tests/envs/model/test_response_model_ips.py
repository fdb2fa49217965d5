"""ips_weighted=True on a skewed (softmax) log: what it changes, printed with -s.

Weights are 1/pscore normalised to mean 1, so the weighted loss targets the
uniform-over-promotions distribution instead of the logging policy's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pushrl.envs.data.split import split_log
from pushrl.envs.data.synthetic import SyntheticConfig, generate_log
from pushrl.envs.model.metrics import log_loss
from pushrl.envs.model.response_model import ResponseModel, ResponseModelConfig

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pair():
    data, truth = generate_log(SyntheticConfig(n_rows=30_000, n_users=3_000, n_actions=10, n_positions=3,
                                               logging="softmax", logging_temperature=0.5, seed=0))
    split = split_log(data)
    fits = {ips: ResponseModel.fit(split.train, split.validation, ResponseModelConfig(ips_weighted=ips, progress=False))
            for ips in (False, True)}
    return split, truth, fits


def test_ips_effect_is_reported(pair):
    split, truth, fits = pair
    test = split.test
    y, w = test.reward(), 1.0 / test.pscore
    true_q = truth.expected_rewards_for(test, "click", positions=False)
    lines = []
    ll = {}
    for ips, model in fits.items():
        p = model.predict_log(test)["click"]
        x, h = model.encode(test)
        q = model.predict(x, h, test.position)["click"]
        ll[ips] = log_loss(y, p)
        lines.append(f"ips_weighted={ips}: logged-test log loss {ll[ips]:.5f}, IPS-weighted test log loss "
                     f"{log_loss(y, p, w):.5f}, RMSE vs truth over all promotions {np.sqrt(np.mean((q - true_q) ** 2)):.5f}, "
                     f"uniform-policy click rate {q.mean():.5f} (true {true_q.mean():.5f})")
    print("\n" + "\n".join(lines))
    # the unweighted fit targets the logging distribution, so it wins there
    assert ll[False] < ll[True], ll


def test_ips_fit_is_calibrated_under_the_weighted_distribution(pair):
    split, _, fits = pair
    train = split.train
    w = 1.0 / train.pscore
    p = fits[True].predict_log(train)["click"]
    assert np.sum(w * p) == pytest.approx(np.sum(w * train.reward()), rel=1e-4)
    p0 = fits[False].predict_log(train)["click"]
    assert p0.mean() == pytest.approx(train.reward().mean(), rel=1e-4)
    assert not np.sum(w * p0) == pytest.approx(np.sum(w * train.reward()), rel=1e-2)
