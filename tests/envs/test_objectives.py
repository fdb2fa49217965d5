"""Profit objective (money and push costs) and the Qini curve against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.envs.data.hillstrom import load_hillstrom
from pushrl.envs.objectives import make_objective
from pushrl.policies.uplift import qini_curve


def test_profit_on_hillstrom_rows():
    data = load_hillstrom()
    obj = make_objective("profit", data.action_ids, no_push_action="No E-Mail")
    profit = obj.logged(data)
    spend = data.reward("spend")
    email = data.catalogue.ids[data.action] != "No E-Mail"
    np.testing.assert_allclose(profit, 0.30 * spend - 0.10 * email)
    assert obj.cost_vector(data.action_ids).tolist() == [0.0, 0.10, 0.10]


def test_profit_expected_can_prefer_no_push():
    ids = np.array(["No E-Mail", "Mens E-Mail"])
    obj = make_objective("profit", ids, no_push_action="No E-Mail")
    spend = np.array([[1.0, 1.2], [1.0, 1.5]])  # the e-mail adds 0.2 and 0.5 of spend
    best = obj.expected({"spend": spend}, ids).argmax(axis=1)
    assert best.tolist() == [0, 1]  # 0.3*0.2 < 0.10 but 0.3*0.5 > 0.10


@pytest.mark.parametrize("kwargs, fragment", [({"margin": 0.0}, "margin"), ({"costs": {"Kids": 0.1}}, "unknown action ids")])
def test_objective_validation(kwargs, fragment):
    ids = np.array(["No E-Mail", "Mens E-Mail"])
    with pytest.raises(ValueError, match=fragment):
        make_objective("profit", ids, **kwargs).cost_vector(ids)


def _brute_qini(score, treated, outcome):
    """Straight from the definition: one cut after each distinct score, loops."""
    order = sorted(range(len(score)), key=lambda i: -score[i])
    points = [(0, 0.0)]
    for j, i in enumerate(order):
        if j + 1 < len(order) and score[order[j + 1]] == score[i]:
            continue
        top = order[: j + 1]
        nt = sum(treated[k] for k in top)
        nc = len(top) - nt
        yt = sum(outcome[k] for k in top if treated[k])
        yc = sum(outcome[k] for k in top if not treated[k])
        points.append((len(top), yt - yc * (nt / nc if nc else 0.0)))
    return np.array(points)


def test_qini_matches_brute_force_with_ties():
    rng = np.random.default_rng(0)
    n = 300
    score = np.round(rng.normal(size=n), 1)  # many ties
    treated = rng.random(n) < 0.6
    outcome = rng.random(n) < 0.2 + 0.2 * treated * (score > 0)
    curve = qini_curve(score, treated, outcome)
    ref = _brute_qini(score, treated, outcome)
    np.testing.assert_allclose(curve.n_targeted, ref[:, 0])
    np.testing.assert_allclose(curve.gain, ref[:, 1], atol=1e-12)


def test_qini_coefficient_orders_good_random_and_bad_scores():
    rng = np.random.default_rng(1)
    n = 20_000
    true_uplift = rng.uniform(-0.1, 0.3, n)
    treated = rng.random(n) < 0.5
    outcome = rng.random(n) < 0.2 + treated * true_uplift
    good = qini_curve(true_uplift, treated, outcome).coefficient
    rand = qini_curve(rng.random(n), treated, outcome).coefficient
    bad = qini_curve(-true_uplift, treated, outcome).coefficient
    assert good > rand + 0.01 > bad + 0.02
    assert abs(rand) < 0.01
