"""Metrics (log loss, AUC, ECE) and baselines cross-checked against sklearn / brute force; the report itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression as SkLogisticRegression
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from pushrl.envs.data.split import split_log
from pushrl.envs.data.synthetic import SyntheticConfig, generate_log
from pushrl.envs.model.metrics import (
    auc,
    average_ranks,
    bin_ids,
    expected_calibration_error,
    log_loss,
    reliability,
)
from pushrl.envs.model.model_report import (
    EmpiricalRate,
    LogisticRegression,
    model_report,
    paired_bootstrap_ci,
)
from pushrl.envs.model.response_model import ResponseModel, ResponseModelConfig

torch.set_num_threads(1)


def _scores(seed: int, n: int = 400, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 0.3, n)
    if ties:
        p = np.round(p, 2)
    y = (rng.random(n) < p).astype(float)
    return y, p


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_auc_matches_sklearn(seed, ties):
    y, p = _scores(seed, ties=ties)
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_auc_by_pairs_and_degenerate_cases():
    y, p = _scores(9, n=60, ties=True)
    pos, neg = p[y == 1], p[y == 0]
    pairs = np.mean([(a > b) + 0.5 * (a == b) for a in pos for b in neg])
    assert auc(y, p) == pytest.approx(pairs, abs=1e-12)
    assert np.isnan(auc(np.zeros(5), np.arange(5.0)))
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]


@pytest.mark.parametrize("seed", range(3))
def test_log_loss_matches_sklearn(seed):
    y, p = _scores(seed)
    assert log_loss(y, p) == pytest.approx(sk_log_loss(y, p), rel=1e-10)
    w = np.random.default_rng(seed).uniform(0.5, 2, len(y))
    assert log_loss(y, p, weights=w) == pytest.approx(sk_log_loss(y, p, sample_weight=w), rel=1e-10)


def _ece_brute(y, p, n_bins, strategy):
    n = len(y)
    if strategy == "equal_width":
        groups = [[i for i in range(n) if min(int(p[i] * n_bins), n_bins - 1) == b] for b in range(n_bins)]
    else:
        order = sorted(range(n), key=lambda i: (p[i], i))
        size, extra = divmod(n, n_bins)
        groups, start = [], 0
        for b in range(n_bins):
            end = start + size + (1 if b < extra else 0)
            groups.append(order[start:end])
            start = end
    total = 0.0
    for g in groups:
        if g:
            total += len(g) / n * abs(sum(y[i] for i in g) / len(g) - sum(p[i] for i in g) / len(g))
    return total


@pytest.mark.parametrize("strategy", ["equal_mass", "equal_width"])
@pytest.mark.parametrize(("seed", "n_bins"), [(0, 10), (1, 7), (2, 1), (3, 15)])
def test_ece_matches_brute_force(strategy, seed, n_bins):
    y, p = _scores(seed, n=203, ties=seed == 3)
    assert expected_calibration_error(y, p, n_bins, strategy) == pytest.approx(_ece_brute(y, p, n_bins, strategy), abs=1e-12)


def test_ece_hand_example_and_bins():
    y = np.array([0, 0, 1, 1.0])
    p = np.array([0.1, 0.3, 0.6, 0.8])
    # equal-width, 2 bins: {0.1, 0.3} -> |0 - 0.2|, {0.6, 0.8} -> |1 - 0.7|
    assert expected_calibration_error(y, p, 2, "equal_width") == pytest.approx(0.5 * 0.2 + 0.5 * 0.3)
    assert bin_ids(np.array([0.0, 0.5, 1.0]), 2, "equal_width").tolist() == [0, 1, 1]
    rel = reliability(y, p, 4, "equal_mass")
    assert rel.count.tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="strategy must be one of"):
        expected_calibration_error(y, p, 2, "quantile")
    with pytest.raises(ValueError, match="n_bins must be an int >= 1"):
        expected_calibration_error(y, p, 0)
    with pytest.raises(ValueError, match=r"same shape, got \(4,\) and \(3,\)"):
        log_loss(y, p[:3])


@pytest.mark.parametrize("l2", [0.5, 1.0, 20.0])
def test_logistic_regression_matches_sklearn(l2):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(600, 6))
    y = (rng.random(600) < 1 / (1 + np.exp(-(x @ rng.normal(size=6) - 1)))).astype(float)
    ours = LogisticRegression(l2).fit_arrays(x, y)
    sk = SkLogisticRegression(C=1.0 / l2, tol=1e-12, max_iter=10_000).fit(x, y)
    np.testing.assert_allclose(ours.coef, sk.coef_.ravel(), atol=1e-5)
    assert ours.intercept == pytest.approx(sk.intercept_[0], abs=1e-5)
    np.testing.assert_allclose(ours.predict_arrays(x), sk.predict_proba(x)[:, 1], atol=1e-6)


@pytest.fixture(scope="module")
def small_split():
    data, _ = generate_log(SyntheticConfig(n_rows=5_000, n_users=500, n_actions=6, n_positions=2, seed=8))
    return split_log(data)


def test_empirical_rate_is_the_map_of_a_shrunk_per_promotion_rate(small_split):
    train = small_split.train
    y, a = train.reward(), train.action
    raw = EmpiricalRate(0.0).fit(train).rates
    np.testing.assert_allclose(raw, [y[a == k].mean() for k in range(train.n_actions)])
    l2 = 30.0
    rates = EmpiricalRate(l2).fit(train).rates
    o = np.log(y.mean() / (1 - y.mean()))
    for k in range(train.n_actions):  # brute force: the MAP bias minimises the penalised loss on a grid
        grid = np.linspace(-2, 2, 40_001)
        z = o + grid[:, None]
        yk = y[a == k]
        obj = np.sum(np.logaddexp(0, z) * len(yk) - z * yk.sum(), axis=1) + 0.5 * l2 * grid**2
        assert np.log(rates[k] / (1 - rates[k])) - o == pytest.approx(grid[obj.argmin()], abs=2e-4)
    assert np.all(np.abs(rates - y.mean()) <= np.abs(raw - y.mean()) + 1e-12)  # shrinks toward the global rate


def test_paired_bootstrap_interval_covers_the_difference():
    y, p = _scores(1, n=500)
    q = np.clip(p * 1.5, 0, 0.99)
    lo, hi = paired_bootstrap_ci(y, q, p, n_boot=300, seed=1)
    assert lo <= log_loss(y, q) - log_loss(y, p) <= hi
    assert paired_bootstrap_ci(y, p, p, n_boot=50) == (0.0, 0.0)


def test_model_report_table_markdown_and_plot(small_split, tmp_path):
    model = ResponseModel.fit(small_split.train, small_split.validation, ResponseModelConfig(epochs=3, progress=False))
    rep = model_report(model, small_split, tmp_path, n_boot=100)
    t = rep.table
    assert list(t.index) == ["response model", "empirical rate", "logistic regression", "base rate (reference)"]
    assert {"log_loss", "auc", "ece", "ll_minus_model", "ci95_low", "ci95_high"} <= set(t.columns)
    y = small_split.test.reward()
    p = model.predict_log(small_split.test)["click"]
    assert t.loc["response model", "log_loss"] == pytest.approx(log_loss(y, p))
    assert t.loc["response model", "ece"] == pytest.approx(expected_calibration_error(y, p, 10, "equal_mass"))
    assert t.loc["base rate (reference)", "auc"] == 0.5
    assert (t["ci95_low"] <= t["ll_minus_model"] + 1e-12).all() and (t["ll_minus_model"] <= t["ci95_high"] + 1e-12).all()
    md = rep.to_markdown()
    assert md.startswith("| predictor | log_loss |") and "| logistic regression |" in md
    assert (tmp_path / "model_report.md").read_text() == md
    assert rep.plot_path == tmp_path / "reliability.png"
    assert rep.plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_report.md", "reliability.png"]
