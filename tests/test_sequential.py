"""The sequential section of `pushrl run`: a tiny end-to-end run on a synthetic shop (files, sections,
metrics that survive metrics.json and the multirun collector), another on a log without a click
(declared rewards, a weighted objective, a no-push action with organic outcomes), the objective as
the simulator pays it, config validation, and the myopic greedy against a hand computation."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from pushrl.envs.env_config import PushEnvConfig, default_shop
from pushrl.envs.objectives import Objective, make_objective
from pushrl.envs.push_env import PushDynamics
from pushrl.experiments.outputs import RunFolder
from pushrl.experiments.pareto import collect_sweep
from pushrl.experiments.sequential import (
    MyopicGreedy,
    SequentialConfig,
    as_sequential_config,
    build_world,
    pareto_sweep,
    sequential_section,
)

torch.set_num_threads(1)
TINY = {"n_users": 150, "horizon": 5, "ppo_timesteps": 256, "n_envs": 8, "ppo_curve_points": 1,
        "bandits": {"epsilon_greedy": {"epsilon": 0.2}, "linucb": {"alpha": 0.5}}, "bandit_days": 4,
        "bandit_users": 16, "bandit_context_dims": 3, "eval_users": 24, "eval_seeds": 2, "lambdas": [0.0, 2.0],
        "pareto_agents": ["greedy", "epsilon_greedy"]}
AGENTS = ("ppo", "epsilon_greedy", "linucb", "greedy_myopic", "greedy_spaced_0", "greedy_spaced_1", "greedy_spaced_2",
          "uniform_push", "never_push")
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
    assert titles == ["synth: when to push: PPO vs bandits with fatigue and churn on", "synth: accuracy–diversity front (λ sweep)"]
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


def test_pareto_sweep_is_seeded(shop) -> None:
    cfg = SequentialConfig(**{**TINY, "pareto_agents": ["greedy", "linucb"]})
    world = build_world(cfg, shop.response, shop.contexts, shop.categories, shop.action_ids, CLICK, None,
                        np.random.default_rng(0))
    a = pareto_sweep(cfg, world, seed=5, eval_seed=9, say=lambda m: None)
    b = pareto_sweep(cfg, world, seed=5, eval_seed=9, say=lambda m: None)
    assert a.equals(b)
    greedy = a[a["agent"] == "greedy"].set_index("lambda")
    assert greedy.loc[2.0, "category_novelty"] >= greedy.loc[0.0, "category_novelty"]  # λ buys novelty


class HillstromLike:
    """Hillstrom's reward names on the synthetic truth, and a "No E-Mail" action (index 0) whose
    expected visits and spend are a third of a push's (organic ones)."""

    reward_names = ("visit", "conversion", "spend")
    reward_kinds = {"visit": "binary", "conversion": "binary", "spend": "continuous"}

    def __init__(self, truth_response) -> None:
        self.inner = truth_response
        self.n_context_features = truth_response.truth.config.n_user_features + truth_response.truth.config.n_segments

    @property
    def n_actions(self) -> int:
        return self.inner.n_actions

    def predict(self, contexts, recent, position):
        out = self.inner.predict(contexts, recent, position)
        for v in out.values():
            v[:, 0] /= 3.0
        return {"visit": out["click"], "conversion": out["conversion"], "spend": out["revenue"]}


def test_the_simulator_pays_the_declared_objective_and_the_organic_no_push(shop) -> None:
    ids = np.array(["No E-Mail"] + [f"promo{i}" for i in range(1, shop.n_actions)], dtype=object)
    profit = make_objective("profit", ids, margin=0.3, push_cost=0.1, no_push_action="No E-Mail", money="spend")
    response = HillstromLike(shop.response)
    world = build_world(SequentialConfig(n_users=50), response, shop.contexts, shop.categories, ids, profit,
                        "No E-Mail", np.random.default_rng(0))
    assert world.config.objective is profit and world.config.no_push_action == "No E-Mail"
    assert world.label == "profit" and world.rewards == ("visit", "conversion", "spend")
    assert len(world.shop.contexts) == 50
    env = world.factory()(4)
    assert env.dynamics.n_allowed == shop.n_actions - 1 and env.dynamics.weights == {"spend": 0.3}
    # the unit (gross profit of a rested push) and the organic baseline, recomputed from the response
    pool = world.shop.contexts
    q = response.predict(pool, np.zeros(len(pool)), np.zeros(len(pool), dtype=np.int64))
    assert world.unit == pytest.approx(0.3 * q["spend"][:, 1:].mean())
    assert world.no_push_baseline == pytest.approx(0.3 * q["spend"][:, 0].mean()) and world.no_push_baseline > 0
    notes = " ".join(world.notes)
    assert "profit = 0.3 × spend − the objective's cost of each push (0.1)" in notes
    assert "`No E-Mail` is the simulator's push-nothing action" in notes and "plays" not in notes
    assert "visit, conversion drawn as 0/1 outcomes" in notes and "spend paid as the model's expected value" in notes
    assert world.config.unsubscribe_penalty == pytest.approx(30.0 * world.unit)


