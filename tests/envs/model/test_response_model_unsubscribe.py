"""The response model's unsubscribe head: learned from a 0/1 `unsubscribe` column (context and fatigue dependent),
an outcome and never a reward, saved and loaded with the model, and the simulator's churn."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pushrl.envs.data.catalogue import Catalogue
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.schema import LogSchema
from pushrl.envs.model.response_model import ResponseModel, ResponseModelConfig
from pushrl.envs.sim.push_env import PushEnv

A, B, C = -2.5, 0.5, 0.5  # truth: P(unsubscribe | push, recent r, context x0) = sigmoid(A + B r + C x0)
PROMOS = ("p1", "p2", "p3")
NO_PUSH = "no_push"
SCHEMA = LogSchema(propensity=None, position=None, optional_rewards=(), no_push_action=NO_PUSH)
CONFIG = ResponseModelConfig(progress=False, seed=0)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def shop_log(n_users: int = 2000, days: int = 10, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per active user and day: the shop pushes a promotion or nothing (less often to users with more
    recent pushes), `recent_pushes` = pushes in the 3 days before; a push unsubscribes with the truth's
    probability. The shop keeps sending to the users who unsubscribed (their later rows record unsubscribe = 0),
    as some shops do. Returns (log, x0 per user)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_users, 2))
    history = np.zeros((n_users, days), dtype=bool)
    gone = np.zeros(n_users, dtype=bool)
    frames = []
    for d in range(days):
        recent = history[:, max(0, d - 3):d].sum(axis=1)
        push = (rng.random(n_users) < np.array([0.75, 0.6, 0.5, 0.4])[recent])
        unsub = push & ~gone & (rng.random(n_users) < _sigmoid(A + B * recent + C * x[:, 0]))
        action = np.where(push, np.array(PROMOS)[rng.integers(0, 3, n_users)], NO_PUSH)
        stamp = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(d * 86400 + rng.integers(0, 86000, n_users), "s")
        frames.append(pd.DataFrame({
            "user_id": [f"u{u}" for u in range(n_users)], "timestamp": stamp,
            "x0": x[:, 0], "x1": x[:, 1], "recent_pushes": recent, "action": action,
            "click": (push & (rng.random(n_users) < 0.1)).astype(int), "unsubscribe": unsub.astype(int)}))
        history[:, d] = push
        gone |= unsub
    return pd.concat(frames, ignore_index=True), x[:, 0]


def _catalogue() -> Catalogue:
    return Catalogue.from_frame(pd.DataFrame({"action": [*PROMOS, NO_PUSH], "discount": [0.1, 0.2, 0.3, 0.0]}),
                                id_column="action")


@pytest.fixture(scope="module")
def fitted() -> tuple[LoggedData, ResponseModel, np.ndarray]:
    frame, x0 = shop_log()
    data = LoggedData.from_frame(frame, SCHEMA, _catalogue())
    order = np.random.default_rng(1).permutation(data.n_rounds)
    cut = int(0.8 * len(order))
    model = ResponseModel.fit(data.subset(order[:cut]), data.subset(order[cut:]), CONFIG)
    return data, model, x0


def _pool(model: ResponseModel, data: LoggedData) -> np.ndarray:
    """Every user's encoded context, once."""
    first = data.frame.drop_duplicates("user_id")
    return model.encoder.transform(first[list(model.encoder.input_fields)])


def test_recovers_the_unsubscribe_probability_by_recent_pushes(fitted) -> None:
    data, model, x0 = fitted
    assert data.n_rounds >= 20_000 and model.has_unsubscribe
    pushed = data.action != data.catalogue.index_of([NO_PUSH])[0]
    observed = data.unsubscribe_observed
    # the log keeps sending after unsubscribes: counting those rows would bias the rate down by far more than 15%
    naive = data.unsubscribe[pushed].mean()
    assert naive < 0.75 * data.unsubscribe[pushed & observed].mean()  # the rate on the rows the head learns from
    ctx = _pool(model, data)
    promos = data.catalogue.index_of(list(PROMOS))
    for r in range(3):
        truth = _sigmoid(A + B * r + C * x0).mean()  # over the same users
        learned = model.predict_unsubscribe(ctx, np.full(len(ctx), r), np.zeros(len(ctx), int))[:, promos].mean()
        assert learned == pytest.approx(truth, rel=0.15), f"r = {r}: learned {learned:.4f}, truth {truth:.4f}"
    # context dependent: the users the truth says churn more are predicted to churn more
    q = model.predict_unsubscribe(ctx, np.ones(len(ctx)), np.zeros(len(ctx), int))[:, promos].mean(axis=1)
    assert np.corrcoef(q, x0)[0, 1] > 0.9


