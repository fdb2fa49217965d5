"""The when-to-push study in the simulator: PPO's recipe, the baselines, the spacing question and the λ sweep.

* `ppo_agent_config(cfg, seed)`, `rl_agent_config(cfg, algo, seed)`: the SB3 settings of `SequentialConfig`'s
  timing agents (PPO, DQN, A2C deciding when to push: `pushrl.agents.timing_rl`).
* `baseline_policies(dynamics, λ, ...)`: the myopic greedy (and its spacing rules), always-push-uniform
  and never-push, by their report names.
* `spacing_comparison(results)`: does the best spacing rule beat the daily myopic greedy, and where
  does PPO stand against both (paired `compare` on the same users and seeds)?
* `pareto_sweep(cfg, world, ...)`: one accuracy–diversity point per (agent, λ), the front marked.
* `sensitivity_study(cfg, make_world, vary, ...)`: the untrained agents over a grid of the assumed fatigue and
  churn values (`winner_changes` says whether the best one moves).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from pushrl.agents.observation_bandit import train_bandit
from pushrl.agents.rollout import RolloutResult, compare, rollout
from pushrl.agents.sb3_agents import SB3AgentConfig
from pushrl.agents.sequential_config import SequentialConfig
from pushrl.envs.sim.optimum import evaluate_rule, solve, timing_model
from pushrl.envs.sim.push_env import PushDynamics
from pushrl.envs.sim.world import World
from pushrl.policies.pareto import ACCURACY, DIVERSITY, mark_front
from pushrl.policies.policy import BasePolicy, ConstantPolicy
from pushrl.policies.timing import AlwaysPushUniform, MyopicGreedy, OptimalTiming, myopic_rule

GREEDY = "greedy_myopic"
SPACED = "greedy_spaced_"
"""Prefix of the spacing rules' names: greedy_spaced_k pushes only to users with at most k recent pushes."""
OPTIMUM = "optimum"
"""The DP optimum (pushrl.envs.sim.optimum): exact when λ = 0; with λ > 0 its value is an upper bound and the
policy plays the relaxed problem's decisions."""
PPO_CURVE_USERS = 512
"""Users of each learning-curve evaluation during PPO training (3 seeds each)."""
SWEEP_METRICS = (ACCURACY, "response_rate", DIVERSITY, "catalogue_coverage", "pushes_per_user", "unsubscribe_rate",
                 "reward_per_user")
"""The metrics of each sweep point (each with its _ci_low and _ci_high)."""


