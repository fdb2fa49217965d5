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
from pushrl.agents.sequential_config import SequentialConfig, as_sequential_config
from pushrl.agents.timing_rl import train_timing
from pushrl.agents.timing_study import (
    OPTIMUM,
    PPO_CURVE_USERS,
    baseline_policies,
    pareto_sweep,
    rl_agent_config,
    rl_comparison,
    sensitivity_study,
    spacing_comparison,
    winner_changes,
)
from pushrl.agents.trajectory_eval import (
    log_trajectory_ope,
    trajectory_metrics,
    trajectory_skip_reason,
)
from pushrl.envs.common.atomic import write_text
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.model.response import ResponseFunction
from pushrl.envs.objectives import Objective
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
                       run: RunFolder, seed: int, say: Callable[[str], Any] = print, log: LoggedData | None = None,
                       log_contexts: np.ndarray | None = None) -> dict[str, Any]:
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
        log, log_contexts: the whole log and its encoded contexts; with user ids, timestamps and propensities
            the agents are also valued on it by trajectory OPE (`pushrl.agents.trajectory_eval`).
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
        table, results, everyone = _evaluate(cfg, world, eval_env, policies, eval_seed, say)
        write_text(out_dir / "sequential.csv", table.to_csv())
    with _timed(timings, "trajectory_ope"):
        trajectory = _trajectory_ope(log, log_contexts, eval_env, objective, everyone, eval_seed, say)
        if trajectory is not None:
            write_text(out_dir / "trajectory_ope.csv", trajectory.to_csv())
    learning_curve_plot(curve, table, out_dir / "ppo_learning_curve.png",
                        f"{key}: RL deciding when to push (fatigue and churn on)")
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
                            spacing_comparison(results) | rl_comparison(results, cfg.rl_agents, _optimum(table)), front,
                            {a: front_shape(front[front["agent"] == a]) for a in cfg.pareto_agents}, curve, explained,
                            timings, dynamics, sensitivity, sensitivity_summary, trajectory)
    add_sections(run, key, res)
    say(f"  sequential section done in {timings['total']:.0f} s")
    return headline(res)


def _train(cfg: SequentialConfig, world: World, run: RunFolder, key: str, ss_ppo: np.random.SeedSequence,
           ss_bandits: np.random.SeedSequence, timings: dict[str, float],
           say: Callable[[str], Any]) -> tuple[dict[str, BasePolicy], dict[str, pd.DataFrame], float | None]:
    """The RL timing agents (checkpoints under run.path(key, algo)) and the bandits, online in the world's env.

    Each RL agent decides when to push, the myopic greedy which promotion (`pushrl.agents.timing_rl`)."""
    policies: dict[str, BasePolicy] = {}
    curves = {}
    for algo, ss in zip(cfg.rl_agents, ss_ppo.spawn(len(cfg.rl_agents)), strict=True):
        with _timed(timings, algo):
            say(f"  {algo}: {cfg.ppo_timesteps:,} user-days on {cfg.n_envs} users at a time (when to push)")
            seed = _seed(ss_ppo) if algo == "ppo" else _seed(ss)
            trained = train_timing(rl_agent_config(cfg, algo, seed), world.factory(), world.unit, run.path(key, algo))
            policies[algo], curves[algo] = trained.policy(), trained.learning_curve
    explained = None
    with _timed(timings, "bandits"):
        for (name, hp), ss in zip(cfg.bandits.items(), ss_bandits.spawn(max(1, len(cfg.bandits))), strict=False):
            say(f"  {name}: {cfg.bandit_days} online days x {cfg.bandit_users} users")
            agent, _ = train_bandit(name, hp, world, cfg, None, _seed(ss))
            policies[name] = agent
            explained = agent.explained
    return policies, curves, explained


def _optimum(table: pd.DataFrame) -> float | None:
    return table.attrs["optimum"]["reward_per_user"] if "optimum" in table.attrs else None


