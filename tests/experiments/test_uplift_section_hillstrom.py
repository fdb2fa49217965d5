"""The uplift section on the real Hillstrom sample (the campaign is a preset of the generic path:
its data config declares the no-push action): files, sections, metrics, and OPE numbers checked
against reference values computed independently from the raw CSV."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from pushrl.envs.data.hillstrom import ACTIONS, load_hillstrom
from pushrl.envs.data.paths import data_root
from pushrl.envs.data.split import split_log, stratified_split_indices
from pushrl.experiments.config import register_configs
from pushrl.experiments.formatting import fmt
from pushrl.experiments.outputs import RunFolder
from pushrl.experiments.pipeline import dataset_run, run_stages
from pushrl.experiments.run_context import LoadedLog
from pushrl.experiments.uplift_section import uplift_section

KEY = "hillstrom"
OBJECTIVES = ("visit", "conversion", "spend", "profit")
FILES = ("uplift_ope.csv", "uplift_qini.csv", "uplift_fidelity.csv", "qini.png", "uplift_fidelity.png")
NO_EMAIL = "No E-Mail"


def _cfg(*overrides: str):
    GlobalHydra.instance().clear()
    register_configs()
    try:
        with initialize_config_module(config_module="pushrl.configs", version_base="1.3"):
            return compose("config", overrides=["data=hillstrom", "also=[]", "progress=false", *overrides])
    finally:
        GlobalHydra.instance().clear()


def _run_section(cfg, data, root):
    """What `run_dataset` does before the section: response model, agents, the test feature matrix."""
    split = split_log(data, tuple(cfg.split.fractions), seed=cfg.split.seed)
    run = RunFolder(root)
    # the pipeline's own stages up to the agents: the same objective, model, features and agents as `pushrl run`
    ctx = run_stages(dataset_run(cfg, LoadedLog(data, None, split), cfg.data.default_objective, run, KEY, lambda _m: None),
                     ["fit", "train"])
    model, objective, agents, f_test = ctx.model, ctx.objective, ctx.agents, ctx.f_test
    messages: list[str] = []
    start = time.perf_counter()
    headline = uplift_section(cfg, data=data, split=split, model=model, objective=objective,
                              no_push_action=cfg.data.no_push_action, policies={n: a.policy for n, a in agents.items()},
                              features_test=f_test, key=KEY, run=run, seed=cfg.seed, say=messages.append)
    return {"run": run, "headline": headline, "split": split, "seconds": time.perf_counter() - start,
            "agents": list(agents), "messages": messages}


def _test_rows(raw: pd.DataFrame) -> np.ndarray:
    """The documented split's test rows (no timestamps: stratified by action, seed 0)."""
    codes = raw["segment"].map({a: i for i, a in enumerate(ACTIONS)}).to_numpy()
    return stratified_split_indices(codes, (0.7, 0.15, 0.15), seed=0)[2]


