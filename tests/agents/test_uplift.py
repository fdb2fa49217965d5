"""Uplift baselines (T-learner, "uplift pays"): decision rule, determinism, re-encoding, and a
scikit-learn T-learner as an independent reference on the real Hillstrom sample."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from pushrl.agents.uplift import (
    OutcomeModel,
    PooledOutcomes,
    TLearner,
    TLearnerPolicy,
    UpliftPaysPolicy,
    reencode,
)
from pushrl.envs.data.features import ContextEncoder
from pushrl.envs.data.hillstrom import ACTIONS, CATEGORICAL, NUMERIC, load_hillstrom
from pushrl.envs.data.split import split_log
from pushrl.envs.model.response_model import ResponseModel, ResponseModelConfig
from pushrl.envs.objectives import make_objective
from pushrl.policies.evaluation import evaluate_policy
from pushrl.policies.policy import Policy, to_action_dist

IDS = np.array(ACTIONS)  # "No E-Mail", "Mens E-Mail", "Womens E-Mail"
OBJECTIVES = ("visit", "conversion", "spend", "profit")
CONFIG = ResponseModelConfig(progress=False, seed=0)


def _objective(name: str):
    return make_objective(name, IDS, no_push_action="No E-Mail")


def _features(x: np.ndarray) -> np.ndarray:
    return np.hstack([x.astype(np.float64), np.ones((len(x), 1))])


@pytest.fixture(scope="module")
def fitted():
    torch.set_num_threads(1)
    data = load_hillstrom()
    split = split_log(data, (0.7, 0.15, 0.15), seed=0)
    model = ResponseModel.fit(split.train, split.validation, CONFIG)
    t_learner = TLearner.fit(split.train, split.validation, CONFIG)
    x_test, _ = model.encode(split.test)
    return {"data": data, "split": split, "model": model, "t": t_learner, "f_test": _features(x_test)}


class _Stub:
    """An OutcomeModel with fixed predictions, for exact decision-rule checks."""

    reward_names = ("visit", "conversion", "spend")
    n_actions = 3

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table

    def predict_encoded(self, contexts, encoder):
        return {r: np.asarray(v, dtype=np.float64)[: len(contexts)] for r, v in self.table.items()}


def _stub_encoder() -> ContextEncoder:
    return ContextEncoder(("a",), (0.0,), (1.0,), (), {})


def test_stub_is_an_outcome_model_and_policies_are_policies(fitted):
    assert isinstance(_Stub({}), OutcomeModel)
    assert isinstance(PooledOutcomes(fitted["model"]), OutcomeModel) and isinstance(fitted["t"], OutcomeModel)
    pol = TLearnerPolicy(fitted["t"], fitted["model"].encoder, _objective("conversion"))
    assert isinstance(pol, Policy) and pol.n_features == fitted["f_test"].shape[1]


def test_uplift_pays_rule_profit_and_conversion():
    # columns: No, Mens, Womens. Row 0: Δspend 0.2 (0.3 x 0.2 = 0.06 < 0.10: no e-mail); row 1: Δspend
    # 0.5 for Mens (0.15 > 0.10: Mens); row 2: Womens has the larger uplift.
    spend = np.array([[1.0, 1.2, 1.1], [1.0, 1.5, 1.2], [1.0, 1.5, 1.9]])
    conv = np.array([[0.01, 0.009, 0.008], [0.01, 0.011, 0.010], [0.01, 0.01, 0.012]])
    stub = _Stub({"visit": conv * 10, "conversion": conv, "spend": spend})
    x = np.zeros((3, 1))
    profit = UpliftPaysPolicy(stub, _stub_encoder(), _objective("profit"), IDS, "No E-Mail", intercept=False)
    np.testing.assert_array_equal(profit.action_probabilities(x), [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    np.testing.assert_allclose(profit.gains(x)[:, 1], 0.3 * (spend[:, 1] - 1.0) - 0.10)
    conversion = UpliftPaysPolicy(stub, _stub_encoder(), _objective("conversion"), IDS, "No E-Mail", intercept=False)
    # conversion: any positive uplift pays (row 0: both e-mails lower -> none)
    np.testing.assert_array_equal(conversion.action_probabilities(x), [[1, 0, 0], [0, 1, 0], [0, 0, 1]])
    np.testing.assert_allclose(conversion.uplift_score(x, "conversion", "No E-Mail"), [-0.001, 0.001, 0.002], atol=1e-15)


def test_uplift_pays_on_a_weighted_objective_is_greedy_on_its_expected_value():
    """gain = Σ_r w_r Δ_r − extra cost; the decision is the argmax of the objective's expected value."""
    rng = np.random.default_rng(3)
    conv = rng.uniform(0.0, 0.05, (200, 3))
    spend = rng.uniform(0.0, 2.0, (200, 3))
    stub = _Stub({"visit": conv, "conversion": conv, "spend": spend})
    obj = make_objective("weighted", IDS, push_cost=0.04, no_push_action="No E-Mail",
                         weights={"conversion": 1.0, "spend": 0.05})
    x = np.zeros((200, 1))
    pol = UpliftPaysPolicy(stub, _stub_encoder(), obj, IDS, "No E-Mail", intercept=False)
    gains = 1.0 * (conv - conv[:, [0]]) + 0.05 * (spend - spend[:, [0]]) - np.array([0.0, 0.04, 0.04])
    np.testing.assert_allclose(pol.gains(x), gains, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(pol.action_probabilities(x).argmax(axis=1), obj.expected(stub.table, IDS).argmax(axis=1))
    conversion_only = _Stub({"conversion": conv})
    conversion_only.reward_names = ("conversion",)
    with pytest.raises(ValueError, match=r"needs predicted \['spend'\]"):
        UpliftPaysPolicy(conversion_only, _stub_encoder(), obj, IDS, "No E-Mail", intercept=False)


def test_ties_split_evenly():
    spend = np.array([[1.0, 1.5, 1.5], [1.0, 1.0, 1.0]])
    stub = _Stub({"visit": spend, "conversion": spend, "spend": spend})
    x = np.zeros((2, 1))
    pol = UpliftPaysPolicy(stub, _stub_encoder(), _objective("spend"), IDS, "No E-Mail", intercept=False)
    np.testing.assert_allclose(pol.action_probabilities(x), [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_probabilities_are_0_1_rows_summing_to_1(fitted, objective):
    enc, f = fitted["model"].encoder, fitted["f_test"]
    for pol in (TLearnerPolicy(fitted["t"], enc, _objective(objective)),
                UpliftPaysPolicy(fitted["model"], enc, _objective(objective), IDS, "No E-Mail")):
        p = pol.action_probabilities(f)
        assert p.shape == (len(f), 3)
        assert np.isin(p, (0.0, 1.0)).all()  # deterministic: no ties on real contexts
        np.testing.assert_array_equal(p.sum(axis=1), 1.0)
        np.testing.assert_array_equal(p, pol.action_probabilities(f))  # same answer every call
        actions, props = pol.act(f[:50], np.random.default_rng(0))
        np.testing.assert_array_equal(props, 1.0)
        np.testing.assert_array_equal(actions, p[:50].argmax(axis=1))


def test_uplift_pays_equals_greedy_on_the_same_model(fitted):
    model, f = fitted["model"], fitted["f_test"]
    x = f[:, :-1]
    for name in OBJECTIVES:
        obj = _objective(name)
        pred = model.predict(x, np.zeros(len(x)), np.zeros(len(x), dtype=np.int64))
        greedy = obj.expected(pred, IDS).argmax(axis=1)
        p = UpliftPaysPolicy(model, model.encoder, obj, IDS, "No E-Mail").action_probabilities(f)
        np.testing.assert_array_equal(p.argmax(axis=1), greedy)


def test_t_learner_models_see_only_their_own_action(fitted):
    """Changing the Womens rows' outcomes leaves the No and Mens models' predictions unchanged."""
    split = fitted["split"]
    sub = split.train.subset(np.arange(6000))
    base = TLearner.fit(sub, None, replace(CONFIG, epochs=3))
    frame = sub.frame.copy()
    womens = sub.action == list(IDS).index("Womens E-Mail")
    frame.loc[womens, ["visit", "conversion", "spend"]] = 0.0
    changed = TLearner.fit(replace(sub, frame=frame), None, replace(CONFIG, epochs=3))
    x, _ = fitted["model"].encode(split.test)
    a = base.predict_encoded(x, fitted["model"].encoder)
    b = changed.predict_encoded(x, fitted["model"].encoder)
    for r in ("visit", "conversion", "spend"):
        np.testing.assert_array_equal(a[r][:, :2], b[r][:, :2])
        assert not np.allclose(a[r][:, 2], b[r][:, 2])


def test_reencode_matches_the_target_encoder(fitted):
    split, model = fitted["split"], fitted["model"]
    frame = split.test.frame
    for target in (m.encoder for m in fitted["t"].models):
        np.testing.assert_allclose(reencode(model.encoder.transform(frame), model.encoder, target),
                                   target.transform(frame), atol=1e-12)
    # a category the target never saw lands in its unknown bucket
    small = ContextEncoder.fit(frame[frame["channel"] != "Phone"], list(NUMERIC), list(CATEGORICAL))
    np.testing.assert_allclose(reencode(model.encoder.transform(frame), model.encoder, small),
                               small.transform(frame), atol=1e-12)


def test_input_checks(fitted):
    enc, f = fitted["model"].encoder, fitted["f_test"]
    pol = TLearnerPolicy(fitted["t"], enc, _objective("conversion"))
    with pytest.raises(ValueError, match="features per row"):
        pol.action_probabilities(f[:, :-1])
    bad = f[:5].copy()
    bad[2, -1] = 0.5
    with pytest.raises(ValueError, match="intercept column"):
        pol.action_probabilities(bad)
    with pytest.raises(ValueError, match="no_push_action"):
        UpliftPaysPolicy(fitted["model"], enc, _objective("profit"), IDS, "Kids E-Mail")
    with pytest.raises(ValueError, match="no training rows"):
        TLearner.fit(fitted["split"].train.subset(np.flatnonzero(fitted["split"].train.action != 2)), None, CONFIG)


def test_sklearn_t_learner_lands_in_our_ci(fitted):
    """An independent T-learner (per-action logistic regressions on the same encoded raw features)
    picks a conversion policy whose IPS value on the test split is inside our T-learner's 95% CI."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    split, model = fitted["split"], fitted["model"]
    encoder = ContextEncoder.fit(split.train.frame, list(NUMERIC), list(CATEGORICAL))
    x_train, x_test = encoder.transform(split.train.frame), encoder.transform(split.test.frame)
    y = split.train.reward("conversion")
    pred = np.column_stack([
        sklearn.LogisticRegression(C=1.0, max_iter=2000).fit(x_train[split.train.action == a], y[split.train.action == a])
        .predict_proba(x_test)[:, 1] for a in range(3)])
    ref = np.zeros_like(pred)
    ref[np.arange(len(pred)), pred.argmax(axis=1)] = 1.0
    ours = TLearnerPolicy(fitted["t"], model.encoder, _objective("conversion")).action_probabilities(fitted["f_test"])

    def ips(p):
        test = split.test
        return evaluate_policy(policy="p", data="hillstrom", split="test", action_dist=to_action_dist(p, 1),
                               reward=test.reward("conversion"), action=test.action, pscore=test.pscore,
                               position=test.position, estimated_rewards=np.zeros((test.n_rounds, 3, 1)),
                               n_bootstrap=200, seed=0).estimates["ips"]

    mine, theirs = ips(ours), ips(ref)
    print(f"ours IPS {mine}, sklearn T-learner IPS {theirs.value:.5f}")
    assert mine.ci_low <= theirs.value <= mine.ci_high, (mine, theirs.value)
    # both mostly send the Mens e-mail (the best arm on average), neither sends nothing to most customers
    shares = pd.DataFrame({"ours": ours.mean(axis=0), "sklearn": ref.mean(axis=0)}, index=IDS)
    assert shares.loc["Mens E-Mail"].min() > 0.4 and shares.loc["No E-Mail"].max() < 0.2, shares