def rl_agent_config(cfg: SequentialConfig, algo: str, seed: int) -> SB3AgentConfig:
    """The timing agent `algo` (ppo, dqn, a2c; `pushrl.agents.timing_rl`): cfg.ppo_timesteps user-days on cfg.n_envs
    users, cfg.ppo_curve_points curve points, gamma cfg.rl_gamma; PPO's n_steps and ent_coef from cfg."""
    if algo == "ppo":
        base = ppo_agent_config(cfg, seed)
        return dataclasses.replace(base, algo_kwargs=base.algo_kwargs | {"gamma": cfg.rl_gamma})
    eval_freq = max(1, cfg.ppo_timesteps // cfg.ppo_curve_points) if cfg.ppo_curve_points else 0
    return SB3AgentConfig(algo=algo, total_timesteps=cfg.ppo_timesteps, n_envs=cfg.n_envs,
                          learning_rate=cfg.ppo_learning_rate, seed=seed, tensorboard_log=None,
                          checkpoint_freq=max(1, cfg.ppo_timesteps // 2), eval_freq=eval_freq,
                          eval_users=PPO_CURVE_USERS, eval_seeds=3, algo_kwargs={"gamma": cfg.rl_gamma})


def ppo_agent_config(cfg: SequentialConfig, seed: int) -> SB3AgentConfig:
    """PPO for cfg.ppo_timesteps user-days on cfg.n_envs users, two checkpoints, cfg.ppo_curve_points curve points."""
    eval_freq = max(1, cfg.ppo_timesteps // cfg.ppo_curve_points) if cfg.ppo_curve_points else 0
    return SB3AgentConfig(algo="ppo", total_timesteps=cfg.ppo_timesteps, n_envs=cfg.n_envs,
                          learning_rate=cfg.ppo_learning_rate, seed=seed, tensorboard_log=None,
                          checkpoint_freq=max(1, cfg.ppo_timesteps // 2), eval_freq=eval_freq,
                          eval_users=PPO_CURVE_USERS, eval_seeds=3,
                          algo_kwargs={"n_steps": cfg.ppo_n_steps, "ent_coef": cfg.ppo_ent_coef})


def baseline_policies(dynamics: PushDynamics, diversity_weight: float, spacing_rules: bool,
                      fatigue_window: int, horizon: int | None = None) -> dict[str, BasePolicy]:
    """GREEDY, then (with spacing_rules) greedy_spaced_0 .. greedy_spaced_{fatigue_window - 1}, with a horizon the
    DP OPTIMUM (single-message slates), uniform_push and never_push, in that order; λ = diversity_weight (absolute)."""
    policies: dict[str, BasePolicy] = {GREEDY: MyopicGreedy(dynamics, diversity_weight)}
    if spacing_rules:
        for k in range(fatigue_window):
            policies[f"{SPACED}{k}"] = MyopicGreedy(dynamics, diversity_weight, k)
    if horizon is not None and dynamics.config.slate_size == 1:
        policies[OPTIMUM] = OptimalTiming.solve(dynamics, horizon)
    n = dynamics.n_allowed
    policies["uniform_push"] = AlwaysPushUniform(n)
    policies["never_push"] = ConstantPolicy(n + 1, n)
    return policies


def rl_comparison(results: Mapping[str, RolloutResult], rl_agents: list[str], optimum: float | None) -> dict[str, Any]:
    """The best RL agent (highest reward per user), its share of the optimum's exact value, and it against the best
    spacing rule (paired `compare`): keys rl_best, rl_best_share_of_optimum, rl_vs_best_rule ({} without RL agents)."""
    agents = [a for a in rl_agents if a in results]
    if not agents:
        return {}
    best = max(agents, key=lambda n: results[n].metrics["reward_per_user"].mean)
    value = results[best].metrics["reward_per_user"].mean
    out: dict[str, Any] = {"rl_best": best,
                           "rl_best_share_of_optimum": float(value / optimum) if optimum and optimum > 0 else None}
    rules = [n for n in results if n.startswith(SPACED)]
    if rules:
        rule = max(rules, key=lambda n: results[n].metrics["reward_per_user"].mean)
        out["rl_vs_best_rule"] = compare(results[best], results[rule]) | {"rule": rule}
    return out


def spacing_comparison(results: Mapping[str, RolloutResult], challenger: str = "ppo") -> dict[str, Any]:
    """The best spacing rule (highest reward per user) against GREEDY, and `challenger` against both.

    Keys: best_rule, rule_vs_greedy, ppo_vs_rule, ppo_vs_greedy (each a `compare` dict); {} without rules.
    """
    rules = [n for n in results if n.startswith(SPACED)]
    if not rules or GREEDY not in results:
        return {}
    best = max(rules, key=lambda n: results[n].metrics["reward_per_user"].mean)
    return {"best_rule": best, "rule_vs_greedy": compare(results[best], results[GREEDY]),
            "ppo_vs_rule": compare(results[challenger], results[best]),
            "ppo_vs_greedy": compare(results[challenger], results[GREEDY])}


def pareto_sweep(cfg: SequentialConfig, world: World, seed: int, eval_seed: int,
                 say: Callable[[str], Any] = print) -> pd.DataFrame:
    """One point per (agent, λ): the agent trained (bandits) and evaluated with λ x unit in the reward.

    Columns: point, agent, lambda, lambda_abs, each of SWEEP_METRICS with its CI, non_dominated.
    """
    rows = []
    seeds = iter(np.random.SeedSequence(seed).spawn(len(cfg.pareto_agents) * len(cfg.lambdas)))
    for agent in cfg.pareto_agents:
        for lam in cfg.lambdas:
            ss = next(seeds)
            lam_abs = lam * world.unit
            env = world.factory(lam_abs)(cfg.eval_users)
            if agent == "greedy":
                policy: BasePolicy = MyopicGreedy(env.dynamics, lam_abs)
            else:
                policy, _ = train_bandit(agent, cfg.bandits.get(agent, {}), world, cfg, lam_abs,
                                         int(ss.generate_state(1)[0] % 2**31))
            m = rollout(policy, env, None, cfg.eval_seeds, eval_seed).metrics
            row: dict[str, Any] = {"agent": agent, "lambda": lam, "lambda_abs": lam_abs}
            for metric in SWEEP_METRICS:
                row.update({metric: m[metric].mean, f"{metric}_ci_low": m[metric].ci_low,
                            f"{metric}_ci_high": m[metric].ci_high})
            rows.append(row)
        say(f"  λ sweep: {agent} at {len(cfg.lambdas)} λ values done")
    table = mark_front(pd.DataFrame(rows))
    table.insert(0, "point", [f"{a}_lambda_{lam:g}" for a, lam in zip(table["agent"], table["lambda"], strict=True)])
    return table


SENSITIVITY_AGENTS = ("greedy_myopic", "greedy_spaced_k", "optimum", "uniform_push", "never_push")
"""What the sensitivity table compares in each cell: nothing that needs training, so the grid stays cheap."""


def exact_rule_values(dynamics: PushDynamics, contexts: np.ndarray, horizon: int) -> dict[str, float]:
    """Expected reward per user of the untrained agents, computed exactly over the pool (no sampling noise):
    the myopic greedy, its spacing rules, the DP optimum, uniform_push and never_push (λ = 0 dynamics)."""
    model = timing_model(dynamics, contexts, horizon)
    n, a = model.q.shape[:2]
    window = dynamics.config.fatigue_window
    rules = {GREEDY: myopic_rule(model)} | {f"{SPACED}{k}": myopic_rule(model, k) for k in range(window)}
    uniform = np.tile(np.r_[np.full(a, 1.0 / a), 0.0], (n, 1))
    rules |= {"uniform_push": lambda *_: uniform, "never_push": lambda *_: np.full(n, a)}
    values = {name: float(evaluate_rule(model, rule).mean()) for name, rule in rules.items()}
    return values | {OPTIMUM: solve(model, keep_table=False).mean}


def sensitivity_study(cfg: SequentialConfig, make_world: Callable[[SequentialConfig], World], vary: tuple[str, ...],
                      eval_seed: int, say: Callable[[str], Any] = print) -> pd.DataFrame:
    """The untrained agents' comparison re-run over a grid of the assumed dynamics.

    vary: which of ("fatigue", "churn") are assumptions: fatigue varies cfg.sensitivity_fatigue
    (fatigue_factor), churn varies cfg.sensitivity_churn_logit (churn_logit); the other stays as configured.
    make_world(settings) builds the world for one cell. With λ = 0 each agent's expected reward per user is
    exact over the pool (`exact_rule_values`: the optimum's recursion, no sampling noise, so a changed winner
    is a real change); with λ > 0 the rules are rolled out (cfg.eval_users users x cfg.sensitivity_seeds
    seeds). Returns one row per (cell, agent): fatigue_factor, churn_logit, agent, reward_per_user (with its
    CI; equal to it when exact), method, and `winner` (the cell's best rule by reward per user; the optimum is
    the bar the rules are measured against, not one of them).
    """
    fatigue = cfg.sensitivity_fatigue if "fatigue" in vary else [cfg.fatigue_factor]
    churn = cfg.sensitivity_churn_logit if "churn" in vary else [cfg.churn_logit]
    rows = []
    for f in fatigue:
        for c in churn:
            world = make_world(dataclasses.replace(cfg, fatigue_factor=f, churn_logit=c))
            env = world.factory()(cfg.eval_users)
            cell_rows = []
            if world.config.diversity_weight == 0 and env.config.slate_size == 1:
                for name, v in exact_rule_values(env.dynamics, world.shop.contexts, world.horizon).items():
                    cell_rows.append({"agent": name, "reward_per_user": v, "reward_per_user_ci_low": v,
                                      "reward_per_user_ci_high": v, "method": "exact"})
            else:
                policies = baseline_policies(env.dynamics, world.config.diversity_weight, True, cfg.fatigue_window)
                for name, policy in policies.items():
                    m = rollout(policy, env, None, cfg.sensitivity_seeds, eval_seed).metrics["reward_per_user"]
                    cell_rows.append({"agent": name, "reward_per_user": m.mean, "reward_per_user_ci_low": m.ci_low,
                                      "reward_per_user_ci_high": m.ci_high, "method": "rollout"})
            rules = [r for r in cell_rows if r["agent"] != OPTIMUM]  # the optimum is the bar, not a rule to pick
            best = max(rules, key=lambda r: r["reward_per_user"])["agent"]
            rows += [{"fatigue_factor": f, "churn_logit": c} | r | {"winner": best} for r in cell_rows]
    say(f"  sensitivity: {len(fatigue) * len(churn)} (fatigue, churn) cells x {len(cell_rows)} agents")
    return pd.DataFrame(rows)


def winner_changes(table: pd.DataFrame, cfg: SequentialConfig) -> dict[str, Any]:
    """The winner at the configured values, each cell's winner, and whether any cell's differs."""
    cells = table.drop_duplicates(["fatigue_factor", "churn_logit"])
    winners = {f"fatigue_{r.fatigue_factor:g}_churn_{r.churn_logit:g}": str(r.winner) for r in cells.itertuples()}
    at = cells[np.isclose(cells["fatigue_factor"], cfg.fatigue_factor) & np.isclose(cells["churn_logit"], cfg.churn_logit)]
    configured = str(at["winner"].iloc[0]) if len(at) else None
    return {"winners": winners, "configured_winner": configured,
            "winner_changes": len(set(winners.values())) > 1}