def test_an_outcome_not_a_reward(fitted) -> None:
    data, model, _ = fitted
    assert data.reward_names == ("click",) and "unsubscribe" not in data.feature_names
    assert model.reward_names == ("click",) and set(model.predict(*data_inputs(model, data))) == {"click"}
    none = data.catalogue.index_of([NO_PUSH])[0]
    assert model.unsubscribe_zeros == [none]  # nothing sent, nobody unsubscribed: exactly 0
    q = model.predict_unsubscribe(*data_inputs(model, data))
    assert q.shape == (50, 4) and (q[:, none] == 0).all() and (q[:, :none] > 0).all()
    rows = model.predict_unsubscribe_rows(*data_inputs(model, data), data.action[:50])
    np.testing.assert_allclose(rows, q[np.arange(50), data.action[:50]], rtol=1e-6)
    np.testing.assert_allclose(model.predict_unsubscribe_log(data.subset(np.arange(50))), rows, rtol=1e-6)


def data_inputs(model: ResponseModel, data: LoggedData, n: int = 50):
    x, h = model.encode(data.subset(np.arange(n)))
    return x, h, np.zeros(n, dtype=int)


def test_calibrated_in_the_large_on_the_observed_rows(fitted) -> None:
    """The offset solves its score equation on the rows the head learned from (observed, not a structural zero)."""
    data, model, _ = fitted
    order = np.random.default_rng(1).permutation(data.n_rounds)
    train = data.subset(order[: int(0.8 * len(order))])
    rows = train.unsubscribe_observed & ~np.isin(train.action, model.unsubscribe_zeros)
    p = model.predict_unsubscribe_log(train)
    assert p[rows].mean() == pytest.approx(train.unsubscribe[rows].mean(), rel=1e-4)
    assert p[rows].mean() > 1.25 * train.unsubscribe[~np.isin(train.action, model.unsubscribe_zeros)].mean()


def test_saved_and_loaded_with_the_model(fitted, tmp_path) -> None:
    data, model, _ = fitted
    model.save(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "schema.json").read_text())
    assert doc["format_version"] == 2 and doc["feature_schema"]["unsubscribe"] == {"structural_zeros": [NO_PUSH]}
    back = ResponseModel.load(tmp_path / "m", model.schema)
    x, h, p = data_inputs(model, data)
    np.testing.assert_array_equal(back.predict_unsubscribe(x, h + 1, p), model.predict_unsubscribe(x, h + 1, p))
    assert back.unsubscribe_zeros == model.unsubscribe_zeros
    # a model without the column: no head, the old format (version 1) and schema, and no unsubscribe answers
    plain = ResponseModel.fit(data.subset(np.arange(3000)), None,
                              ResponseModelConfig(progress=False, epochs=1))
    without = LoggedData.from_frame(shop_log()[0].drop(columns=["unsubscribe"]), SCHEMA, data.catalogue)
    old = ResponseModel.fit(without.subset(np.arange(3000)), None, ResponseModelConfig(progress=False, epochs=1))
    assert plain.has_unsubscribe and not old.has_unsubscribe and "unsubscribe" not in old.schema
    old.save(tmp_path / "old")
    assert json.loads((tmp_path / "old" / "schema.json").read_text())["format_version"] == 1
    assert not ResponseModel.load(tmp_path / "old").has_unsubscribe
    with pytest.raises(ValueError, match="no unsubscribe head"):
        old.predict_unsubscribe(x, h, p)
    with pytest.raises(ValueError, match="feature schema mismatch at key 'unsubscribe"):
        ResponseModel.load(tmp_path / "m", {**model.schema, "unsubscribe": {"structural_zeros": []}})
    # old heads and predictions are those of a model fitted without the column: its reward heads drew the same
    np.testing.assert_array_equal(plain.predict(x, h, p)["click"], old.predict(x, h, p)["click"])


def test_a_new_catalogue_keeps_the_head(fitted) -> None:
    data, model, _ = fitted
    bigger = Catalogue.from_frame(pd.DataFrame({"action": [*PROMOS, NO_PUSH, "p4"], "discount": [0.1, 0.2, 0.3, 0.0, 0.2]}),
                                  id_column="action")
    wide = model.with_catalogue(bigger)
    x, h, p = data_inputs(model, data)
    np.testing.assert_allclose(wide.predict_unsubscribe(x, h, p)[:, :4], model.predict_unsubscribe(x, h, p), rtol=1e-6)
    assert wide.unsubscribe_zeros == model.unsubscribe_zeros and (wide.predict_unsubscribe(x, h, p)[:, 4] > 0).all()


def test_the_simulators_churn_is_the_learned_head(fitted) -> None:
    data, model, _ = fitted
    ctx = _pool(model, data).astype(np.float64)
    env = PushEnv(response=model, contexts=ctx, action_ids=data.catalogue.ids,
                  no_push_action=NO_PUSH, frequency_cap=None)
    dyn = env.dynamics
    assert dyn.dynamics_source["churn"] == "learned"
    recent = np.arange(len(ctx)) % 3
    promos = data.catalogue.index_of(list(PROMOS))
    expected = model.predict_unsubscribe(ctx, recent, np.zeros(len(ctx), int))[:, promos].mean(axis=1)
    np.testing.assert_allclose(dyn.unsubscribe_probability(recent, ctx), expected, rtol=1e-12)
    env.reset(seed=0)
    _, _, terminated, _, info = env.step(0)
    assert info["pushed"] and terminated == info["unsubscribed"]
