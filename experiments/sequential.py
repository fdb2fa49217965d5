"""The sequential part of `pushrl run`: when to push, with fatigue and churn on.

`sequential_section(cfg_seq, model=..., pool_contexts=..., ...)` builds the simulated shop over the
fitted response model and a pool of training users' encoded contexts (`pushrl.envs.sim.world`:
costs and λ in average pushes), then
1. trains PPO (SB3) on it, trains contextual bandits online in the same env
   (`pushrl.agents.observation_bandit`), and evaluates them with the baselines
   (`pushrl.policies.timing`: always push a uniformly random promotion, never push, a myopic greedy
   on the response model) through the one `rollout` harness, on the same users and seeds;
2. sweeps λ (the weight of category novelty in the reward) for cheap agents and draws the
   accuracy (objective per push) – diversity (category novelty, coverage) front
   (`pushrl.agents.timing_study.pareto_sweep`);
and adds two report sections (`pushrl.experiments.sequential_report`). Wiring only.

Files under `run.path(key)`: `ppo/` (SB3 checkpoints, config.json, learning_curve.csv),
`sequential/sequential.csv`, `sequential/ppo_learning_curve.png`, `sequential/pareto.csv`,
`sequential/pareto.png`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from pushrl.agents.observation_bandit import train_bandit
from pushrl.agents.rollout import RolloutResult, compare, rollout
from pushrl.agents.sb3_agents import train_sb3
from pushrl.agents.sequential_config import SequentialConfig, as_sequential_config
from pushrl.agents.timing_study import (
    OPTIMUM,
    PPO_CURVE_USERS,
    baseline_policies,
    pareto_sweep,
    ppo_agent_config,
    sensitivity_study,
    spacing_comparison,
    winner_changes,
)
from pushrl.envs.common.atomic import write_text
from pushrl.envs.model.response import ResponseFunction
from pushrl.envs.sim.batched_env import BatchedPushEnv
from pushrl.envs.sim.dynamics_summary import DynamicsSummary, summarise_dynamics
from pushrl.envs.sim.env_config import EnvObjective
from pushrl.envs.sim.world import World, build_world
from pushrl.experiments.outputs import RunFolder
from pushrl.experiments.pareto import front_plot
from pushrl.experiments.plots import save_figure
from pushrl.experiments.sequential_report import SequentialResults, add_sections
from pushrl.policies.pareto import ACCURACY, DIVERSITY, NOT_MONOTONE, front_shape
from pushrl.policies.policy import BasePolicy

TABLE_METRICS = ("reward_per_user", "objective_per_user", "objective_per_push", "response_rate", "pushes_per_user",
                 "unsubscribe_rate", "catalogue_coverage", "category_novelty", "exposure_gini")
"""The agents' metrics in metrics.json, besides `<reward>_per_user` for each reward of the model."""


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start


def _seed(ss: np.random.SeedSequence) -> int:
    return int(ss.generate_state(1)[0] % 2**31)


