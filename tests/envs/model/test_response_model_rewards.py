"""Rewards as the user declares them: independent heads by default, a chain only where declared, any
objective (a reward, profit on any money reward, a weighted combination)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pushrl.envs.data.catalogue import Catalogue
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.schema import LogSchema
from pushrl.envs.model.response_model import ResponseModel, ResponseModelConfig
from pushrl.envs.objectives import make_objective


def _organic_log(n: int = 6000, seed: int = 0) -> LoggedData:
    """Two promotions and a no-push arm; purchases happen without a click (organic)."""
    rng = np.random.default_rng(seed)
    action = rng.integers(0, 3, size=n)
    p_click = np.array([0.10, 0.20, 0.0])[action]
    click = (rng.random(n) < p_click).astype(float)
    organic = rng.random(n) < 0.03
    conversion = ((click > 0) & (rng.random(n) < 0.3) | organic).astype(float)
    frame = pd.DataFrame({"action": np.array(["a", "b", "none"])[action], "propensity": 1 / 3, "opened": click,
                          "bought": conversion, "basket": conversion * rng.uniform(10, 50, size=n),
                          "age": rng.normal(size=n)})
    cat = Catalogue.from_frame(pd.DataFrame({"action": ["a", "b", "none"], "channel": ["email", "push", "none"]}),
                               id_column="action")
    schema = LogSchema(rewards=("opened", "bought", "basket"), optional_rewards=(), timestamp=None, user_id=None,
                       position=None)
    return LoggedData.from_frame(frame, schema=schema, catalogue=cat, name="organic")


def _fit(data: LoggedData, chain=()) -> ResponseModel:
    cfg = ResponseModelConfig(epochs=2, progress=False, reward_chain=tuple(chain), recent_pushes_column=None)
    return ResponseModel.fit(data, None, cfg)


def test_organic_purchases_fit_as_independent_heads():
    data = _organic_log()
    model = _fit(data)
    assert [(r, prev) for r, prev, _ in model.chain] == [("opened", None), ("bought", None), ("basket", None)]
    pred = model.predict_log(data)
    # each head is calibrated in the large on its own rows (the offset's score equation), so the mean
    # prediction equals the mean outcome, organic purchases on the no-push arm included
    for r in ("opened", "bought", "basket"):
        assert pred[r].mean() == pytest.approx(data.reward(r).mean(), rel=1e-3)
    none = data.action == 2
    assert pred["bought"][none].mean() > 0.01  # no push, still purchases: not forced to zero by a chain


def test_declared_chain_multiplies_and_refuses_stray_rewards():
    data = _organic_log()
    with pytest.raises(ValueError, match=r"data.reward_chain: reward 'bought' is nonzero where 'opened' is zero at rows \["):
        _fit(data, ("opened", "bought"))
    nested = _organic_log()
    nested.frame["bought"] = nested.frame["bought"] * nested.frame["opened"]
    nested.frame["basket"] = nested.frame["basket"] * nested.frame["opened"]
    model = _fit(nested, ("opened", "bought", "basket"))
    assert [(r, prev) for r, prev, _ in model.chain] == [("opened", None), ("bought", "opened"), ("basket", "bought")]
    cond = model.predict_log(nested, conditional=True)
    joint = model.predict_log(nested)
    np.testing.assert_allclose(joint["bought"], cond["opened"] * cond["bought"], rtol=1e-5)
    np.testing.assert_allclose(joint["basket"], cond["opened"] * cond["bought"] * cond["basket"], rtol=1e-5)


@pytest.mark.parametrize("chain, fragment", [
    (("opened", "clicked"), r"names \['clicked'\], which are not declared rewards"),
    (("opened", "opened"), "repeats a reward"),
    (("basket", "bought"), "'basket' is continuous"),
])
def test_bad_chains_are_refused_by_name(chain, fragment):
    with pytest.raises(ValueError, match=fragment):
        _fit(_organic_log(600), chain)


def test_negative_reward_refused_naming_rows():
    data = _organic_log(600)
    data.frame.loc[[3, 7], "basket"] = -1.0
    with pytest.raises(ValueError, match=r"reward 'basket' has negative or non-finite values at rows \[3, 7\]"):
        _fit(data)


def test_weighted_and_profit_objectives_against_brute_force():
    data = _organic_log(500)
    ids = data.action_ids
    weighted = make_objective("weighted", ids, push_cost=0.05, no_push_action="none",
                              weights={"bought": 2.0, "basket": 0.01})
    profit = make_objective("profit", ids, margin=0.3, push_cost=0.1, no_push_action="none", money="basket")
    f = data.frame
    for i in range(0, 500, 37):  # row by row, from the definitions
        cost = 0.0 if f.action[i] == "none" else 1.0
        assert weighted.logged(data)[i] == pytest.approx(2.0 * f.bought[i] + 0.01 * f.basket[i] - 0.05 * cost)
        assert profit.logged(data)[i] == pytest.approx(0.3 * f.basket[i] - 0.1 * cost)
    pred = {"bought": np.array([[0.1, 0.2, 0.05]]), "basket": np.array([[3.0, 6.0, 1.0]])}
    np.testing.assert_allclose(weighted.expected(pred, ids), [[0.2 + 0.03 - 0.05, 0.4 + 0.06 - 0.05, 0.1 + 0.01]])
    assert weighted.rewards == ("bought", "basket") and not weighted.is_plain
    assert make_objective("bought", ids).is_plain
    with pytest.raises(ValueError, match="needs objective.weights"):
        make_objective("weighted", ids)


def test_objective_describes_itself():
    ids = np.array(["a", "b", "none"])
    assert make_objective("bought", ids).describe() == "bought"
    profit = make_objective("profit", ids, margin=0.3, push_cost=0.1, no_push_action="none", money="basket")
    assert profit.describe() == "0.3 x basket - 0.1 per push (free: none)"
    weighted = make_objective("weighted", ids, push_cost=0.0, weights={"bought": 1.0, "basket": 0.01})
    assert weighted.describe() == "1 x bought + 0.01 x basket"


def test_an_impossible_outcome_is_predicted_zero_and_survives_save_and_load(tmp_path):
    """The no-push arm never gets an open (no message was sent): with ~2,000 rows at a 10% open rate elsewhere,
    zero events cannot be chance, so the model predicts exactly 0 there; rare outcomes are left alone."""
    data = _organic_log()
    model = _fit(data)
    none = int(np.flatnonzero(data.action_ids == "none")[0])
    assert model.structural_zeros == {"opened": [none]}  # "bought" happens organically on that arm
    x, h = model.encode(data)
    pred = model.predict(x, h, data.position)
    assert (pred["opened"][:, none] == 0).all() and (pred["opened"][:, :none] > 0).all()
    rows = model.predict_rows(x, h, data.position, np.full(data.n_rounds, none))
    assert (rows["opened"] == 0).all() and (rows["bought"] > 0).all()
    model.save(tmp_path / "m")
    again = ResponseModel.load(tmp_path / "m")
    assert again.structural_zeros == model.structural_zeros
    np.testing.assert_allclose(again.predict(x, h, data.position)["opened"], pred["opened"], rtol=1e-6)
    rare = _organic_log(300)  # ~100 rows per arm x 10%: 10 expected opens < 20, not enough to call it impossible
    assert _fit(rare).structural_zeros == {}