def _outcomes(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    spend = frame["spend"].to_numpy(dtype=np.float64)
    email = (frame["segment"] != "No E-Mail").to_numpy()
    return {"visit": frame["visit"].to_numpy(dtype=np.float64), "conversion": frame["conversion"].to_numpy(dtype=np.float64),
            "spend": spend, "profit": 0.30 * spend - 0.10 * email}


def _check_always_x(ope: pd.DataFrame, test_frame: pd.DataFrame) -> None:
    """IPS of always X = mean outcome of group X × (its share × 3); SNIPS = the group mean, to 1e-12."""
    y = _outcomes(test_frame)
    seg = test_frame["segment"].to_numpy()
    for o in OBJECTIVES:
        rows = ope[ope["objective"] == o]
        for a in ACTIONS:
            group = seg == a
            mean = y[o][group].mean()
            share = group.mean()
            got = rows[rows["policy"] == f"always {a}"].set_index("estimator")["value"]
            np.testing.assert_allclose(got["ips"], mean * share * 3, rtol=1e-12, atol=1e-15, err_msg=f"{o} {a}")
            np.testing.assert_allclose(got["snips"], mean, rtol=1e-12, atol=1e-15, err_msg=f"{o} {a}")
        np.testing.assert_allclose(rows["logging_value"], y[o].mean(), rtol=1e-12)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The section on the whole real sample with the default run config (about 10-25 s here)."""
    return _run_section(_cfg(), load_hillstrom(), tmp_path_factory.mktemp("hillstrom_full"))


def test_section_writes_its_files_sections_and_metrics(full):
    run, h = full["run"], full["headline"]
    for name in FILES:
        assert (run.root / KEY / name).stat().st_size > 0, name
    titles = [t for t, _ in run.sections]
    for fragment in ("uplift quality bar", "OPE, every policy x every objective", "uplift over sending nothing (Qini)",
                     "simulator fidelity"):
        assert any(fragment in t for t in titles), (fragment, titles)
    assert set(h) >= {"ope", "qini", "fidelity", "quality_bar", "seconds", "best_learned", "logging_value"}
    assert run.metrics[f"{KEY}/uplift/quality_bar/conversion/met"] == h["quality_bar"]["conversion"]["met"]
    assert h["seconds"]["total"] < 90, h["seconds"]
    assert full["messages"] and "done" in full["messages"][-1]


def test_ope_table_covers_every_policy_and_objective(full):
    ope = pd.read_csv(full["run"].root / KEY / "uplift_ope.csv")
    policies = set(full["agents"]) | {"t_learner", "uplift_pays"} | {f"always {a}" for a in ACTIONS}
    assert set(ope["policy"]) == policies
    assert set(ope["objective"]) == set(OBJECTIVES) and set(ope["estimator"]) == {"ips", "snips", "dr", "sndr"}
    assert len(ope) == len(policies) * 4 * 4
    assert (ope["ci_low"] <= ope["ci_high"]).all()
    shares = ope[[f"share_{a}" for a in ACTIONS]].to_numpy()
    np.testing.assert_allclose(shares.sum(axis=1), 1.0)
    # the best always-push is always Mens E-Mail on every objective: the e-mail group with the highest mean
    # outcome on the test rows (SNIPS of always X is the group mean), from the raw CSV
    raw = pd.read_csv(data_root() / "hillstrom" / "hillstrom.csv")
    test_frame = raw.iloc[_test_rows(raw)]
    y = _outcomes(test_frame)
    for o in OBJECTIVES:
        best = max(("Mens E-Mail", "Womens E-Mail"), key=lambda a, o=o: y[o][(test_frame["segment"] == a).to_numpy()].mean())
        assert (ope[ope["objective"] == o]["best_always_push"] == f"always {best}").all()
        assert full["headline"]["best_always_push"][o] == f"always {best}"
    mens = ope[ope["policy"] == "always Mens E-Mail"]
    np.testing.assert_allclose(mens["lift_vs_best_always_push"], 0.0, atol=1e-15)
    none = ope[ope["policy"] == f"always {NO_EMAIL}"]
    np.testing.assert_allclose(none["lift_vs_no_push"], 0.0, atol=1e-15)
    # the uplift baselines are deterministic: their shares are counts of whole customers
    n_test = full["split"].test.n_rounds
    uplift = ope[ope["policy"].isin(["t_learner", "uplift_pays"])]
    np.testing.assert_allclose(shares[uplift.index] * n_test, np.round(shares[uplift.index] * n_test), atol=1e-6)


def test_always_x_matches_reference_from_the_raw_csv(full):
    """Reference numbers from the raw file and the documented split, without LoggedData."""
    raw = pd.read_csv(data_root() / "hillstrom" / "hillstrom.csv")
    test_frame = raw.iloc[_test_rows(raw)]
    assert len(test_frame) == full["split"].test.n_rounds
    _check_always_x(pd.read_csv(full["run"].root / KEY / "uplift_ope.csv"), test_frame)
    # the cross-fitted fidelity table's IPS of always X over all 44,800 rows: group mean × share × 3
    fid = pd.read_csv(full["run"].root / KEY / "uplift_fidelity.csv")
    y, seg = _outcomes(raw), raw["segment"].to_numpy()
    for o in OBJECTIVES:
        for a in ACTIONS:
            row = fid[(fid["objective"] == o) & (fid["policy"] == f"always {a}") & (fid["scope"] == "pooled")]
            np.testing.assert_allclose(row["ips"].item(), y[o][seg == a].mean() * (seg == a).mean() * 3, rtol=1e-12)


def test_quality_bar_numbers_are_the_tables_numbers(full):
    ope = pd.read_csv(full["run"].root / KEY / "uplift_ope.csv")
    bar = full["headline"]["quality_bar"]
    ips = ope[ope["estimator"] == "ips"].set_index(["objective", "policy"])
    c, p = bar["conversion"], bar["profit"]
    learned = [n for n in set(ope["policy"]) if not n.startswith("always ") and n not in ("uniform", "most_popular", "logging")]
    assert c["best"] == max(learned, key=lambda n: ips.loc[("conversion", n), "value"])
    assert c["ips"] == pytest.approx(ips.loc[("conversion", c["best"]), "value"], rel=1e-12)
    assert c["ci_low_above_logging"] == (c["ci_low"] > c["logging"])
    assert c["best_always_push_action"] == p["best_always_push_action"] == "always Mens E-Mail"
    assert c["at_least_best_always_push"] == (c["ips"] >= ips.loc[("conversion", "always Mens E-Mail"), "value"])
    assert p["no_push"] == ips.loc[("profit", f"always {NO_EMAIL}"), "value"]
    assert p["met"] == (p["ips"] > p["best_always_push"] and p["ips"] > p["no_push"])
    assert p["default_costs"] and p["margin"] == pytest.approx(0.30) and p["push_cost"] == pytest.approx(0.10)
    assert p["money"] == "spend" and c["cross_fitted"]["rows"] == 44_800
    report = "\n".join(md for _, md in full["run"].sections)
    assert fmt(c["ips"]) in report and fmt(p["best_always_push"]) in report


def test_fidelity_and_qini_tables(full):
    fid = pd.read_csv(full["run"].root / KEY / "uplift_fidelity.csv")
    pooled = fid[fid["scope"] == "pooled"]
    assert len(pooled) == 4 * 4  # three always-X + the best learned policy, four objectives
    assert pooled["policy"].str.startswith("best learned").sum() == 4
    folds = fid[fid["scope"] != "pooled"]
    assert folds.groupby(["objective", "policy"]).size().eq(5).all()
    assert folds[(folds["objective"] == "visit") & (folds["policy"] == "always Mens E-Mail")]["rows"].sum() == 44_800
    assert ((pooled["ci_low"] <= pooled["ips"]) & (pooled["ips"] <= pooled["ci_high"])).all()
    qini = pd.read_csv(full["run"].root / KEY / "uplift_qini.csv")
    for r in ("visit", "conversion", "spend"):
        scores = set(qini[qini["reward"] == r]["score"])
        assert any(s.startswith("t_learner") for s in scores) and any(s.startswith("uplift_pays") for s in scores)
    assert np.isfinite(qini[["coefficient", "ci_low", "ci_high"]].to_numpy()).all()


def test_section_on_a_subsample(tmp_path):
    """The fast variant: a fifth of the sample, fewer bootstrap resamples and online rounds."""
    data = load_hillstrom()
    data = data.subset(np.arange(0, data.n_rounds, 5), name="hillstrom")
    cfg = _cfg("eval.n_bootstrap=50", "train.online_rounds=2000", "agents=baselines", "+agents.linucb={alpha: 0.5}")
    out = _run_section(cfg, data, tmp_path)
    for name in FILES:
        assert (out["run"].root / KEY / name).exists(), name
    test_frame = out["split"].test.frame.rename(columns={"action": "segment"})
    _check_always_x(pd.read_csv(out["run"].root / KEY / "uplift_ope.csv"), test_frame)
    assert out["headline"]["quality_bar"]["conversion"]["cross_fitted"]["rows"] == data.n_rounds


def test_profit_objective_run(tmp_path):
    """With the pipeline's objective = profit (the hillstrom_profit preset), agents are trained for profit."""
    data = load_hillstrom()
    data = data.subset(np.arange(0, data.n_rounds, 5), name="hillstrom")
    cfg = _cfg("objective=profit", "eval.n_bootstrap=50", "train.online_rounds=2000", "agents=baselines",
               "+agents.epsilon_greedy={epsilon: 0.1}")
    out = _run_section(cfg, data, tmp_path)
    fid = pd.read_csv(out["run"].root / KEY / "uplift_fidelity.csv")
    best = fid[fid["policy"].str.startswith("best learned")]["policy"].iloc[0]
    assert "(for profit)" in best
    assert out["headline"]["best_learned"]["profit"] in {"epsilon_greedy", "t_learner", "uplift_pays"}
