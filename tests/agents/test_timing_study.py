"""The when-to-push study's library pieces: the λ sweep (seeded, λ buys novelty), the baselines by name,
the spacing comparison and PPO's settings."""

from __future__ import annotations

import numpy as np
import pytest

from pushrl.agents.rollout import rollout
from pushrl.agents.sequential_config import SequentialConfig
from pushrl.agents.timing_study import (
    GREEDY,
    PPO_CURVE_USERS,
    SWEEP_METRICS,
    baseline_policies,
    pareto_sweep,
    ppo_agent_config,
    spacing_comparison,
)
from pushrl.envs.objectives import Objective
from pushrl.envs.sim.env_config import default_shop
from pushrl.envs.sim.world import build_world
from pushrl.policies.policy import ConstantPolicy
from pushrl.policies.timing import AlwaysPushUniform, MyopicGreedy

TINY = {"n_users": 150, "horizon": 5, "ppo_timesteps": 256, "n_envs": 8, "ppo_curve_points": 1,
        "bandits": {"epsilon_greedy": {"epsilon": 0.2}, "linucb": {"alpha": 0.5}}, "bandit_days": 4,
        "bandit_users": 16, "bandit_context_dims": 3, "eval_users": 24, "eval_seeds": 2, "lambdas": [0.0, 2.0],
        "pareto_agents": ["greedy", "epsilon_greedy"]}
CLICK = Objective(name="click", reward="click")


@pytest.fixture(scope="module")
def shop():
    return default_shop(0, 300, 6)


@pytest.fixture(scope="module")
def world(shop):
    return build_world(SequentialConfig(**TINY), shop.response, shop.contexts, shop.categories, shop.action_ids, CLICK,
                       None, np.random.default_rng(0))


def test_pareto_sweep_is_seeded(shop) -> None:
    cfg = SequentialConfig(**{**TINY, "pareto_agents": ["greedy", "linucb"]})
    world = build_world(cfg, shop.response, shop.contexts, shop.categories, shop.action_ids, CLICK, None,
                        np.random.default_rng(0))
    a = pareto_sweep(cfg, world, seed=5, eval_seed=9, say=lambda m: None)
    b = pareto_sweep(cfg, world, seed=5, eval_seed=9, say=lambda m: None)
    assert a.equals(b)
    greedy = a[a["agent"] == "greedy"].set_index("lambda")
    assert greedy.loc[2.0, "category_novelty"] >= greedy.loc[0.0, "category_novelty"]  # λ buys novelty
    assert list(a["point"]) == ["greedy_lambda_0", "greedy_lambda_2", "linucb_lambda_0", "linucb_lambda_2"]
    assert a["lambda_abs"].tolist() == pytest.approx([0.0, 2 * world.unit] * 2)
    for m in SWEEP_METRICS:
        assert {m, f"{m}_ci_low", f"{m}_ci_high"} <= set(a.columns)
    assert a["non_dominated"].dtype == bool and a["non_dominated"].any()


def test_the_sweep_point_of_the_greedy_is_its_own_rollout(world) -> None:
    cfg = SequentialConfig(**{**TINY, "pareto_agents": ["greedy"], "lambdas": [1.0]})
    said: list[str] = []
    point = pareto_sweep(cfg, world, seed=0, eval_seed=4, say=said.append).iloc[0]
    env = world.factory(world.unit)(cfg.eval_users)
    m = rollout(MyopicGreedy(env.dynamics, world.unit), env, None, cfg.eval_seeds, 4).metrics
    assert point["objective_per_push"] == pytest.approx(m["objective_per_push"].mean)
    assert point["category_novelty_ci_high"] == pytest.approx(m["category_novelty"].ci_high)
    assert said == ["  λ sweep: greedy at 1 λ values done"]


def test_baselines_by_name_in_order(world) -> None:
    dyn = world.factory()(4).dynamics
    policies = baseline_policies(dyn, 0.5, spacing_rules=True, fatigue_window=3)
    assert list(policies) == [GREEDY, "greedy_spaced_0", "greedy_spaced_1", "greedy_spaced_2", "uniform_push",
                              "never_push"]
    assert policies["greedy_spaced_1"].max_recent == 1 and policies[GREEDY].max_recent is None
    assert policies[GREEDY].lam == 0.5
    assert isinstance(policies["uniform_push"], AlwaysPushUniform) and isinstance(policies["never_push"], ConstantPolicy)
    assert policies["never_push"].action_probabilities(np.zeros((1, dyn.obs_dim)))[0, dyn.n_allowed] == 1.0
    assert list(baseline_policies(dyn, 0.0, spacing_rules=False, fatigue_window=3)) == [GREEDY, "uniform_push",
                                                                                        "never_push"]


def test_spacing_comparison_picks_the_best_rule(world) -> None:
    env = world.factory()(24)
    policies = baseline_policies(env.dynamics, 0.0, spacing_rules=True, fatigue_window=2)
    results = {name: rollout(p, env, None, 2, 1) for name, p in policies.items()}
    results["ppo"] = results["uniform_push"]  # any challenger
    out = spacing_comparison(results)
    rules = ["greedy_spaced_0", "greedy_spaced_1"]
    best = max(rules, key=lambda n: results[n].metrics["reward_per_user"].mean)
    assert out["best_rule"] == best
    assert set(out) == {"best_rule", "rule_vs_greedy", "ppo_vs_rule", "ppo_vs_greedy"}
    assert out["rule_vs_greedy"]["difference"] == pytest.approx(
        results[best].metrics["reward_per_user"].mean - results[GREEDY].metrics["reward_per_user"].mean)
    assert spacing_comparison({GREEDY: results[GREEDY], "ppo": results["ppo"]}) == {}


