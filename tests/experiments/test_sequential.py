"""The sequential section of `pushrl run`: a tiny end-to-end run on a synthetic shop (files, sections,
metrics that survive metrics.json and the multirun collector), another on a log without a click
(declared rewards, a weighted objective, a no-push action with organic outcomes: test_sequential_rewards.py),
and the Hydra node as the section takes it. The library pieces have their own tests: tests/envs/sim/test_world.py,
tests/policies/test_timing.py, tests/agents/test_observation_bandit.py, test_timing_study.py, test_sequential_config.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from pushrl.agents.sequential_config import SequentialConfig, as_sequential_config
from pushrl.envs.objectives import Objective
from pushrl.envs.sim.env_config import default_shop
from pushrl.experiments.outputs import RunFolder
from pushrl.experiments.pareto import collect_sweep
from pushrl.experiments.sequential import sequential_section

torch.set_num_threads(1)
TINY = {"n_users": 150, "horizon": 5, "ppo_timesteps": 256, "n_envs": 8, "ppo_curve_points": 1,
        "bandits": {"epsilon_greedy": {"epsilon": 0.2}, "linucb": {"alpha": 0.5}}, "bandit_days": 4,
        "bandit_users": 16, "bandit_context_dims": 3, "eval_users": 24, "eval_seeds": 2, "lambdas": [0.0, 2.0],
        "pareto_agents": ["greedy", "epsilon_greedy"]}
AGENTS = ("ppo", "dqn", "a2c", "epsilon_greedy", "linucb", "greedy_myopic", "greedy_spaced_0", "greedy_spaced_1", "greedy_spaced_2",
          "optimum", "uniform_push", "never_push")
CLICK = Objective(name="click", reward="click")


@pytest.fixture(scope="module")
def shop():
    return default_shop(0, 300, 6)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, shop):
    run = RunFolder(tmp_path_factory.mktemp("run") / "0")
    said: list[str] = []
    start = time.perf_counter()
    out = sequential_section(SequentialConfig(**TINY), model=shop.response, pool_contexts=shop.contexts,
                             categories=shop.categories, action_ids=shop.action_ids, objective=CLICK,
                             key="synth", run=run, seed=3, say=said.append)
    return run, out, said, time.perf_counter() - start


def test_tiny_run_writes_files_and_sections(tiny_run) -> None:
    run, out, said, seconds = tiny_run
    assert seconds < 40, f"the tiny sequential section took {seconds:.1f} s"
    root = run.root / "synth"
    for rel in ("ppo/learning_curve.csv", "ppo/config.json", "sequential/sequential.csv",
                "sequential/ppo_learning_curve.png", "sequential/pareto.csv", "sequential/pareto.png"):
        assert (root / rel).exists() and (root / rel).stat().st_size > 0, rel
    assert list((root / "ppo" / "checkpoints").glob("ppo_*_steps.zip"))
    titles = [t for t, _ in run.sections]
    assert titles == ["synth: when to push: PPO vs bandits with fatigue and churn on", "synth: accuracy–diversity front (λ sweep)",
                      "synth: what the simulator assumes about timing"]
    for rel in ("sequential/dynamics.png", "sequential/sensitivity.csv"):
        assert (root / rel).exists() and (root / rel).stat().st_size > 0, rel
    body = run.sections[0][1]
    for name in AGENTS:
        assert f"| {name} |" in body
    for b, c in out["ppo_vs_bandits"].items():  # the sentence of this comparison's own verdict
        assert {"better": f"**PPO beats {b}**", "worse": f"**{b} beats PPO**",
                "overlap": f"**PPO does not significantly beat {b}**"}[c["verdict"]] in body
    for a, shape in out["pareto_shape"].items():
        assert f"**{a}: {shape}**" in run.sections[1][1]
    assert any("ppo" in s for s in said)


def test_tiny_run_metrics_are_consistent(tiny_run) -> None:
    run, out, _, _ = tiny_run
    agents = out["agents"]
    assert set(agents) == set(AGENTS)
    assert agents["never_push"]["pushes_per_user"] == 0 and agents["never_push"]["reward_per_user"] == 0
    assert agents["uniform_push"]["pushes_per_user"] == pytest.approx(TINY["horizon"], rel=0.3)  # pushes until it churns
    assert set(out["ppo_vs_bandits"]) == {"epsilon_greedy", "linucb"}
    assert out["rl_best"] in ("ppo", "dqn", "a2c")
    assert out["rl_best_share_of_optimum"] == pytest.approx(
        agents[out["rl_best"]]["reward_per_user"] / out["optimum"]["reward_per_user"])
    assert out["rl_vs_best_rule"]["rule"].startswith("greedy_spaced_")
    table = __import__("pandas").read_csv(run.root / "synth" / "sequential" / "sequential.csv", index_col=0)
    ppo = table.loc["ppo"]
    for b, c in out["ppo_vs_bandits"].items():  # the verdict, recomputed from the table's CIs
        q = table.loc[b]
        expected = ("better" if ppo["reward_per_user_ci_low"] > q["reward_per_user_ci_high"] else
                    "worse" if ppo["reward_per_user_ci_high"] < q["reward_per_user_ci_low"] else "overlap")
        assert c["verdict"] == expected, (b, c)
        assert c["difference_ci_low"] <= c["difference"] <= c["difference_ci_high"]
    assert out["ppo_beats_bandits"] == all(ppo["reward_per_user_ci_low"] > table.loc[b, "reward_per_user_ci_high"]
                                           for b in ("epsilon_greedy", "linucb"))
    assert len(out["pareto"]) == 2 * len(TINY["lambdas"])
    assert out["unsubscribe_penalty"] == pytest.approx(30.0 * out["unit"])
    assert out["spacing"]["best_rule"].startswith("greedy_spaced_")
    assert out["spacing"]["rule_vs_greedy"]["verdict"] in ("better", "worse", "overlap")
    # a spacing rule never pushes more than the daily myopic greedy
    assert agents["greedy_spaced_0"]["pushes_per_user"] <= agents["greedy_myopic"]["pushes_per_user"]
    table = __import__("pandas").read_csv(run.root / "synth" / "sequential" / "sequential.csv", index_col=0)
    assert table.loc["ppo", "reward_per_user"] == pytest.approx(agents["ppo"]["reward_per_user"])
    front = __import__("pandas").read_csv(run.root / "synth" / "sequential" / "pareto.csv")
    assert front["non_dominated"].any() and set(front["agent"]) == {"greedy", "epsilon_greedy"}


def test_the_optimum_and_the_dynamics_are_reported(tiny_run) -> None:
    run, out, _, _ = tiny_run
    opt = out["optimum"]
    assert opt["exact"] is True and opt["simulated"] == pytest.approx(out["agents"]["optimum"]["reward_per_user"])
    assert opt["share_of_optimum"]["optimum"] == pytest.approx(opt["simulated"] / opt["reward_per_user"])
    # the exact optimum is no worse than any rule it is compared with, in expectation: allow the rules' noise
    for name in ("greedy_myopic", "greedy_spaced_0", "greedy_spaced_1", "uniform_push", "never_push"):
        assert opt["reward_per_user"] >= out["agents"][name]["reward_per_user_ci_low"], name
    d = out["dynamics"]
    # the synthetic truth reacts to recent pushes itself; churn is the configured rule
    assert d["fatigue_source"] == "learned" and d["churn_source"] == "assumed" and d["source"] == "assumed"
    assert d["fatigue_multiplier"]["0"] == pytest.approx(1.0) and d["fatigue_multiplier"]["2"] < 1.0
    probs = [d["unsubscribe_probability"][str(r)] for r in range(4)]
    assert probs == sorted(probs) and 0 < probs[0] < 0.05
    assert "winner_changes" in d["sensitivity"] and len(d["sensitivity"]["winners"]) == 3  # churn grid only
    assert "Sensitivity to the assumed churn" in run.sections[2][1]


def test_returned_metrics_round_trip_through_metrics_json(tiny_run) -> None:
    """What the lead stores under f"{key}/sequential" is valid JSON and feeds the multirun collector."""
    run, out, _, _ = tiny_run
    run.add_metrics("synth/sequential", out)
    run.write("test")
    json.loads((run.root / "metrics.json").read_text())
    table = collect_sweep(run.root.parent)
    assert set(table["source"]) == {"agent", "sweep"}
    assert len(table) == len(out["agents"]) + len(out["pareto"])
    assert (run.root.parent / "pareto_front.png").exists()


def test_disabled_does_nothing(tmp_path: Path, shop) -> None:
    run = RunFolder(tmp_path)
    out = sequential_section({"enabled": False}, model=shop.response, pool_contexts=shop.contexts,
                             categories=shop.categories, action_ids=shop.action_ids, objective=CLICK,
                             key="k", run=run, seed=0, say=lambda m: None)
    assert out == {"enabled": False} and run.sections == [] and not (tmp_path / "k").exists()


def test_the_hydra_node_is_the_library_dataclass(tmp_path: Path, shop) -> None:
    """`sequential:` is SequentialConfig itself (a structured config), and a DictConfig of it runs the section."""
    assert OmegaConf.structured(SequentialConfig).frequency_cap is None  # usable as a Hydra schema
    cfg = as_sequential_config(OmegaConf.create({"horizon": 7, "lambdas": [0, 1]}))
    assert cfg.horizon == 7 and cfg.lambdas == [0.0, 1.0]
    kw = {"model": shop.response, "pool_contexts": shop.contexts, "categories": shop.categories,
          "action_ids": shop.action_ids, "objective": CLICK, "key": "k", "run": RunFolder(tmp_path), "seed": 0}
    root = OmegaConf.create({"days": 3, "sequential": {"enabled": False, "horizon": "${days}"}})
    assert sequential_section(root.sequential, **kw) == {"enabled": False}  # interpolations resolved first
    with pytest.raises(ValueError, match="unknown sequential config key"):
        sequential_section(OmegaConf.create({"enabled": False, "horizn": 3}), **kw)
    assert sequential_section(OmegaConf.structured(SequentialConfig(enabled=False)), **kw) == {"enabled": False}