def sequential_section(cfg_seq: Any, *, model: ResponseFunction, pool_contexts: np.ndarray, categories: np.ndarray,
                       action_ids: np.ndarray, objective: EnvObjective, no_push_action: Any = None, key: str,
                       run: RunFolder, seed: int, say: Callable[[str], Any] = print) -> dict[str, Any]:
    """PPO vs bandits vs baselines with fatigue and churn on, and the λ sweep; adds two report sections.

    Args:
        cfg_seq: SequentialConfig (or a DictConfig / mapping of its fields).
        model: the fitted response model (ResponseFunction; contexts of width d).
        pool_contexts: (n, d) encoded contexts of training users (model.encoder output).
        categories: (A,) category code of each promotion; action_ids: (A,) the catalogue ids.
        objective: the pipeline's `Objective` (a declared reward, profit or a weighted combination, with its cost
            per pushed action), or a reward name or a {reward: weight} mapping; the simulator pays it.
        no_push_action: the log's no-push action id (the simulator's push-nothing action, earning the organic
            outcomes the model predicts for it), or None (not pushing earns 0).
        key: the dataset's key (report titles, output folder, metric prefix).
    Returns the headline metrics (for metrics.json under f"{key}/sequential"); {"enabled": False} if off.
    """
    cfg = as_sequential_config(OmegaConf.to_container(cfg_seq, resolve=True) if isinstance(cfg_seq, DictConfig)
                               else cfg_seq)
    if not cfg.enabled:
        return {"enabled": False}
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    ss_pool, ss_ppo, ss_bandits, ss_eval, ss_pareto = np.random.SeedSequence(seed).spawn(5)
    world = build_world(cfg, model, pool_contexts, categories, action_ids, objective, no_push_action,
                        np.random.default_rng(ss_pool))
    eval_seed = _seed(ss_eval)
    out_dir = run.path(key, "sequential", "sequential.csv").parent
    eval_env = world.factory()(cfg.eval_users)
    say(f"[bold]{key}[/bold]: sequential section: {len(world.shop.contexts):,} pool users, "
        f"{eval_env.dynamics.n_allowed} pushable promotions, {cfg.horizon}-day episodes, objective {world.label}")
    policies, curve, explained = _train(cfg, world, run, key, ss_ppo, ss_bandits, timings, say)
    with _timed(timings, "evaluation"):
        table, results = _evaluate(cfg, world, eval_env, policies, eval_seed, say)
        write_text(out_dir / "sequential.csv", table.to_csv())
    learning_curve_plot(curve, table, out_dir / "ppo_learning_curve.png",
                        f"{key}: PPO in the push simulator (fatigue and churn on)")
    with _timed(timings, "pareto"):
        front = pareto_sweep(cfg, world, _seed(ss_pareto), eval_seed, say)
        write_text(out_dir / "pareto.csv", front.to_csv(index=False))
        front_plot(front.assign(label=[f"{a} λ={lam:g}" for a, lam in zip(front["agent"], front["lambda"], strict=True)]),
                   out_dir / "pareto.png", f"{key}: accuracy–diversity front over λ ({', '.join(cfg.pareto_agents)})")
    dynamics = summarise_dynamics(eval_env.dynamics, world.shop.contexts)
    dynamics_plot(dynamics, out_dir / "dynamics.png", f"{key}: fatigue and churn by recent pushes ({dynamics.source})")
    sensitivity, sensitivity_summary = None, None
    if dynamics.assumed_parts and cfg.spacing_rules:
        with _timed(timings, "sensitivity"):
            def make_world(settings: SequentialConfig) -> World:
                return build_world(settings, model, pool_contexts, categories, action_ids, objective, no_push_action,
                                   np.random.default_rng(ss_pool))

            sensitivity = sensitivity_study(cfg, make_world, dynamics.assumed_parts, eval_seed, say)
            sensitivity_summary = winner_changes(sensitivity, cfg)
            write_text(out_dir / "sensitivity.csv", sensitivity.to_csv(index=False))
    timings["total"] = time.perf_counter() - t_start
    res = SequentialResults(cfg, world, table, {b: compare(results["ppo"], results[b]) for b in cfg.bandits},
                            spacing_comparison(results), front,
                            {a: front_shape(front[front["agent"] == a]) for a in cfg.pareto_agents}, curve, explained,
                            timings, dynamics, sensitivity, sensitivity_summary)
    add_sections(run, key, res)
    say(f"  sequential section done in {timings['total']:.0f} s")
    return headline(res)


def _train(cfg: SequentialConfig, world: World, run: RunFolder, key: str, ss_ppo: np.random.SeedSequence,
           ss_bandits: np.random.SeedSequence, timings: dict[str, float],
           say: Callable[[str], Any]) -> tuple[dict[str, BasePolicy], pd.DataFrame, float | None]:
    """PPO (checkpoints under run.path(key, "ppo")) and the bandits, online in the world's env."""
    with _timed(timings, "ppo"):
        say(f"  ppo: {cfg.ppo_timesteps:,} user-days on {cfg.n_envs} users at a time")
        trained = train_sb3(ppo_agent_config(cfg, _seed(ss_ppo)), world.factory(), run.path(key, "ppo"))
        policies: dict[str, BasePolicy] = {"ppo": trained.policy()}
    explained = None
    with _timed(timings, "bandits"):
        for (name, hp), ss in zip(cfg.bandits.items(), ss_bandits.spawn(max(1, len(cfg.bandits))), strict=False):
            say(f"  {name}: {cfg.bandit_days} online days x {cfg.bandit_users} users")
            agent, _ = train_bandit(name, hp, world, cfg, None, _seed(ss))
            policies[name] = agent
            explained = agent.explained
    return policies, trained.learning_curve, explained


def _evaluate(cfg: SequentialConfig, world: World, eval_env: BatchedPushEnv, trained: dict[str, BasePolicy],
              eval_seed: int, say: Callable[[str], Any]) -> tuple[pd.DataFrame, dict[str, RolloutResult]]:
    """Every agent and the baselines in eval_env (cfg.eval_users users) x cfg.eval_seeds seeds: the table and rollouts."""
    policies = trained | baseline_policies(eval_env.dynamics, world.config.diversity_weight, cfg.spacing_rules,
                                           cfg.fatigue_window, horizon=world.horizon)
    say(f"  evaluating {len(policies)} agents on {cfg.eval_users:,} users x {cfg.eval_seeds} seeds")
    results = {name: rollout(p, eval_env, None, cfg.eval_seeds, eval_seed) for name, p in policies.items()}
    table = pd.concat([r.to_frame(name) for name, r in results.items()])
    if OPTIMUM in policies:
        result = policies[OPTIMUM].result
        table.attrs["optimum"] = {"reward_per_user": result.mean, "exact": bool(result.exact), "method": result.method,
                                  "simulated": float(table.loc[OPTIMUM, "reward_per_user"])}
    return table, results