def _trajectory_ope(log: LoggedData | None, log_contexts: np.ndarray | None, eval_env: BatchedPushEnv,
                    objective: EnvObjective, policies: dict[str, BasePolicy], seed: int,
                    say: Callable[[str], Any]) -> pd.DataFrame | None:
    """The agents valued on the log's own user trajectories (None when the log cannot: no users, times or
    propensities, or an objective that is not an `Objective`); the optimum keeps state outside the observation
    and is left out."""
    if log is None or log_contexts is None or not isinstance(objective, Objective) or trajectory_skip_reason(log):
        return None
    targets = {n: p for n, p in policies.items() if n != OPTIMUM}
    say(f"  trajectory OPE of {len(targets)} agents on {log.n_rounds:,} logged decisions")
    return log_trajectory_ope(log, log_contexts, eval_env.dynamics, objective, targets, seed=seed)


def _evaluate(cfg: SequentialConfig, world: World, eval_env: BatchedPushEnv, trained: dict[str, BasePolicy],
              eval_seed: int, say: Callable[[str], Any]
              ) -> tuple[pd.DataFrame, dict[str, RolloutResult], dict[str, BasePolicy]]:
    """Every agent and the baselines in eval_env (cfg.eval_users users) x cfg.eval_seeds seeds: the table, the
    rollouts and the policies."""
    policies = trained | baseline_policies(eval_env.dynamics, world.config.diversity_weight, cfg.spacing_rules,
                                           cfg.fatigue_window, horizon=world.horizon)
    say(f"  evaluating {len(policies)} agents on {cfg.eval_users:,} users x {cfg.eval_seeds} seeds")
    results = {name: rollout(p, eval_env, None, cfg.eval_seeds, eval_seed) for name, p in policies.items()}
    table = pd.concat([r.to_frame(name) for name, r in results.items()])
    if OPTIMUM in policies:
        result = policies[OPTIMUM].result
        table.attrs["optimum"] = {"reward_per_user": result.mean, "exact": bool(result.exact), "method": result.method,
                                  "simulated": float(table.loc[OPTIMUM, "reward_per_user"])}
    return table, results, policies


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
        "spacing": {k: v for k, v in res.spacing.items() if not k.startswith("rl_")},
        **{k: v for k, v in res.spacing.items() if k.startswith("rl_")},
        "optimum": optimum_metrics(table),
        "pareto": points,
        "pareto_monotone": {a: m[0] != NOT_MONOTONE for a, m in res.shapes.items()},
        "pareto_shape": {a: m[0] for a, m in res.shapes.items()},
        "seconds": res.timings,
        "trajectory_ope": trajectory_metrics(res.trajectory) if res.trajectory is not None else {},
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


def learning_curve_plot(curves: dict[str, pd.DataFrame], references: pd.DataFrame, path: Path, title: str) -> Path:
    """Each RL agent's reward per user and pushes per user against timesteps, other agents' final values as lines."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric, label in ((axes[0], "reward_per_user", "reward per user-episode"),
                              (axes[1], "pushes_per_user", "pushes per user-episode")):
        for j, (algo, curve) in enumerate(curves.items()):
            if not len(curve):
                continue
            color = ("black", "dimgray", "darkgray")[j % 3]
            ax.plot(curve["timesteps"], curve[metric], "o-", color=color, label=f"{algo} ({PPO_CURVE_USERS} users x 3 seeds)")
            if metric == "reward_per_user":
                ax.fill_between(curve["timesteps"], curve["reward_per_user_ci_low"], curve["reward_per_user_ci_high"],
                                color=color, alpha=0.12)
        for i, (name, row) in enumerate(references.iterrows()):
            if name not in curves:
                ax.axhline(row[metric], ls="--", lw=1, color=colors[i % len(colors)], label=f"{name} (final eval)")
        ax.set_xlabel("RL timesteps (user-days)")
        ax.set_ylabel(label)
    axes[1].legend(*axes[0].get_legend_handles_labels(), fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)