def test_bad_no_push_action_and_objective_are_refused(shop) -> None:
    cfg = SequentialConfig(n_users=50)
    with pytest.raises(ValueError, match=r"no_push_action 'nope' is not one of the log's action ids"):
        build_world(cfg, shop.response, shop.contexts, shop.categories, shop.action_ids, CLICK, "nope",
                    np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"objective needs reward\(s\) \['visit'\]"):
        build_world(cfg, shop.response, shop.contexts, shop.categories, shop.action_ids,
                    Objective(name="visit", reward="visit"), None, np.random.default_rng(0))


def test_config_validation() -> None:
    cfg = as_sequential_config(OmegaConf.create({"horizon": 7, "lambdas": [0, 1]}))
    assert cfg.horizon == 7 and cfg.lambdas == [0.0, 1.0]
    assert as_sequential_config(None) == SequentialConfig()
    assert OmegaConf.structured(SequentialConfig).frequency_cap is None  # usable as a Hydra schema
    with pytest.raises(ValueError, match="unknown sequential config key"):
        as_sequential_config({"horizn": 3})
    with pytest.raises(ValueError, match="unknown bandit"):
        SequentialConfig(bandits={"ucb9": {}})
    with pytest.raises(ValueError, match="pareto_agents"):
        SequentialConfig(pareto_agents=["ppo"])
    with pytest.raises(ValueError, match="eval_seeds"):
        SequentialConfig(eval_seeds=1)
    with pytest.raises(ValueError, match="lambdas"):
        SequentialConfig(lambdas=[-1.0])
    with pytest.raises(ValueError, match="unsubscribe_cost"):
        SequentialConfig(unsubscribe_cost=-1.0)
    with pytest.raises(TypeError, match="cfg_seq"):
        as_sequential_config(3)


class FixedClicks:
    """Click probability per promotion, the same for every user (no fatigue reaction)."""

    reward_names = ("click",)
    n_context_features = 2

    def __init__(self, click: list[float]) -> None:
        self.click = np.asarray(click)

    @property
    def n_actions(self) -> int:
        return len(self.click)

    def predict(self, contexts, recent, position):
        return {"click": np.tile(self.click, (len(contexts), 1))}


def test_myopic_greedy_matches_hand_computation() -> None:
    from pushrl.envs.env_config import Shop

    shop = Shop.build(FixedClicks([0.10, 0.30, 0.20]), np.zeros((5, 2)), np.array([0, 0, 1]), np.arange(3))
    cfg = PushEnvConfig(churn_logit=-2.0, churn_slope=0.5, unsubscribe_penalty=0.4, push_cost=0.05,
                        fatigue="multiplicative", fatigue_factor=0.5, frequency_cap=2, cap_window=7)
    dyn = PushDynamics(cfg, shop)
    d, c = dyn.d, dyn.n_categories
    obs = np.zeros((3, dyn.obs_dim), dtype=np.float32)
    obs[1, d] = 1.0  # one recent push
    obs[1, d + 3 + 0] = 3.0  # category 0 pushed lately
    obs[2, -1] = 1.0  # cap hit
    lam = 0.25
    scores = MyopicGreedy(dyn, lam).scores(obs)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    clicks = np.array([0.10, 0.30, 0.20])
    cats = np.array([0, 0, 1])
    for i, recent in ((0, 0.0), (1, 1.0)):
        novelty = 1 / (1 + obs[i, d + 3 + cats])
        want = clicks * 0.5**recent + lam * novelty - 0.05 - 0.4 * sig(-2.0 + 0.5 * recent)
        np.testing.assert_allclose(scores[i, :3], want, rtol=1e-6)
    assert scores[0, 3] == 0 and np.all(np.isneginf(scores[2, :3]))
    probs = MyopicGreedy(dyn, lam).action_probabilities(obs)
    assert probs[0].argmax() == 1 and probs[2].argmax() == 3  # the best push, then nothing when capped
    assert c == 2
    # a large enough unsubscribe penalty makes pushing a loss: push nothing
    dyn2 = PushDynamics(PushEnvConfig(churn_logit=-2.0, unsubscribe_penalty=10.0), shop)
    assert MyopicGreedy(dyn2, 0.0).action_probabilities(np.zeros((1, dyn2.obs_dim)))[0].argmax() == 3
