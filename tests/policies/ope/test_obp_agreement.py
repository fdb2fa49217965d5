"""Our estimators give the Open Bandit Pipeline's numbers on the same inputs (relative 1e-9)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.policies.ope import (
    DirectMethod,
    DoublyRobust,
    DoublyRobustWithShrinkage,
    InverseProbabilityWeighting,
    SelfNormalizedDoublyRobust,
    SelfNormalizedIPS,
    SwitchDoublyRobust,
    cross_fit_mean_rewards,
)

obp_ope = pytest.importorskip("obp.ope")

OBD_CSV = Path(__file__).resolve().parents[3] / "data" / "obd" / "random" / "all" / "all.csv"
RTOL = 1e-9
CLIP = 3.0  # chosen so that some random importance weights exceed it (asserted below)

CASES = {
    "ips": (InverseProbabilityWeighting(), lambda: obp_ope.InverseProbabilityWeighting()),
    "ips-clip": (
        InverseProbabilityWeighting(clip=CLIP),
        lambda: obp_ope.InverseProbabilityWeighting(lambda_=CLIP),
    ),
    "snips": (SelfNormalizedIPS(), lambda: obp_ope.SelfNormalizedInverseProbabilityWeighting()),
    "dm": (DirectMethod(), lambda: obp_ope.DirectMethod()),
    "dr": (DoublyRobust(), lambda: obp_ope.DoublyRobust()),
    "dr-clip": (DoublyRobust(clip=CLIP), lambda: obp_ope.DoublyRobust(lambda_=CLIP)),
    "sndr": (SelfNormalizedDoublyRobust(), lambda: obp_ope.SelfNormalizedDoublyRobust()),
    "switch-dr": (
        SwitchDoublyRobust(threshold=CLIP),
        lambda: obp_ope.SwitchDoublyRobust(lambda_=CLIP),
    ),
    "switch-dr-inf": (SwitchDoublyRobust(), lambda: obp_ope.SwitchDoublyRobust()),
    "dr-os-0": (
        DoublyRobustWithShrinkage(lambda_=0.0),
        lambda: obp_ope.DoublyRobustWithShrinkage(lambda_=0.0),
    ),
    "dr-os-1": (
        DoublyRobustWithShrinkage(lambda_=1.0),
        lambda: obp_ope.DoublyRobustWithShrinkage(lambda_=1.0),
    ),
    "dr-os-50": (
        DoublyRobustWithShrinkage(lambda_=50.0),
        lambda: obp_ope.DoublyRobustWithShrinkage(lambda_=50.0),
    ),
    "dr-os-inf": (
        DoublyRobustWithShrinkage(lambda_=np.inf),
        lambda: obp_ope.DoublyRobustWithShrinkage(lambda_=np.inf),
    ),
}


def random_inputs(
    seed: int, n: int = 600, n_actions: int = 7, len_list: int = 3
) -> dict[str, np.ndarray]:
    """Logging and evaluation policies that differ per (row, position); continuous rewards."""
    rng = np.random.default_rng(seed)
    logging = rng.dirichlet(np.ones(n_actions), size=(n, len_list)).transpose(0, 2, 1)
    evaluation = rng.dirichlet(np.full(n_actions, 0.5), size=(n, len_list)).transpose(0, 2, 1)
    position = rng.integers(0, len_list, n)
    cdf = np.cumsum(logging[np.arange(n), :, position], axis=1)
    action = np.minimum((rng.random((n, 1)) > cdf).sum(axis=1), n_actions - 1)
    return {
        "reward": rng.normal(1.0, 1.0, n),
        "action": action,
        "pscore": logging[np.arange(n), action, position],
        "position": position,
        "action_dist": evaluation,
        "estimated_rewards_by_reg_model": rng.normal(1.0, 0.5, (n, n_actions, len_list)),
    }


def assert_agree(name: str, inputs: dict[str, np.ndarray]) -> None:
    ours, make_theirs = CASES[name]
    theirs = make_theirs()
    np.testing.assert_allclose(
        ours.estimate_policy_value(**inputs),
        theirs.estimate_policy_value(**inputs),
        rtol=RTOL,
        atol=0,
    )
    np.testing.assert_allclose(
        ours.estimate_round_rewards(**inputs),
        theirs._estimate_round_rewards(**inputs),
        rtol=RTOL,
        atol=1e-12,
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", sorted(CASES))
def test_random_multi_position_inputs(name: str, seed: int) -> None:
    inputs = random_inputs(seed)
    weights = (
        inputs["action_dist"][np.arange(600), inputs["action"], inputs["position"]]
        / inputs["pscore"]
    )
    assert (weights > CLIP).any() and (weights <= CLIP).any(), (
        "clipping / switching must be exercised"
    )
    assert_agree(name, inputs)


@pytest.fixture(scope="module")
def obd() -> dict[str, np.ndarray]:
    frame = pd.read_csv(OBD_CSV, index_col=0).sort_values("timestamp", kind="stable")
    n_actions, len_list = 80, 3
    reward = frame["click"].to_numpy(dtype=float)
    action = frame["item_id"].to_numpy()
    position = frame["position"].to_numpy() - 1
    assert action.max() < n_actions and set(np.unique(position)) == {0, 1, 2}
    q_hat = cross_fit_mean_rewards(reward, action, position, n_actions, len_list, n_folds=3, seed=0)
    return {
        "reward": reward,
        "action": action,
        "pscore": frame["propensity_score"].to_numpy(dtype=float),
        "position": position,
        "estimated_rewards_by_reg_model": q_hat,
    }


def obd_policy(kind: str, n: int) -> np.ndarray:
    if kind == "uniform":
        return np.full((n, 80, 3), 1.0 / 80)
    rng = np.random.default_rng(2024)
    return rng.dirichlet(np.ones(80), size=(n, 3)).transpose(0, 2, 1)


@pytest.mark.parametrize("policy", ["uniform", "dirichlet"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_open_bandit_dataset_sample(obd: dict[str, np.ndarray], name: str, policy: str) -> None:
    inputs = {**obd, "action_dist": obd_policy(policy, len(obd["reward"]))}
    assert_agree(name, inputs)
