"""The generic uplift section on synthetic shops from the project's generator with a no-push
action and organic purchases: softmax business-rule logging (values checked against closed forms
computed from the logged rows and their propensities), the same shop logged by a deterministic
rule (IPS not identified: DM only, the IPS comparisons skipped and said), a multi-slot log
(skipped) and bad input (the weighted Qini curve: tests/policies/test_uplift.py)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.split import split_log
from pushrl.envs.data.synthetic import NO_PUSH_ID, SyntheticConfig, generate_log
from pushrl.envs.objectives import find_no_push, make_objective
from pushrl.experiments.config import register_configs
from pushrl.experiments.outputs import RunFolder
from pushrl.experiments.pipeline import dataset_run, run_stages
from pushrl.experiments.run_context import LoadedLog
from pushrl.experiments.uplift_section import (
    analysed_objectives,
    bar_objectives,
    money_reward,
    uplift_section,
)

KEY = "shop"
MARGIN, PUSH_COST = 0.30, 0.10
REPO = Path(__file__).resolve().parents[2]
DATASET_WORDS = re.compile(r"mens|womens|e-mail|hillstrom", re.IGNORECASE)


def compose_cfg(*overrides: str):
    """The run config with `overrides` (no other dataset, quiet)."""
    GlobalHydra.instance().clear()
    register_configs()
    try:
        with initialize_config_module(config_module="pushrl.configs", version_base="1.3"):
            return compose("config", overrides=["also=[]", "progress=false", *overrides])
    finally:
        GlobalHydra.instance().clear()


def _shop_cfg():
    return compose_cfg("data=synthetic", "data.reward_chain=[]", "data.default_objective=conversion",
                       "objective.reward=conversion", "agents=baselines", "+agents.linucb={alpha: 0.5}",
                       "eval.n_bootstrap=30", "train.online_rounds=1000", "model.epochs=8")


def shop(n_rows: int = 4000, logging: str = "business_rule", seed: int = 1):
    """(log, truth): four named actions, the last one sends nothing; organic purchases on every row."""
    return generate_log(SyntheticConfig(n_rows=n_rows, n_users=600, n_actions=4, no_push=True, organic_conversion=0.5,
                                        logging=logging, readable_promotions=True, seed=seed))


def run_section(cfg, data: LoggedData, root: Path, no_push: object, key: str = KEY, **kwargs) -> dict:
    """What `run_dataset` does before the section (response model, agents, test features), then the section."""
    split = split_log(data, tuple(cfg.split.fractions), seed=cfg.split.seed)
    cfg.data.no_push_action = str(no_push)
    run = RunFolder(root)
    # the pipeline's own stages up to the agents: the same objective, model, features and agents as `pushrl run`
    ctx = run_stages(dataset_run(cfg, LoadedLog(data, None, split), cfg.data.default_objective, run, key, lambda _m: None),
                     ["fit", "train"])
    model, objective, agents, f_test = ctx.model, ctx.objective, ctx.agents, ctx.f_test
    messages: list[str] = []
    headline = uplift_section(cfg, data=data, split=split, model=model, objective=objective, no_push_action=no_push,
                              policies={n: a.policy for n, a in agents.items()}, features_test=f_test, key=key,
                              run=run, seed=cfg.seed, say=messages.append, **kwargs)
    return {"run": run, "headline": headline, "split": split, "model": model, "agents": list(agents),
            "messages": messages, "objective": objective}


def _rows(data: LoggedData) -> pd.DataFrame:
    """The rows as plain columns (action ids, propensity, rewards)."""
    return pd.DataFrame({"action": data.action_ids[data.action], "propensity": data.pscore,
                         **{r: data.frame[r].to_numpy(dtype=np.float64) for r in ("click", "conversion", "revenue")}})


def _objective_values(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    pushed = (frame["action"] != NO_PUSH_ID).to_numpy()
    return {"click": frame["click"].to_numpy(), "conversion": frame["conversion"].to_numpy(),
            "revenue": frame["revenue"].to_numpy(), "profit": MARGIN * frame["revenue"].to_numpy() - PUSH_COST * pushed}


@pytest.fixture(scope="module")
def stochastic(tmp_path_factory):
    data, truth = shop()
    out = run_section(_shop_cfg(), data, tmp_path_factory.mktemp("uplift_stochastic"), NO_PUSH_ID,
                      n_folds=3, fidelity_epochs=5)
    return out | {"data": data, "truth": truth}


def test_the_shop_is_non_uniform_with_organic_conversions(stochastic):
    data = stochastic["data"]
    assert data.action_ids.tolist()[-1] == NO_PUSH_ID and data.n_actions == 4
    assert data.pscore.min() < 0.1 and data.pscore.max() > 0.5
    organic = (data.reward("conversion") > 0) & (data.reward("click") == 0)
    assert organic.sum() > 10


def test_files_sections_and_no_dataset_names(stochastic):
    run, h = stochastic["run"], stochastic["headline"]
    for name in ("uplift_ope.csv", "uplift_qini.csv", "uplift_fidelity.csv", "qini.png", "uplift_fidelity.png"):
        assert (run.root / KEY / name).stat().st_size > 0, name
    titles = [t for t, _ in run.sections]
    for fragment in ("quality bar", "uplift over sending nothing: OPE", "uplift over sending nothing (Qini)",
                     "simulator fidelity"):
        assert any(fragment in t for t in titles), (fragment, titles)
    text = "\n".join(t + "\n" + md for t, md in run.sections)
    assert not DATASET_WORDS.search(text), DATASET_WORDS.search(text)
    assert "inverse logged propensity" in text  # the Qini curves are weighted on a non-uniform log
    assert h["identified"] is True and h["no_push_action"] == NO_PUSH_ID
    assert run.metrics[f"{KEY}/uplift/quality_bar/conversion/met"] == h["quality_bar"]["conversion"]["met"]
    assert set(h["quality_bar"]) == {"conversion", "profit"} and h["quality_bar"]["profit"]["money"] == "revenue"
    assert "done" in stochastic["messages"][-1]


def test_ope_uses_the_logged_propensities(stochastic):
    """IPS of always X = mean(y 1[a = X] / p); SNIPS = the same weights self-normalised; logging = mean(y)."""
    ope = pd.read_csv(stochastic["run"].root / KEY / "uplift_ope.csv")
    assert set(ope["objective"]) == {"click", "conversion", "revenue", "profit"}
    frame = _rows(stochastic["split"].test)
    y, p = _objective_values(frame), frame["propensity"].to_numpy()
    for o, values in y.items():
        rows = ope[ope["objective"] == o]
        for a in stochastic["data"].action_ids.tolist():
            w = (frame["action"] == a).to_numpy() / p
            got = rows[rows["policy"] == f"always {a}"].set_index("estimator")["value"]
            np.testing.assert_allclose(got["ips"], np.mean(values * w), rtol=1e-10, err_msg=f"{o} {a}")
            np.testing.assert_allclose(got["snips"], np.sum(values * w) / np.sum(w), rtol=1e-10, err_msg=f"{o} {a}")
        np.testing.assert_allclose(rows["logging_value"], values.mean(), rtol=1e-12)


def test_lifts_over_sending_nothing_and_the_best_always_push(stochastic):
    ope = pd.read_csv(stochastic["run"].root / KEY / "uplift_ope.csv")
    h = stochastic["headline"]
    pushes = stochastic["data"].action_ids.tolist()[:-1]
    for o in ("click", "conversion", "revenue", "profit"):
        snips = ope[(ope["objective"] == o) & (ope["estimator"] == "snips")].set_index("policy")
        best = max(pushes, key=lambda a, s=snips: s.loc[f"always {a}", "value"])
        assert h["best_always_push"][o] == f"always {best}"
        assert (snips["best_always_push"] == f"always {best}").all()
        none = snips.loc[f"always {NO_PUSH_ID}", "value"]  # 0 for click (nothing pushed, nothing clicked): no lift
        want = (snips["value"] - none) / abs(none) if none != 0 else np.full(len(snips), np.nan)
        np.testing.assert_allclose(snips["lift_vs_no_push"], want, rtol=1e-12)
        np.testing.assert_allclose(snips.loc[f"always {best}", "lift_vs_best_always_push"], 0.0, atol=1e-15)
    assert h["ope"]["click"][f"always {NO_PUSH_ID}"]["ips"] == 0.0  # the truth: nothing pushed, nothing clicked
    bar = h["quality_bar"]["profit"]
    assert bar["no_push"] == pytest.approx(h["ope"]["profit"][f"always {NO_PUSH_ID}"]["ips"], rel=1e-12)
    assert bar["beats_no_push"] == (bar["ips"] > bar["no_push"])


def test_cross_fitted_ips_covers_every_row_once(stochastic):
    """The pooled IPS of always X over the whole log: mean(y 1[a = X] / p) over all rows."""
    fid = pd.read_csv(stochastic["run"].root / KEY / "uplift_fidelity.csv")
    frame = _rows(stochastic["data"])
    y, p = _objective_values(frame), frame["propensity"].to_numpy()
    for o, values in y.items():
        for a in stochastic["data"].action_ids.tolist():
            row = fid[(fid["objective"] == o) & (fid["policy"] == f"always {a}") & (fid["scope"] == "pooled")]
            np.testing.assert_allclose(row["ips"].item(), np.mean(values * (frame["action"] == a) / p), rtol=1e-10)
    assert fid[fid["scope"] != "pooled"].groupby(["objective", "policy"]).size().eq(3).all()


def test_deterministic_log_reports_dm_and_says_ips_is_not_identified(tmp_path):
    data, _ = shop(n_rows=2500, logging="rule")  # the same kind of shop, logged by a deterministic rule
    out = run_section(_shop_cfg(), data, tmp_path, NO_PUSH_ID, n_folds=3, fidelity_epochs=5)
    h, run = out["headline"], out["run"]
    assert h["identified"] is False and h["quality_bar"] == {} and h["fidelity"] == {} and h["qini"] == {}
    assert not (run.root / KEY / "uplift_fidelity.csv").exists()
    text = "\n".join(md for _, md in run.sections)
    assert "not identified" in text and "every logged propensity is 1.0" in text
    ope = pd.read_csv(run.root / KEY / "uplift_ope.csv")
    assert set(ope["estimator"]) == {"dm"}
    # DM of always X = the response model's mean predicted objective of X on the test rows
    test, model = out["split"].test, out["model"]
    x, recent = model.encode(test)
    pred = model.predict(x, recent, test.position)
    for o, obj in analysed_objectives(_shop_cfg(), data, out["objective"], NO_PUSH_ID).items():
        q = obj.expected(pred, data.action_ids)
        for i, a in enumerate(data.action_ids.tolist()):
            got = ope[(ope["objective"] == o) & (ope["policy"] == f"always {a}")]["value"].item()
            assert got == pytest.approx(q[:, i].mean(), rel=1e-6), (o, a)


def test_multi_slot_log_is_skipped_with_a_reason(tmp_path):
    data, _ = generate_log(SyntheticConfig(n_rows=300, n_users=40, n_actions=3, n_positions=2))
    run = RunFolder(tmp_path)
    out = uplift_section(compose_cfg("data=synthetic"), data=data, split=None, model=None, objective=None,
                         no_push_action="0", policies={}, features_test=np.zeros((0, 1)), key=KEY, run=run, seed=0,
                         say=lambda _m: None)
    assert "single-slot" in out["skipped"] and "2 slots" in run.sections[0][1]


def test_bad_no_push_action_and_money_are_refused():
    data, _ = shop(n_rows=600)
    with pytest.raises(ValueError, match="data.no_push_action='nothing' is not an action id"):
        find_no_push(data.action_ids, "nothing")
    assert find_no_push(np.array([0, 1, 2]), "2") == 2  # a config string matches an integer id
    with pytest.raises(ValueError, match="objective.money='spend' is not a declared reward"):
        money_reward(compose_cfg("data=synthetic", "objective.money=spend"), data)
    assert money_reward(_shop_cfg(), data) == "revenue"  # the one non-binary reward


def test_analysed_objectives_are_every_reward_plus_profit():
    data, _ = shop(n_rows=600)
    cfg = _shop_cfg()
    objectives = analysed_objectives(cfg, data, make_objective("conversion", data.action_ids), NO_PUSH_ID)
    assert list(objectives) == ["click", "conversion", "revenue", "profit"]
    profit = objectives["profit"]
    assert profit.reward == "revenue" and profit.margin == pytest.approx(MARGIN)
    assert profit.cost_vector(data.action_ids).tolist() == [PUSH_COST] * 3 + [0.0]


def test_the_bar_is_stated_for_an_outcome_and_a_value_objective():
    data, _ = shop(n_rows=600)
    cfg = _shop_cfg()
    ids = data.action_ids
    plain = make_objective("click", ids)
    profit = make_objective("profit", ids, no_push_action=NO_PUSH_ID, money="revenue")
    with_profit = analysed_objectives(cfg, data, plain, NO_PUSH_ID)
    assert bar_objectives(cfg, data, plain, with_profit) == ("click", "profit")
    assert bar_objectives(cfg, data, plain, {"click": plain}) == ("click", None)  # no money reward: no value bar
    assert bar_objectives(cfg, data, profit, with_profit) == ("conversion", "profit")  # the log's default outcome
    weighted = make_objective("weighted", ids, no_push_action=NO_PUSH_ID, weights={"conversion": 1.0, "revenue": 0.01})
    assert bar_objectives(cfg, data, weighted, with_profit | {"weighted": weighted}) == ("conversion", "weighted")


def test_analysis_code_names_no_dataset():
    for path in ("experiments/uplift_section.py", "experiments/uplift_report.py", "agents/uplift.py",
                 "agents/uplift_analysis.py", "policies/uplift.py", "experiments/budget_section.py"):
        source = (REPO / path).read_text()
        assert not DATASET_WORDS.search(source), (path, DATASET_WORDS.search(source))
