"""Honest intervals for model-based values: bootstrap refits, the interval formula, coverage on known truth."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from pushrl.envs.common.probabilities import softmax
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.split import split_log
from pushrl.envs.data.synthetic import SCHEMA, SyntheticConfig, generate_log
from pushrl.envs.model.model_uncertainty import BootstrapRefits, fit_refits, resample_rows
from pushrl.envs.model.response_model import ResponseModel, ResponseModelConfig
from pushrl.policies.evaluation import EstimatorSettings, evaluate_policy
from pushrl.policies.ope import ESTIMATORS, Interval
from pushrl.policies.ope.model_interval import (
    held_out_correction,
    model_based_interval,
    model_value_interval,
    with_model_variance,
)
from pushrl.policies.ope.selection import selection_study
from pushrl.policies.policy import to_action_dist

Z95 = stats.norm.ppf(0.975)


# ---------------------------------------------------------------- the interval formula
def test_zero_model_spread_keeps_the_sampling_interval() -> None:
    sampling = Interval(0.3, 0.25, 0.37)
    out = with_model_variance(sampling, np.full(5, 0.31))
    assert (out.value, out.ci_low, out.ci_high) == pytest.approx((0.3, 0.25, 0.37))


def test_model_only_limit_is_the_t_interval_of_the_refits() -> None:
    """No sampling noise: value +- t_{K-1} sd(refits), the textbook interval (nu = K - 1)."""
    refits = np.array([0.10, 0.13, 0.12, 0.16])
    out = with_model_variance(Interval(0.12, 0.12, 0.12), refits)
    half = stats.t.ppf(0.975, 3) * refits.std(ddof=1)
    assert (out.ci_low, out.ci_high) == pytest.approx((0.12 - half, 0.12 + half))


def test_many_refits_limit_adds_variances() -> None:
    """K -> infinity: nu -> infinity, half-width z sqrt(s_sampling^2 + s_model^2)."""
    refits = np.random.default_rng(0).normal(0.0, 0.02, size=200_000)
    sd = refits.std(ddof=1)
    out = with_model_variance(Interval(0.5, 0.5 - Z95 * 0.01, 0.5 + Z95 * 0.03), refits)
    assert out.ci_low == pytest.approx(0.5 - Z95 * math.hypot(0.01, sd), rel=1e-4)
    assert out.ci_high == pytest.approx(0.5 + Z95 * math.hypot(0.03, sd), rel=1e-4)


@pytest.mark.parametrize("sampling_sd", [0.0, 1.0])
def test_variance_interval_covers_at_its_level_with_few_refits(sampling_sd: float) -> None:
    """Monte Carlo: value = truth + sampling + model noise, K = 4 refits spread like the model noise."""
    rng = np.random.default_rng(1)
    reps, k, hits = 4000, 4, 0
    for _ in range(reps):
        value = rng.normal(0, sampling_sd) + rng.normal(0, 1.0)
        refits = value + rng.normal(0, 1.0, size=k)
        half = Z95 * sampling_sd
        out = with_model_variance(Interval(value, value - half, value + half), refits)
        hits += out.ci_low <= 0.0 <= out.ci_high
    se = math.sqrt(0.95 * 0.05 / reps)
    assert abs(hits / reps - 0.95) < 3.5 * se  # the normal quantile instead of t would give ~0.87 at sampling_sd 0


def test_hull_spans_the_model_and_the_corrected_interval() -> None:
    model, dr = Interval(0.20, 0.19, 0.21), Interval(0.15, 0.11, 0.18)
    out = model_based_interval(model, np.array([0.2, 0.2, 0.2]), corrected=dr)
    assert (out.value, out.ci_low, out.ci_high) == pytest.approx((0.20, 0.11, 0.21))


def test_refit_values_are_checked() -> None:
    with pytest.raises(ValueError, match=r"K >= 2 refits, got shape \(1,\)"):
        with_model_variance(Interval(0.1, 0.0, 0.2), np.array([0.1]))
    with pytest.raises(ValueError, match="refit 1 has a non-finite value"):
        with_model_variance(Interval(0.1, 0.0, 0.2), np.array([0.1, np.nan]))


def _bandit_arrays(n: int = 400, a: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    logging_p = softmax(rng.normal(size=(n, a)))
    action = np.array([rng.choice(a, p=p) for p in logging_p])
    q_hat = rng.uniform(0.05, 0.4, size=(n, a))
    return {"pi": softmax(rng.normal(size=(n, a)) * 2), "action": action,
            "pscore": logging_p[np.arange(n), action], "reward": rng.binomial(1, 0.2, size=n).astype(float),
            "q_hat": q_hat}


def test_held_out_correction_plus_model_value_is_the_dr_estimate() -> None:
    """Cross-check against the DR estimator (itself checked against the Open Bandit Pipeline)."""
    d = _bandit_arrays()
    c = held_out_correction(d["pi"], d["reward"], d["action"], d["pscore"], d["q_hat"][np.arange(400), d["action"]])
    dr = ESTIMATORS["dr"]().estimate_policy_value(
        action_dist=to_action_dist(d["pi"], 1), reward=d["reward"], action=d["action"], pscore=d["pscore"],
        estimated_rewards_by_reg_model=to_action_dist(d["q_hat"], 1))
    assert float(np.mean(np.sum(d["pi"] * d["q_hat"], axis=1) + c)) == pytest.approx(dr, rel=1e-12)


def test_held_out_correction_refuses_bad_rows() -> None:
    d = _bandit_arrays(n=10)
    q_log = d["q_hat"][np.arange(10), d["action"]]
    with pytest.raises(ValueError, match=r"reward must be \(n,\) = \(10,\)"):
        held_out_correction(d["pi"], d["reward"][:5], d["action"], d["pscore"], q_log)
    with pytest.raises(ValueError, match="pscore must be in"):
        held_out_correction(d["pi"], d["reward"], d["action"], np.zeros(10), q_log)


def test_model_value_interval_without_correction_is_the_variance_part() -> None:
    rows = np.random.default_rng(3).uniform(0, 1, size=500)
    refit_rows = rows[None] + np.array([[-0.01], [0.0], [0.02]])
    out = model_value_interval(rows, refit_rows)
    half = Z95 * rows.std(ddof=1) / math.sqrt(500)
    expected = with_model_variance(Interval(rows.mean(), rows.mean() - half, rows.mean() + half), refit_rows.mean(1))
    assert (out.ci_low, out.ci_high) == pytest.approx((expected.ci_low, expected.ci_high))


# ------------------------------------------------------------------ evaluate_policy
def _evaluate(d: dict[str, np.ndarray], refits: np.ndarray | None, identified: bool = True):
    return evaluate_policy(policy="p", data="toy", split="test", action_dist=to_action_dist(d["pi"], 1),
                           reward=d["reward"], action=d["action"], pscore=d["pscore"],
                           position=np.zeros(len(d["action"]), dtype=int),
                           estimated_rewards=to_action_dist(d["q_hat"], 1), estimated_rewards_refits=refits,
                           n_bootstrap=100, identified=identified)


def test_evaluate_policy_with_identical_refits_widens_only_dm_to_the_dr_hull() -> None:
    d = _bandit_arrays()
    base = _evaluate(d, None)
    same = np.stack([to_action_dist(d["q_hat"], 1)] * 3)
    out = _evaluate(d, same)
    for k in ("ips", "snips", "dr", "sndr", "switch-dr", "dr-os"):
        assert out.estimates[k] == base.estimates[k]
    dm, dr = base.estimates["dm"], base.estimates["dr"]
    assert out.estimates["dm"].value == dm.value
    assert out.estimates["dm"].ci_low == pytest.approx(min(dm.ci_low, dr.ci_low))
    assert out.estimates["dm"].ci_high == pytest.approx(max(dm.ci_high, dr.ci_high))
    assert any("bootstrap refits" in note for note in out.notes)


def test_evaluate_policy_refit_spread_widens_model_based_estimators() -> None:
    d = _bandit_arrays()
    base = _evaluate(d, None)
    shifts = np.array([-0.03, 0.0, 0.03])[:, None, None, None]
    out = _evaluate(d, np.clip(to_action_dist(d["q_hat"], 1)[None] + shifts, 0, 1))
    assert out.estimates["snips"] == base.estimates["snips"]  # no model in it
    assert out.estimates["dm"].width > base.estimates["dm"].width + 0.03
    assert out.estimates["dr"].width > base.estimates["dr"].width


def test_evaluate_policy_unidentified_notes_model_only() -> None:
    out = _evaluate(_bandit_arrays(), np.stack([to_action_dist(_bandit_arrays()["q_hat"], 1)] * 2), identified=False)
    assert list(out.estimates) == ["dm"]
    assert any("model-only" in note for note in out.notes)


def test_evaluate_policy_refuses_refits_of_the_wrong_shape() -> None:
    d = _bandit_arrays()
    with pytest.raises(ValueError, match=r"estimated_rewards_refits must be \(K >= 2, n, A, L\) = \(K, 400, 4, 1\)"):
        _evaluate(d, to_action_dist(d["q_hat"], 1)[None])


# --------------------------------------------------------------- bootstrap refits
def _small_log(n_rows: int = 3000, logging: str = "softmax", seed: int = 0):
    data, truth = generate_log(SyntheticConfig(n_rows=n_rows, n_users=n_rows // 10, logging=logging, seed=seed))
    return split_log(data, (0.7, 0.15, 0.15), seed=0), truth


def test_user_resample_keeps_each_users_rows_together() -> None:
    split, _ = _small_log()
    rng = np.random.default_rng(0)
    rows_t, rows_v, unit = resample_rows(split.train, split.validation, rng)
    assert unit == "user"
    users_t, users_v = split.train.user_id, split.validation.user_id
    picked = pd.Series(users_t[rows_t]).value_counts()
    own = pd.Series(users_t).value_counts()
    times = (picked / own.reindex(picked.index)).to_numpy()
    assert np.allclose(times, np.round(times))  # every row of a drawn user, the same number of times
    mult = dict(zip(picked.index, np.round(times).astype(int), strict=True))
    v_counts = pd.Series(users_v[rows_v]).value_counts()
    train_users = set(users_t.tolist())
    for u, c in v_counts.items():  # validation rows follow the same draw
        assert u in mult or u not in train_users
        if u in mult:
            assert c == mult[u] * int((users_v == u).sum())


def test_row_resample_without_user_ids() -> None:
    split, _ = _small_log()
    no_users = LoggedData.from_frame(split.train.frame.drop(columns=["user_id", "action_index"]), schema=SCHEMA,
                                     catalogue=split.train.catalogue, name="no_users")
    rows_t, rows_v, unit = resample_rows(no_users, None, np.random.default_rng(1))
    assert unit == "row" and rows_v is None and len(rows_t) == no_users.n_rounds
    assert len(np.unique(rows_t)) < 0.7 * no_users.n_rounds  # ~63% distinct rows in a bootstrap resample


def test_fit_refits_is_seeded_and_differs_between_refits() -> None:
    split, _ = _small_log()
    cfg = ResponseModelConfig(epochs=3, progress=False)
    a = fit_refits(split.train, split.validation, cfg, n_refits=2, seed=5)
    b = fit_refits(split.train, split.validation, cfg, n_refits=2, seed=5)
    pa, pb = a.predict(split.test), b.predict(split.test)
    assert np.array_equal(pa[0]["click"], pb[0]["click"])
    assert not np.allclose(pa[0]["click"], pa[1]["click"])
    assert pa[0]["click"].shape == (split.test.n_rounds, split.test.n_actions)
    logged = a.predict_log(split.test)[1]["click"]
    assert np.allclose(logged, pa[1]["click"][np.arange(split.test.n_rounds), split.test.action], atol=1e-6)


def test_fit_refits_refuses_too_few() -> None:
    split, _ = _small_log(n_rows=600)
    with pytest.raises(ValueError, match="eval.model_refits: expected an int >= 2"):
        fit_refits(split.train, split.validation, ResponseModelConfig(progress=False), n_refits=1)


# ------------------------------------------------------- coverage on known ground truth
@dataclass
class Shop:
    split: object
    truth: object
    model: ResponseModel
    refits: BootstrapRefits


def fit_shop(logging: str, seed: int, n_rows: int, n_refits: int) -> Shop:
    torch.set_num_threads(1)
    split, truth = _small_log(n_rows, logging, seed)
    cfg = ResponseModelConfig(progress=False, seed=seed)
    model = ResponseModel.fit(split.train, split.validation, cfg)
    return Shop(split, truth, model, fit_refits(split.train, split.validation, cfg, n_refits, seed=seed))


def shop_policies(shop: Shop, seed: int) -> dict[str, np.ndarray]:
    """(n, A) probabilities of >= 10 policies on the test rows: always-a, uniform, logging, softmax ones."""
    test = shop.split.test
    n, a = test.n_rounds, test.n_actions
    x, seg, recent, pos = shop.truth.row_inputs(test)
    rng = np.random.default_rng(seed)
    pols = {f"always_{k}": np.eye(a)[np.full(n, k)] for k in range(a)}
    pols["uniform"] = np.full((n, a), 1.0 / a)
    pols["logging"] = shop.truth.logging_probabilities(x, seg, recent, pos)
    for j in range(3):
        pols[f"softmax_random_{j}"] = np.repeat(softmax(rng.normal(size=(1, a)) * 2.0), n, axis=0)
    q = shop.truth.expected_rewards(x, seg, recent, pos)
    for j, temperature in enumerate((0.05, 0.2)):
        pols[f"softmax_truth_{j}"] = softmax(q / (temperature * q.std()))
    return pols


def shop_coverage(shop: Shop, reward: str, seed: int, recommended: str) -> pd.DataFrame:
    """One row per policy: truth and DM, simulator, recommended-estimator intervals, and whether each covers."""
    test = shop.split.test
    n = test.n_rounds
    x, h = shop.model.encode(test)
    q_hat = shop.model.predict(x, h, test.position)[reward]
    q_refits = np.stack([p[reward] for p in shop.refits.predict(test)])
    r, act, ps = test.reward(reward), test.action, test.pscore
    xt, seg, recent, pos = shop.truth.row_inputs(test)
    q_true = shop.truth.expected_all(xt, seg, recent, pos, (reward,))[reward]
    out = []
    for name, pi in shop_policies(shop, seed).items():
        truth = float(np.mean(np.sum(pi * q_true, axis=1)))
        e = evaluate_policy(policy=name, data="shop", split="test", action_dist=to_action_dist(pi, 1), reward=r,
                            action=act, pscore=ps, position=test.position, estimated_rewards=to_action_dist(q_hat, 1),
                            estimated_rewards_refits=q_refits[..., None], recommended=recommended, n_bootstrap=200,
                            seed=seed)
        sim = model_value_interval(
            np.sum(pi * q_hat, axis=1), np.sum(pi[None] * q_refits, axis=2),
            correction_rows=held_out_correction(pi, r, act, ps, q_hat[np.arange(n), act]),
            refit_correction_rows=np.stack([held_out_correction(pi, r, act, ps, q[np.arange(n), act]) for q in q_refits]))
        row = {"policy": name, "truth": truth}
        for key, iv in (("dm", e.estimates["dm"]), ("simulator", sim), ("recommended", e.estimates[recommended])):
            row |= {f"{key}_value": iv.value, f"{key}_low": iv.ci_low, f"{key}_high": iv.ci_high,
                    f"{key}_covers": iv.ci_low <= truth <= iv.ci_high}
        out.append(row)
    return pd.DataFrame(out)


def recommended_for(shop: Shop) -> str:
    """What `pushrl run` recommends (eval.recommended=auto) for a test split shaped like this one."""
    test = shop.split.test
    return selection_study(test.n_rounds, test.n_actions, test.n_positions, EstimatorSettings().build(),
                           n_seeds=10).recommended


def coverage_tables(logging_regimes: tuple[str, ...], seeds: range, n_refits: int) -> pd.DataFrame:
    """Coverage rows of every (logging, seed, reward) shop, the recommended estimator chosen as `pushrl run` does."""
    tables = []
    for logging in logging_regimes:
        for seed in seeds:
            shop = fit_shop(logging, seed=seed, n_rows=20_000, n_refits=n_refits)
            rec = recommended_for(shop)
            for reward in ("click", "conversion"):
                tables.append(shop_coverage(shop, reward, seed, rec).assign(logging=logging, seed=seed, reward=reward,
                                                                            recommended=rec))
    return pd.concat(tables, ignore_index=True)


COVERS = ["dm_covers", "simulator_covers", "recommended_covers"]


@pytest.fixture(scope="module")
def coverage() -> pd.DataFrame:
    """Two 20,000-row shops (softmax and uniform logging), K = 4 refits, click and conversion."""
    return coverage_tables(("softmax", "uniform"), range(1), n_refits=4)


def test_dm_and_simulator_intervals_cover_the_truth_on_every_shop(coverage: pd.DataFrame) -> None:
    per_shop = coverage.groupby(["logging", "reward"])
    assert (per_shop.size() >= 10).all()
    rates = per_shop[COVERS].mean()
    assert (rates[["dm_covers", "simulator_covers"]] >= 0.9).all().all(), rates
    assert np.allclose(coverage["dm_value"], coverage["simulator_value"])  # one model value, two intervals


def test_recommended_estimator_interval_covers_the_truth(coverage: pd.DataFrame) -> None:
    """Pooled over the shops: one shop's policies share its test rewards, so their misses come together."""
    assert coverage["recommended_covers"].mean() >= 0.9, coverage.groupby(["logging", "reward"])[COVERS].mean()


@pytest.mark.slow
def test_coverage_over_repeated_shops() -> None:
    """Six shops per logging regime, K = 8: coverage >= 90% per regime and reward for DM and the simulator,
    per regime (both rewards pooled) for the recommended estimator."""
    table = coverage_tables(("softmax", "uniform"), range(1, 7), n_refits=8)
    summary = table.groupby(["logging", "reward"])[COVERS].mean()
    print(f"\ncoverage over {table.seed.nunique()} shops per regime, {len(table)} policy values\n{summary}\n"
          f"recommended: {table.groupby('logging').recommended.agg(lambda r: sorted(set(r)))}\n"
          f"{table.groupby('logging')[COVERS].mean()}")
    assert (summary[["dm_covers", "simulator_covers"]] >= 0.9).all().all(), summary
    assert (table.groupby("logging")["recommended_covers"].mean() >= 0.9).all(), summary
