"""ResponseModel on synthetic logs with a known logistic truth: accuracy, protocol, new promotions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pushrl.envs.data.catalogue import Catalogue
from pushrl.envs.data.split import split_log
from pushrl.envs.data.synthetic import SyntheticConfig, generate_log
from pushrl.envs.model.metrics import log_loss
from pushrl.envs.model.model_report import EmpiricalRate, LogisticRegression
from pushrl.envs.model.response import ResponseFunction
from pushrl.envs.model.response_model import ResponseModel, ResponseModelConfig

torch.set_num_threads(1)
FAST = {"progress": False}


@pytest.fixture(scope="module")
def synthetic():
    data, truth = generate_log(SyntheticConfig(n_rows=50_000, n_users=5_000, n_actions=10, n_positions=3, seed=3))
    split = split_log(data)
    # the default shop's outcomes nest (a conversion needs a click): declared, as a user with such a log would
    model = ResponseModel.fit(split.train, split.validation,
                              ResponseModelConfig(**FAST, reward_chain=("click", "conversion", "revenue")))
    return split, truth, model


def test_beats_both_baselines_on_held_out_log_loss(synthetic):
    split, _, model = synthetic
    y = split.test.reward("click")
    ll_model = log_loss(y, model.predict_log(split.test)["click"])
    ll_rate = log_loss(y, EmpiricalRate(model.config.l2).fit(split.train).predict_log(split.test))
    ll_lr = log_loss(y, LogisticRegression(model.config.l2).fit(split.train).predict_log(split.test))
    assert ll_model < ll_rate, (ll_model, ll_rate)
    assert ll_model < ll_lr, (ll_model, ll_lr)


def test_predictions_track_the_truth_for_every_promotion(synthetic):
    split, truth, model = synthetic
    test = split.test
    x, h = model.encode(test)
    q = model.predict(x, h, test.position)
    for reward in ("click", "conversion", "revenue"):
        true_q = truth.expected_rewards_for(test, reward, positions=False)
        corr = np.corrcoef(q[reward].ravel(), true_q.ravel())[0, 1]
        # the per-promotion rate alone (no context) is the reference the model must improve on
        rate = EmpiricalRate(0.0, "click").fit(split.train).rates
        corr_rate = np.corrcoef(np.broadcast_to(rate, true_q.shape).ravel(), true_q.ravel())[0, 1]
        assert corr > max(corr_rate, 0.8), (reward, corr, corr_rate)


def test_click_head_is_calibrated_in_the_large_on_train(synthetic):
    split, _, model = synthetic
    p = model.predict_log(split.train)["click"]
    assert p.mean() == pytest.approx(split.train.reward("click").mean(), rel=1e-4)


def test_learns_fatigue_and_position_direction(synthetic):
    split, truth, model = synthetic
    x, h = model.encode(split.test)
    pos0 = np.zeros(len(h), dtype=np.int64)
    fresh = model.predict(x, np.zeros_like(h), pos0)["click"]
    tired = model.predict(x, np.full_like(h, 5.0), pos0)["click"]
    last = model.predict(x, np.zeros_like(h), pos0 + split.test.n_positions - 1)["click"]
    assert truth.config.fatigue > 0 and truth.config.position_decay > 0
    assert (tired < fresh).all() and (last < fresh).all()


def test_is_a_response_function_with_unconditional_chain(synthetic):
    _, _, model = synthetic
    assert isinstance(model, ResponseFunction)
    assert model.reward_names == ("click", "conversion", "revenue")
    assert model.n_actions == 10
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, model.encoder.n_features))
    out = model.predict(x, rng.integers(0, 4, 7).astype(float), rng.integers(0, 3, 7))
    assert {k: v.shape for k, v in out.items()} == {r: (7, 10) for r in model.reward_names}
    assert all(v.dtype == np.float64 for v in out.values())
    assert (out["conversion"] <= out["click"]).all() and (out["click"] <= 1).all() and (out["revenue"] >= 0).all()
    rows = model.predict_rows(x, np.zeros(7), np.zeros(7, dtype=np.int64), np.arange(7), conditional=True)
    full = model.predict(x, np.zeros(7), np.zeros(7, dtype=np.int64))
    np.testing.assert_allclose(rows["click"] * rows["conversion"], full["conversion"][np.arange(7), np.arange(7)], rtol=1e-5)
    h, p, a = rng.integers(0, 4, 7).astype(float), rng.integers(0, 3, 7), rng.integers(0, 10, 7)
    pairs, every = model.predict_rows(x, h, p, a), model.predict(x, h, p)  # what the env step relies on
    for r in model.reward_names:
        np.testing.assert_allclose(pairs[r], every[r][np.arange(7), a], rtol=1e-5)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (lambda m: (np.zeros((3, m.encoder.n_features + 1)), np.zeros(3), np.zeros(3, int)), r"contexts must be \(n, "),
        (lambda m: (np.zeros((3, m.encoder.n_features)), np.zeros(2), np.zeros(3, int)), "recent_pushes and position"),
        (lambda m: (np.zeros((3, m.encoder.n_features)), np.zeros(3), np.full(3, 3)), r"position must be ints in \[0, 3\)"),
        (lambda m: (np.zeros((3, m.encoder.n_features)), np.zeros(3), np.full(3, 0.5)), "position must be ints"),
    ],
)
def test_predict_refuses_bad_shapes(synthetic, args, match):
    _, _, model = synthetic
    with pytest.raises(ValueError, match=match):
        model.predict(*args(model))


def test_recent_pushes_column_is_not_a_context_feature(synthetic):
    split, _, model = synthetic
    assert "recent_pushes" in split.train.columns.numeric_features
    assert "recent_pushes" not in model.encoder.input_fields


@pytest.fixture(scope="module")
def small():
    data, truth = generate_log(SyntheticConfig(n_rows=6_000, n_users=600, n_actions=6, n_positions=2, seed=5))
    return split_log(data), truth


def test_same_seed_same_weights_other_seed_differs(small):
    split, _ = small
    cfg = ResponseModelConfig(epochs=3, seed=11, **FAST)
    a = ResponseModel.fit(split.train, split.validation, cfg).net.state_dict()
    b = ResponseModel.fit(split.train, split.validation, cfg).net.state_dict()
    c = ResponseModel.fit(split.train, split.validation, ResponseModelConfig(epochs=3, seed=12, **FAST)).net.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_promotion_without_logged_rows_is_scored_from_its_features(small):
    split, _ = small
    train = split.train.subset(np.flatnonzero(split.train.action != 5))
    model = ResponseModel.fit(train, split.validation, ResponseModelConfig(epochs=3, **FAST))
    assert model.net.seen.tolist() == [1, 1, 1, 1, 1, 0]
    x, h = model.encode(split.test)
    q = model.predict(x, h, split.test.position)["click"]
    head = model.net.heads["click"]
    # by hand: everything but the id terms, for promotion 5's features
    xt = torch.as_tensor(x).clamp(-model.config.context_clip, model.config.context_clip)
    z5 = model.net.z[5]
    eta = (head.offset + head.pos[torch.tensor(split.test.position)] + head.w_h * torch.as_tensor(h) / model.net.h_scale
           + xt @ head.w_u + z5 @ head.w_z + (xt @ head.P) @ (z5 @ head.Q))
    np.testing.assert_allclose(q[:, 5], torch.sigmoid(eta).detach().numpy(), rtol=1e-5)


def test_with_catalogue_adds_new_promotions(small):
    split, _ = small
    model = ResponseModel.fit(split.train, split.validation, ResponseModelConfig(epochs=3, **FAST))
    feats = split.train.catalogue.features
    new = pd.concat([feats, feats.iloc[[2]].rename(index={2: 99})])
    new.loc[99, "category"] = "never-seen"
    bigger = model.with_catalogue(Catalogue(new))
    assert bigger.n_actions == model.n_actions + 1 and bigger.catalogue_ids[-1] == 99
    x, h = model.encode(split.test)
    pos = split.test.position
    before, after = model.predict(x, h, pos), bigger.predict(x, h, pos)
    for r in model.reward_names:
        np.testing.assert_allclose(after[r][:, :-1], before[r], rtol=1e-6)
    assert np.isfinite(after["revenue"][:, -1]).all()
    assert not np.allclose(after["click"][:, -1], before["click"][:, 2])  # no id terms, another category


def test_ips_weighting_is_a_no_op_under_uniform_logging_and_changes_a_skewed_fit(small):
    split, _ = small
    cfg = {"epochs": 2, **FAST}
    plain = ResponseModel.fit(split.train, split.validation, ResponseModelConfig(**cfg)).net.state_dict()
    ips = ResponseModel.fit(split.train, split.validation, ResponseModelConfig(ips_weighted=True, **cfg)).net.state_dict()
    assert all(torch.allclose(plain[k], ips[k], atol=1e-6) for k in plain)  # 1/pscore is constant

    skewed, _ = generate_log(SyntheticConfig(n_rows=6_000, n_users=600, n_actions=6, logging="softmax", seed=5))
    s = split_log(skewed)
    a = ResponseModel.fit(s.train, s.validation, ResponseModelConfig(**cfg)).predict_log(s.test)["click"]
    b = ResponseModel.fit(s.train, s.validation, ResponseModelConfig(ips_weighted=True, **cfg)).predict_log(s.test)["click"]
    assert np.isfinite(b).all() and not np.allclose(a, b)


def test_ips_needs_propensities(small):
    split, _ = small
    frame = split.train.frame.drop(columns=["propensity"])
    from dataclasses import replace

    no_ps = replace(split.train, frame=frame, columns=replace(split.train.columns, has_propensity=False))
    with pytest.raises(ValueError, match="ips_weighted=True needs logged propensities"):
        ResponseModel.fit(no_ps, None, ResponseModelConfig(ips_weighted=True, epochs=1, **FAST))


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("embedding_dim", 0, "an int >= 1"),
        ("epochs", 2.5, "an int >= 1"),
        ("batch_size", True, "an int >= 1"),
        ("patience", -1, "an int >= 0"),
        ("learning_rate", 0.0, "a finite number > 0"),
        ("l2", -1.0, "a finite number >= 0"),
        ("l2", float("nan"), "a finite number >= 0"),
        ("stop_se", "1", "a finite number >= 0"),
        ("context_clip", 0, "a finite number > 0"),
        ("ips_weighted", 1, "a bool"),
        ("progress", None, "a bool"),
        ("recent_pushes_column", 3, "a column name or None"),
        ("seed", -2, "an int >= 0"),
    ],
)
def test_config_validation_names_field_expected_and_actual(field, value, expected):
    with pytest.raises(ValueError, match=rf"ResponseModelConfig\.{field}: expected {expected}, got {value!r}"):
        ResponseModelConfig(**{field: value})


def test_drives_the_push_simulator(small):
    from pushrl.envs.sim.env_config import PushEnvConfig
    from pushrl.envs.sim.push_env import PushEnv

    split, truth = small
    model = ResponseModel.fit(split.train, split.validation, ResponseModelConfig(epochs=3, **FAST))
    x, _ = model.encode(split.train)
    env = PushEnv(response=model, contexts=x[:100].astype(np.float64), categories=truth.action_category,
                  action_ids=np.asarray(model.catalogue_ids), config=PushEnvConfig(objective="revenue"))
    obs, _ = env.reset(seed=0)
    assert env.dynamics.fatigue_mode == "response"  # the fitted model reacts to recent pushes
    for _ in range(5):
        obs, reward, *_ = env.step(env.action_space.sample())
        assert np.isfinite(reward) and env.observation_space.contains(obs)
