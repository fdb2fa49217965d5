"""Every bad OPE input is refused with a message naming the array and the first bad index."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest

from pushrl.policies.ope import ESTIMATORS, OPEInputs, support_diagnostics

N, A, L = 12, 4, 3


def valid() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "action_dist": rng.dirichlet(np.ones(A), size=(N, L)).transpose(0, 2, 1).copy(),
        "reward": rng.random(N),
        "action": rng.integers(0, A, N),
        "pscore": np.full(N, 1.0 / A),
        "position": rng.integers(0, L, N),
        "estimated_rewards_by_reg_model": rng.random((N, A, L)),
    }


def mutate(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[dict], dict]:
    def apply(inputs: dict) -> dict:
        inputs[name] = fn(inputs[name].copy())
        return inputs

    return apply


def setitem(index, value):
    def fn(array):
        array[index] = value
        return array

    return fn


def unnormalise(array):
    array[5, :, 2] *= 0.9
    return array


def negative(array):
    array[3, 1, 0] = -0.2
    array[3, 2, 0] += 0.2
    return array


def nan_prob(array):
    array[7, 0, 1] = np.nan
    return array


def shift_position(array):
    array[4] = L
    return array


def fewer_actions(array):
    return array[:, :-1, :]


BAD_INPUTS = {
    "rows not summing to 1": (
        mutate("action_dist", unnormalise),
        r"action_dist\[5, :, 2\] sums to 0\.9",
    ),
    "negative probability": (
        mutate("action_dist", negative),
        r"action_dist\[3, 1, 0\] = -0\.2 is negative",
    ),
    "NaN probability": (mutate("action_dist", nan_prob), r"action_dist\[7, 0, 1\] = nan is not finite"),
    "action_dist 2-D": (mutate("action_dist", lambda a: a[:, :, 0]), r"action_dist must be 3-D"),
    "reward too short": (
        mutate("reward", lambda a: a[:-1]),
        r"reward has shape \(11,\), expected \(12,\)",
    ),
    "action too long": (
        mutate("action", lambda a: np.append(a, 0)),
        r"action has shape \(13,\), expected \(12,\)",
    ),
    "pscore 2-D": (
        mutate("pscore", lambda a: a[:, None]),
        r"pscore has shape \(12, 1\), expected \(12,\)",
    ),
    "position wrong length": (mutate("position", lambda a: a[:5]), r"position has shape \(5,\)"),
    "q_hat wrong rows": (
        mutate("estimated_rewards_by_reg_model", lambda a: a[:-2]),
        r"estimated_rewards_by_reg_model has shape \(10, 4, 3\), expected \(12, 4, 3\)",
    ),
    "q_hat wrong positions": (
        mutate("estimated_rewards_by_reg_model", lambda a: a[:, :, :2]),
        r"estimated_rewards_by_reg_model has shape \(12, 4, 2\)",
    ),
    "q_hat NaN": (
        mutate("estimated_rewards_by_reg_model", setitem((2, 3, 1), np.nan)),
        r"estimated_rewards_by_reg_model\[2, 3, 1\] is nan",
    ),
    "policy with fewer actions than the log": (
        mutate(
            "action_dist", lambda a: fewer_actions(a) / fewer_actions(a).sum(axis=1, keepdims=True)
        ),
        r"estimated_rewards_by_reg_model covers 4 actions but action_dist covers 3",
    ),
    "position out of range": (
        mutate("position", shift_position),
        r"position\[4\] = 3 is outside \[0, len_list=3\)",
    ),
    "negative position": (
        mutate("position", setitem(6, -1)),
        r"position\[6\] = -1 is outside \[0, len_list=3\)",
    ),
    "float position": (
        mutate("position", lambda a: a.astype(float)),
        r"position must have an integer dtype",
    ),
    "action out of range": (
        mutate("action", setitem(9, A)),
        r"action\[9\] = 4 is outside \[0, n_actions=4\)",
    ),
    "negative action": (
        mutate("action", setitem(0, -3)),
        r"action\[0\] = -3 is outside \[0, n_actions=4\)",
    ),
    "float action": (mutate("action", lambda a: a + 0.5), r"action must have an integer dtype"),
    "pscore zero": (mutate("pscore", setitem(8, 0.0)), r"pscore\[8\] = 0\.0 is outside \(0, 1\]"),
    "pscore negative": (
        mutate("pscore", setitem(1, -0.5)),
        r"pscore\[1\] = -0\.5 is outside \(0, 1\]",
    ),
    "pscore above one": (
        mutate("pscore", setitem(10, 1.5)),
        r"pscore\[10\] = 1\.5 is outside \(0, 1\]",
    ),
    "pscore NaN": (mutate("pscore", setitem(2, np.nan)), r"pscore\[2\] = nan is outside \(0, 1\]"),
    "pscore inf": (mutate("pscore", setitem(3, np.inf)), r"pscore\[3\] = inf is outside \(0, 1\]"),
    "reward NaN": (mutate("reward", setitem(11, np.nan)), r"reward\[11\] is nan"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_refused_with_its_name_and_index(case: str) -> None:
    make_bad, message = BAD_INPUTS[case]
    with pytest.raises(ValueError, match=message):
        OPEInputs(**make_bad(valid()))


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_every_estimator_runs_the_same_check(name: str) -> None:
    bad = mutate("pscore", setitem(8, 0.0))(valid())
    with pytest.raises(ValueError, match=re.escape("pscore[8] = 0.0")):
        ESTIMATORS[name]().estimate_policy_value(**bad)


def test_first_offending_index_is_reported() -> None:
    inputs = valid()
    inputs["action"][[3, 7]] = A + 1
    with pytest.raises(ValueError, match=r"action\[3\]"):
        OPEInputs(**inputs)


def test_log_action_count_must_match_the_policy() -> None:
    with pytest.raises(ValueError, match=r"action_dist scores 4 actions .* n_actions=5"):
        OPEInputs(**valid(), n_actions=5)
    assert OPEInputs(**valid(), n_actions=A).n_actions == A


def test_position_required_with_several_positions_only() -> None:
    inputs = valid()
    del inputs["position"]
    with pytest.raises(ValueError, match=r"position is required: action_dist has len_list=3"):
        OPEInputs(**inputs)
    single = {k: (v[:, :, :1] if v.ndim == 3 else v) for k, v in inputs.items()}
    single["action_dist"] = single["action_dist"] / single["action_dist"].sum(axis=1, keepdims=True)
    assert OPEInputs(**single).position.tolist() == [0] * N


def test_tolerance_is_one_in_a_million() -> None:
    inputs = valid()
    inputs["action_dist"][0, 0, 0] += 5e-7
    OPEInputs(**inputs)  # within tolerance
    inputs["action_dist"][0, 0, 0] += 1e-5
    with pytest.raises(ValueError, match=r"action_dist\[0, :, 0\] sums to"):
        OPEInputs(**inputs)


def test_missing_arrays_are_named() -> None:
    inputs = valid()
    del inputs["estimated_rewards_by_reg_model"]
    with pytest.raises(ValueError, match=r"DoublyRobust needs estimated_rewards_by_reg_model"):
        ESTIMATORS["dr"]().estimate_policy_value(**inputs)
    del inputs["pscore"]
    with pytest.raises(ValueError, match=r"InverseProbabilityWeighting needs pscore"):
        ESTIMATORS["ips"]().estimate_policy_value(**inputs)


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        ("ips", "clip", -1.0),
        ("ips", "clip", 0.0),
        ("dr", "clip", float("nan")),
        ("switch-dr", "threshold", -0.1),
        ("switch-dr", "threshold", None),
        ("dr-os", "lambda_", -2.0),
        ("dr-os", "lambda_", True),
    ],
)
def test_hyperparameters_are_checked(cls: str, field: str, value: object) -> None:
    with pytest.raises(
        ValueError,
        match=rf"{ESTIMATORS[cls].__name__}\.{field} must be .*got {re.escape(repr(value))}",
    ):
        ESTIMATORS[cls](**{field: value})


def test_logging_action_dist_is_checked_like_action_dist() -> None:
    inputs = valid()
    logging = unnormalise(inputs["action_dist"].copy())
    with pytest.raises(ValueError, match=r"logging_action_dist\[5, :, 2\] sums to"):
        support_diagnostics(
            action_dist=inputs["action_dist"],
            action=inputs["action"],
            pscore=inputs["pscore"],
            position=inputs["position"],
            logging_action_dist=logging,
        )
