"""Estimator selection by simulated bias^2, variance and MSE."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.policies.ope import (
    DirectMethod,
    DoublyRobust,
    InverseProbabilityWeighting,
    OPEInputs,
    SelfNormalizedIPS,
    select_estimator,
)

N_ACTIONS = 4
CTR = np.array([0.1, 0.2, 0.3, 0.4])
EVAL = np.array([0.1, 0.1, 0.2, 0.6])


def make_simulate(model_bias: float, n: int = 2000):
    """Uniform logging; the reward model is off by `model_bias` on every action."""

    def simulate(seed: int) -> tuple[OPEInputs, float]:
        rng = np.random.default_rng(seed)
        action = rng.integers(0, N_ACTIONS, n)
        inputs = OPEInputs(
            action_dist=np.broadcast_to(EVAL[None, :, None], (n, N_ACTIONS, 1)),
            reward=(rng.random(n) < CTR[action]).astype(float),
            action=action,
            pscore=np.full(n, 1 / N_ACTIONS),
            estimated_rewards_by_reg_model=np.broadcast_to(
                (CTR + model_bias)[None, :, None], (n, N_ACTIONS, 1)
            ),
        )
        return inputs, float(EVAL @ CTR)

    return simulate


CANDIDATES = {
    "dm": DirectMethod(),
    "ips": InverseProbabilityWeighting(),
    "snips": SelfNormalizedIPS(),
    "dr": DoublyRobust(),
}


def test_table_decomposes_mse_and_recommends_its_minimum() -> None:
    result = select_estimator(make_simulate(0.2), CANDIDATES, seeds=40)
    table = result.table
    assert set(table.index) == set(CANDIDATES)
    assert {"bias", "bias_squared", "variance", "mse"} <= set(table.columns)
    np.testing.assert_allclose(table["mse"], table["bias_squared"] + table["variance"], rtol=1e-10)
    assert result.recommended == table["mse"].idxmin() == table.index[0]
    assert table["mse"].is_monotonic_increasing
    assert (table["n_seeds"] == 40).all()


def test_a_badly_biased_model_rules_out_dm() -> None:
    result = select_estimator(make_simulate(0.2), CANDIDATES, seeds=40)
    assert result.recommended != "dm"
    assert result.table.loc["dm", "bias"] == pytest.approx(
        0.2, abs=1e-9
    )  # DM's bias is exactly the model's
    assert result.table.loc["dm", "variance"] == pytest.approx(0.0, abs=1e-12)


def test_an_exact_model_makes_dm_the_winner() -> None:
    result = select_estimator(make_simulate(0.0), CANDIDATES, seeds=40)
    assert result.recommended == "dm"


def test_default_candidates_are_the_registry_and_seeds_are_reproducible() -> None:
    first = select_estimator(make_simulate(0.05, n=300), seeds=[3, 4, 5, 6])
    again = select_estimator(make_simulate(0.05, n=300), seeds=[3, 4, 5, 6])
    assert set(first.table.index) == {"dm", "ips", "snips", "dr", "sndr", "switch-dr", "dr-os"}
    assert first.table.equals(again.table)


def test_simulate_must_return_ope_inputs() -> None:
    with pytest.raises(ValueError, match=r"must return \(OPEInputs, true_value\)"):
        select_estimator(lambda seed: ({"reward": np.ones(3)}, 0.0), CANDIDATES, seeds=3)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        select_estimator(make_simulate(0.0), CANDIDATES, seeds=1)


def test_selection_study_on_a_shaped_log_recommends_the_lowest_mean_relative_mse() -> None:
    from pushrl.policies.ope.selection import DISTANCES, SelectionResult, selection_study

    res = selection_study(100, 3, 1, CANDIDATES, n_seeds=3, seed=1)  # 100 rows: clipped up to 500
    assert isinstance(res, SelectionResult)
    t = res.table
    assert list(t.columns[:2]) == ["estimator", "distance"] and set(t["distance"]) == set(DISTANCES)
    assert set(t["estimator"]) == set(CANDIDATES) and (t["n_seeds"] == 3).all()
    np.testing.assert_allclose(t["relative_mse"], t["mse"] / t["mean_true_value"] ** 2, rtol=1e-12)
    assert res.recommended == t.groupby("estimator")["relative_mse"].mean().idxmin()
    again = selection_study(100, 3, 1, CANDIDATES, n_seeds=3, seed=1)
    assert again.table.equals(t)