def headline(res: SequentialResults) -> dict[str, Any]:
    """The section's metrics (metrics.json under f"{key}/sequential")."""
    world, table, comparisons, front = res.world, res.table, res.comparisons, res.front
    metrics = TABLE_METRICS + tuple(f"{r}_per_user" for r in world.rewards)
    agents = {name: {m: float(table.loc[name, m]) for m in metrics}
              | {f"reward_per_user_ci_{s}": float(table.loc[name, f"reward_per_user_ci_{s}"]) for s in ("low", "high")}
              for name in table.index}
    points = {r["point"]: {"agent": r["agent"], "lambda": float(r["lambda"]), ACCURACY: float(r[ACCURACY]),
                           DIVERSITY: float(r[DIVERSITY]), "catalogue_coverage": float(r["catalogue_coverage"]),
                           "non_dominated": bool(r["non_dominated"])} for r in front.to_dict("records")}
    return {
        "objective": world.label,
        "diversity_weight": res.cfg.diversity_weight,
        "unit": world.unit,
        "unsubscribe_penalty": world.config.unsubscribe_penalty,
        "agents": agents,
        "best_agent": str(table["reward_per_user"].idxmax()),
        "ppo_vs_bandits": comparisons,
        "ppo_beats_bandits": bool(comparisons) and all(c["verdict"] == "better" for c in comparisons.values()),
        "spacing": res.spacing,
        "optimum": optimum_metrics(table),
        "pareto": points,
        "pareto_monotone": {a: m[0] != NOT_MONOTONE for a, m in res.shapes.items()},
        "pareto_shape": {a: m[0] for a, m in res.shapes.items()},
        "seconds": res.timings,
        "dynamics": res.dynamics.metrics() | ({"sensitivity": res.sensitivity_summary}
                                              if res.sensitivity_summary is not None else {}),
    }


def optimum_metrics(table: pd.DataFrame) -> dict[str, Any]:
    """The DP optimum's exact value per user, how it was computed, and each agent's share of it ({} without)."""
    opt = table.attrs.get("optimum")
    if not opt:
        return {}
    value = opt["reward_per_user"]
    share = {a: float(table.loc[a, "reward_per_user"] / value) if value > 0 else float("nan") for a in table.index}
    return opt | {"share_of_optimum": share}


def dynamics_plot(d: DynamicsSummary, path: Path, title: str) -> Path:
    """Fatigue multiplier and P(unsubscribe | push) against the pushes in the fatigue window."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    r = list(d.fatigue_multiplier)
    axes[0].plot(r, list(d.fatigue_multiplier.values()), "o-")
    axes[0].set(xlabel="pushes in the fatigue window", ylabel="fatigue multiplier", title=f"fatigue ({d.fatigue_source})")
    axes[1].plot(r, list(d.unsubscribe_probability.values()), "o-", color="C3")
    axes[1].set(xlabel="pushes in the fatigue window", ylabel="P(unsubscribe | push)", title=f"churn ({d.churn_source})")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def learning_curve_plot(curve: pd.DataFrame, references: pd.DataFrame, path: Path, title: str) -> Path:
    """PPO's reward per user and pushes per user against timesteps, other agents' final values as lines."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric, label in ((axes[0], "reward_per_user", "reward per user-episode"),
                              (axes[1], "pushes_per_user", "pushes per user-episode")):
        if len(curve):
            ax.plot(curve["timesteps"], curve[metric], "o-", color="black", label=f"ppo ({PPO_CURVE_USERS} users x 3 seeds)")
            if metric == "reward_per_user":
                ax.fill_between(curve["timesteps"], curve["reward_per_user_ci_low"], curve["reward_per_user_ci_high"],
                                color="black", alpha=0.12)
        for i, (name, row) in enumerate(references.iterrows()):
            if name != "ppo":
                ax.axhline(row[metric], ls="--", lw=1, color=colors[i % len(colors)], label=f"{name} (final eval)")
        ax.set_xlabel("PPO timesteps (user-days)")
        ax.set_ylabel(label)
    axes[1].legend(*axes[0].get_legend_handles_labels(), fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
