"""Support diagnostics: ESS, max weight, low-support mass, and warnings."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.policies.ope import support_diagnostics

N_ACTIONS, LEN_LIST = 10, 2


def log(n: int, seed: int, sharpness: float) -> dict[str, np.ndarray]:
    """Softmax logging (so some propensities are small) and a random evaluation policy."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, N_ACTIONS, LEN_LIST)) * sharpness
    logging = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    evaluation = rng.dirichlet(np.ones(N_ACTIONS), size=(n, LEN_LIST)).transpose(0, 2, 1)
    position = rng.integers(0, LEN_LIST, n)
    probs = logging[np.arange(n), :, position]
    action = np.minimum((rng.random((n, 1)) > np.cumsum(probs, axis=1)).sum(axis=1), N_ACTIONS - 1)
    return {
        "action_dist": evaluation,
        "action": action,
        "pscore": probs[np.arange(n), action],
        "position": position,
        "logging_action_dist": logging,
    }


def test_ess_and_max_weight_match_the_brute_force_formula() -> None:
    data = log(300, seed=0, sharpness=1.0)
    diag = support_diagnostics(**data)
    weights = [
        data["action_dist"][i, data["action"][i], data["position"][i]] / data["pscore"][i]
        for i in range(300)
    ]
    total, squares = 0.0, 0.0
    for w in weights:
        total += w
        squares += w * w
    assert diag.effective_sample_size == pytest.approx(total * total / squares, rel=1e-12)
    assert diag.ess_fraction == pytest.approx(total * total / squares / 300, rel=1e-12)
    assert diag.max_weight == max(weights)


def test_exact_and_estimated_low_support_mass_agree_on_a_large_sample() -> None:
    data = log(200_000, seed=1, sharpness=1.5)
    exact = support_diagnostics(**data, tau=0.05)
    del data["logging_action_dist"]
    estimated = support_diagnostics(**data, tau=0.05)
    assert exact.low_support_mass_is_exact and not estimated.low_support_mass_is_exact
    assert 0.05 < exact.low_support_mass < 0.95  # a non-trivial share
    # the estimate is a mean of per-row terms w_i 1[pscore_i < tau]: agree within 4 standard errors
    n = data["action"].size
    weight = data["action_dist"][np.arange(n), data["action"], data["position"]] / data["pscore"]
    terms = np.where(data["pscore"] < 0.05, weight, 0.0)
    standard_error = terms.std(ddof=1) / np.sqrt(n)
    assert standard_error < 0.01
    assert abs(estimated.low_support_mass - exact.low_support_mass) < 4 * standard_error
    assert estimated.low_support_mass == pytest.approx(terms.mean(), rel=1e-12)
    assert estimated.effective_sample_size == exact.effective_sample_size


def test_matching_policies_have_full_support_and_no_warnings() -> None:
    data = log(2000, seed=2, sharpness=0.3)
    data["action_dist"] = data["logging_action_dist"]
    diag = support_diagnostics(**data, tau=0.01)
    assert diag.effective_sample_size == pytest.approx(2000)
    assert diag.max_weight == pytest.approx(1.0)
    assert diag.warnings == []


def test_poor_support_is_reported_in_words() -> None:
    rng = np.random.default_rng(3)
    n = 5000
    logging = np.full((n, N_ACTIONS, 1), 0.005)
    logging[:, 0, 0] = 1 - 0.005 * (N_ACTIONS - 1)  # the logger nearly always plays action 0
    evaluation = np.zeros((n, N_ACTIONS, 1))
    evaluation[:, 9, 0] = 1.0  # the new policy always plays action 9
    action = np.where(rng.random(n) < logging[0, 0, 0], 0, rng.integers(1, N_ACTIONS, n))
    diag = support_diagnostics(
        action_dist=evaluation,
        action=action,
        pscore=logging[np.arange(n), action, 0],
        logging_action_dist=logging,
        tau=0.01,
    )
    assert diag.low_support_mass == pytest.approx(1.0)
    assert diag.ess_fraction < 0.05
    assert len(diag.warnings) == 2
    assert any("effective sample size" in w for w in diag.warnings)
    assert any("100.0% of the evaluation policy's probability (exact)" in w for w in diag.warnings)


@pytest.mark.parametrize("field", ["tau", "min_ess_fraction", "max_low_support_mass"])
def test_thresholds_are_checked(field: str) -> None:
    data = log(10, seed=4, sharpness=1.0)
    with pytest.raises(ValueError, match=field):
        support_diagnostics(**data, **{field: -0.5})


def test_validated_inputs_give_the_same_diagnostics_without_a_second_check() -> None:
    from pushrl.policies.ope import OPEInputs

    data = log(300, seed=3, sharpness=1.0)
    arrays = {k: data[k] for k in ("action_dist", "action", "pscore", "position")}
    a = support_diagnostics(**arrays, tau=0.05)
    b = support_diagnostics(inputs=OPEInputs(**arrays), tau=0.05)
    assert (a.effective_sample_size, a.max_weight, a.low_support_mass) == (
        b.effective_sample_size, b.max_weight, b.low_support_mass)
    with pytest.raises(ValueError, match="either inputs or the arrays"):
        support_diagnostics(inputs=OPEInputs(**arrays), action=data["action"])