def test_ppo_agent_config() -> None:
    cfg = SequentialConfig(ppo_timesteps=1000, n_envs=4, ppo_curve_points=4, ppo_n_steps=16, ppo_ent_coef=0.02)
    sb3 = ppo_agent_config(cfg, seed=7)
    assert (sb3.algo, sb3.total_timesteps, sb3.n_envs, sb3.seed, sb3.eval_freq, sb3.checkpoint_freq) == (
        "ppo", 1000, 4, 7, 250, 500)
    assert sb3.eval_users == PPO_CURVE_USERS and sb3.algo_kwargs == {"n_steps": 16, "ent_coef": 0.02}
    assert ppo_agent_config(SequentialConfig(ppo_curve_points=0), 0).eval_freq == 0


def test_sensitivity_study_reruns_the_untrained_agents_over_the_assumed_grid() -> None:
    import dataclasses as dc

    from pushrl.agents.sequential_config import SequentialConfig as SC
    from pushrl.agents.timing_study import sensitivity_study, winner_changes
    from pushrl.envs.objectives import Objective
    from pushrl.envs.sim.env_config import default_shop
    from pushrl.envs.sim.world import build_world

    shop = default_shop(0, 200, 5)

    class NoFatigue:
        reward_names = shop.response.reward_names

        @property
        def n_actions(self):
            return shop.response.n_actions

        def predict(self, contexts, recent, position):
            return shop.response.predict(contexts, np.zeros_like(recent), position)

    cfg = SC(n_users=100, eval_users=200, sensitivity_seeds=2, sensitivity_fatigue=[0.3, 1.0],
             sensitivity_churn_logit=[-12.0, -1.5], churn_slope=1.0, unsubscribe_cost=5.0)

    def make_world(settings):
        return build_world(settings, NoFatigue(), shop.contexts, shop.categories, shop.action_ids,
                           Objective(name="click", reward="click"), None, np.random.default_rng(0))

    table = sensitivity_study(cfg, make_world, ("fatigue", "churn"), eval_seed=3, say=lambda _m: None)
    cells = table.groupby(["fatigue_factor", "churn_logit"])
    assert cells.ngroups == 4 and (cells.size() == cells.size().iloc[0]).all()
    for _, cell in cells:  # the winner is the cell's best rule (the optimum is the bar, not a rule)
        rules = cell[cell["agent"] != "optimum"]
        assert (cell["winner"] == rules.loc[rules["reward_per_user"].idxmax(), "agent"]).all()
    assert set(table["method"]) == {"exact"}
    for _, cell in cells:  # the optimum is the best of them in every cell (exact values)
        best = cell["reward_per_user"].max()
        assert cell.loc[cell["agent"] == "optimum", "reward_per_user"].iloc[0] == pytest.approx(best, rel=1e-12)
    rested = table[(table["fatigue_factor"] == 1.0) & (table["churn_logit"] == -12.0)].set_index("agent")
    # no fatigue, no churn: pushing the best promotion daily is optimal
    assert rested.loc["greedy_myopic", "reward_per_user"] == pytest.approx(rested.loc["optimum", "reward_per_user"])
    tired = table[(table["fatigue_factor"] == 0.3) & (table["churn_logit"] == -1.5)].set_index("agent")
    assert tired.loc["greedy_myopic", "reward_per_user"] < 0.9 * tired.loc["optimum", "reward_per_user"]
    assert tired["winner"].iloc[0] != "greedy_myopic"  # heavy fatigue and churn: spacing (or silence) wins
    summary = winner_changes(table, dc.replace(cfg, fatigue_factor=1.0, churn_logit=-12.0))
    assert set(summary["winners"]) == {"fatigue_0.3_churn_-12", "fatigue_0.3_churn_-1.5", "fatigue_1_churn_-12",
                                       "fatigue_1_churn_-1.5"}
    assert summary["winner_changes"] and summary["configured_winner"] == "greedy_myopic"
    only_churn = sensitivity_study(cfg, make_world, ("churn",), eval_seed=3, say=lambda _m: None)
    assert set(only_churn["fatigue_factor"]) == {cfg.fatigue_factor}
    # the exact values are what the env gives: a spacing rule rolled out lands in its CI around the exact value
    from pushrl.agents.timing_study import exact_rule_values
    from pushrl.policies.timing import MyopicGreedy

    world = make_world(dc.replace(cfg, fatigue_factor=0.5, churn_logit=-3.0))
    env = world.factory()(2000)
    exact = exact_rule_values(env.dynamics, world.shop.contexts, world.horizon)
    m = rollout(MyopicGreedy(env.dynamics, 0.0, 1), env, None, 8, 11).metrics["reward_per_user"]
    assert m.ci_low <= exact["greedy_spaced_1"] <= m.ci_high
