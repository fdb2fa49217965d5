"""Report text of the sequential section: the comparison section (setup, agent table, verdict) and the λ-sweep section.

Rendering only: every number comes from `SequentialResults`, built by
`pushrl.experiments.sequential.sequential_section`; numbers are written with
`pushrl.experiments.formatting` (fmt, fmt_ci).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pushrl.agents.sequential_config import SequentialConfig
from pushrl.agents.timing_study import GREEDY, PPO_CURVE_USERS
from pushrl.envs.sim.dynamics_summary import DynamicsSummary
from pushrl.envs.sim.world import World
from pushrl.experiments.formatting import fmt, fmt_ci
from pushrl.experiments.outputs import RunFolder
from pushrl.policies.pareto import ACCURACY, DIVERSITY, FLAT, MONOTONE


@dataclass(eq=False)
class SequentialResults:
    """What the section computed, for the headline metrics and the report text."""

    cfg: SequentialConfig
    world: World
    table: pd.DataFrame
    """One row per agent: every rollout metric with its CI (`RolloutResult.to_frame`)."""
    comparisons: dict[str, dict[str, Any]]
    """Bandit name -> `compare(ppo, bandit)`."""
    spacing: dict[str, Any]
    """`spacing_comparison(results)` ({} without spacing rules)."""
    front: pd.DataFrame
    """`pareto_sweep`'s points."""
    shapes: dict[str, tuple[str, float]]
    """Sweep agent -> `front_shape` of its points."""
    curve: dict[str, pd.DataFrame]
    """Each RL agent's learning curve (ppo, dqn, a2c)."""
    explained: float | None
    """Share of context variance the bandits' principal components keep (None without bandits)."""
    timings: dict[str, float]
    dynamics: DynamicsSummary | None = None
    """Fatigue and churn by recent pushes, and whether the log taught them."""
    sensitivity: pd.DataFrame | None = None
    """`sensitivity_study` rows (None when the dynamics are learned)."""
    sensitivity_summary: dict[str, Any] | None = None
    """`winner_changes` of the sensitivity rows."""
    trajectory: pd.DataFrame | None = None
    """`log_trajectory_ope` rows (agent x estimator) on the log's own trajectories (None: the log cannot)."""


def _ci(frame: pd.DataFrame, name: str, metric: str) -> str:
    r = frame.loc[name]
    return fmt_ci(r[metric], r[f"{metric}_ci_low"], r[f"{metric}_ci_high"])


def add_sections(run: RunFolder, key: str, res: SequentialResults) -> None:
    """The two report sections: the comparison and the λ sweep."""
    run.add_section(f"{key}: when to push: PPO vs bandits with fatigue and churn on", comparison_markdown(key, res))
    run.add_section(f"{key}: accuracy–diversity front (λ sweep)", pareto_markdown(key, res))
    if res.dynamics is not None:
        run.add_section(f"{key}: what the simulator assumes about timing", dynamics_markdown(key, res))
    if res.trajectory is not None:
        run.add_section(f"{key}: the timing agents on the log's own trajectories (trajectory OPE)",
                        trajectory_markdown(key, res))


def trajectory_markdown(key: str, res: SequentialResults) -> str:
    """Each agent's simulator value next to its trajectory OPE estimates on the log."""
    tab = res.trajectory
    ests = list(dict.fromkeys(tab.index.get_level_values("estimator")))
    md = ["One-step OPE cannot value a policy whose pushes change tomorrow's state; these estimators weight each "
          "logged user's whole sequence of decisions (per-decision importance sampling, its weighted form, and the "
          "doubly robust forms with the simulator's one-step expected reward as Q; users are the bootstrap unit). The "
          "log's users span the log's days, the simulator's users its horizon, so the two columns agree in order "
          "more than in level.", "",
          "| agent | simulator reward per user [95% CI] | " + " | ".join(ests) + " | ESS (users) |",
          "|---" * (len(ests) + 3) + "|"]
    for agent in dict.fromkeys(tab.index.get_level_values("agent")):
        rows = tab.loc[agent]
        sim = _ci(res.table, agent, "reward_per_user") if agent in res.table.index else "n/a"
        cells = [fmt_ci(rows.loc[e, "value"], rows.loc[e, "ci_low"], rows.loc[e, "ci_high"]) for e in ests]
        md.append(f"| {agent} | {sim} | " + " | ".join(cells) + f" | {rows['ess'].iloc[0]:.0f} |")
    md += ["", f"Table: `{key}/sequential/trajectory_ope.csv`."]
    return "\n".join(md)


def dynamics_markdown(key: str, res: SequentialResults) -> str:
    """Fatigue and churn by recent pushes, their source, and (where assumed) the sensitivity table."""
    d, cfg = res.dynamics, res.cfg
    source = {"learned": "learned from the log", "assumed": "assumed (config), not learned from this log"}
    md = [f"Dynamics source: **{d.source}**. Fatigue: {source[d.fatigue_source]}"
          + (f" (`sequential.fatigue_factor` = {cfg.fatigue_factor:g})" if d.fatigue_source == "assumed" else "")
          + f"; churn: {source[d.churn_source]}"
          + (f" (`sequential.churn_logit` = {cfg.churn_logit:g}, `churn_slope` = {cfg.churn_slope:g})"
             if d.churn_source == "assumed" else " (the response model's unsubscribe head)") + ".", "",
          f"| pushes in the last {cfg.fatigue_window} days | fatigue multiplier | P(unsubscribe \\| push) |",
          "|---|---|---|"]
    md += [f"| {r} | {fmt(d.fatigue_multiplier[r])} | {fmt(d.unsubscribe_probability[r])} |" for r in d.fatigue_multiplier]
    md += ["", "The fatigue multiplier is a push's expected objective after r recent pushes relative to a rested push, "
           "averaged over the pool's users and the pushable promotions.", "",
           f"![fatigue and churn]({key}/sequential/dynamics.png)"]
    if res.sensitivity is not None and len(res.sensitivity):
        md += ["", _sensitivity_markdown(res.sensitivity, res.sensitivity_summary or {}, d.assumed_parts)]
    elif d.source == "assumed":
        md += ["", "No sensitivity table: it needs `sequential.spacing_rules`."]
    return "\n".join(md)


def _sensitivity_markdown(table: pd.DataFrame, summary: dict[str, Any], parts: tuple[str, ...]) -> str:
    """Winner (and its reward per user) of each cell of the assumed fatigue x churn grid."""
    cells = table[table["agent"] == table["winner"]]
    fatigue = sorted(cells["fatigue_factor"].unique())
    churn = sorted(cells["churn_logit"].unique())
    exact = set(table.get("method", pd.Series(["rollout"]))) == {"exact"}
    how = ("their exact expected reward per user over the pool (the optimum's recursion, no sampling noise)"
           if exact else "rolled out in the simulator")
    md = [f"Sensitivity to the assumed {' and '.join(parts)}: the untrained rules (the myopic greedy, its spacing "
          f"rules, uniform_push, never_push) re-run with other values, {how}; each cell names the best rule and its "
          "reward per user, and the optimum's value in brackets.", "",
          "| fatigue_factor \\ churn_logit | " + " | ".join(f"{c:g}" for c in churn) + " |",
          "|---" * (len(churn) + 1) + "|"]
    for f in fatigue:
        row = []
        for c in churn:
            hit = cells[(cells["fatigue_factor"] == f) & (cells["churn_logit"] == c)]
            opt = table[(table["fatigue_factor"] == f) & (table["churn_logit"] == c) & (table["agent"] == "optimum")]
            bar = f" [{fmt(opt['reward_per_user'].iloc[0])}]" if len(opt) else ""
            row.append(f"`{hit['winner'].iloc[0]}` {fmt(hit['reward_per_user'].iloc[0])}{bar}" if len(hit) else "")
        md.append(f"| {f:g} | " + " | ".join(row) + " |")
    changes = summary.get("winner_changes")
    md += ["", ("**The winner changes** across these values: which timing rule is best rests on the assumption; "
                "log repeat users with `user_id`, `timestamp` (and an `unsubscribe` column) to learn it."
                if changes else "The winner is the same in every cell: the choice does not rest on these values.")]
    return "\n".join(md)


def _setup(res: SequentialResults) -> list[str]:
    """Who runs where, and the costs in average pushes and in the objective's units."""
    cfg, world, c, obj = res.cfg, res.world, res.world.config, res.world.label
    md = [f"Every agent runs in the push simulator over the response model: {len(world.shop.contexts):,} training users "
          f"as the pool, {cfg.horizon}-day episodes (one push opportunity a day), objective **{obj}**, evaluated on the "
          f"same {cfg.eval_users:,} users x {cfg.eval_seeds} seeds (95% t-intervals over seeds).", ""]
    besides = " besides the objective's own push cost" if world.objective_costs else ""
    md.append(f"Costs are in *average pushes* (1 = the mean expected {obj} of a rested push before push costs = "
              f"{fmt(world.unit)}): an unsubscribe costs {cfg.unsubscribe_cost:g} ({fmt(c.unsubscribe_penalty)}), a push "
              f"{cfg.push_cost:g} ({fmt(c.push_cost)}){besides}, λ = {cfg.diversity_weight:g} ({fmt(c.diversity_weight)}) "
              f"x category novelty. " + _churn_text(res) + "; frequency cap: "
              + (f"{c.frequency_cap} per {c.cap_window} days." if c.frequency_cap else "none (spacing is the agents' call)."))
    md += [f"- {n}" for n in world.notes]
    md += ["", f"Agents: {', '.join(a.upper() for a in cfg.rl_agents)} ({cfg.ppo_timesteps:,} user-days each) decide *when* "
           f"to push (two actions, normalised features, rewards in average pushes; the myopic greedy picks *which* "
           f"promotion: docs/RL_TIMING.md); bandits {', '.join(cfg.bandits) or '(none)'} learning online "
           f"for {cfg.bandit_days} days x {cfg.bandit_users} users (one-day rewards: myopic)"
           + (f", on the top {cfg.bandit_context_dims} principal components of the context ({res.explained:.0%} of its "
              "variance) plus the history features" if res.explained is not None else "")
           + f"; `{GREEDY}` maximises the expected one-day reward with the response model itself; `uniform_push` "
           "pushes a random promotion every day; `never_push` sends nothing.", ""]
    return md


def _churn_text(res: SequentialResults) -> str:
    c = res.world.config
    if res.dynamics is not None and res.dynamics.churn_source == "learned":
        return "Churn, learned from the log: P(unsubscribe | push) is the response model's unsubscribe head"
    return (f"Churn, assumed (`sequential.churn_logit`, `churn_slope`), not learned from this log: "
            f"P(unsubscribe | push) = sigmoid({c.churn_logit:g} + {c.churn_slope:g} x pushes in the last "
            f"{c.fatigue_window} days)")


def comparison_markdown(key: str, res: SequentialResults) -> str:
    """The comparison section: setup, agent table, verdict, PPO's learning curve, files and timings."""
    md = _setup(res) + agent_table(res.world, res.table) + ["", verdict(res.table, res.comparisons, res.spacing), ""]
    timings = res.timings
    for algo, curve in res.curve.items():
        if len(curve):
            first, last = curve.iloc[0], curve.iloc[-1]
            md.append(f"While training, {algo.upper()} went from {fmt(first.reward_per_user)} to "
                      f"{fmt(last.reward_per_user)} reward per user and from {fmt(first.pushes_per_user)} to "
                      f"{fmt(last.pushes_per_user)} pushes per user ({PPO_CURVE_USERS} users x 3 seeds per point; "
                      f"`{key}/{algo}/learning_curve.csv`).")
    rl_time = ", ".join(f"{a.upper()} {timings[a]:.0f} s" for a in res.curve if a in timings)
    md += ["", f"![RL learning curves]({key}/sequential/ppo_learning_curve.png)", "",
           f"Table with every metric and CI: `{key}/sequential/sequential.csv`; RL checkpoints: `{key}/<algo>/checkpoints/`. "
           f"Section time: {timings['total']:.0f} s ({rl_time}, bandits {timings['bandits']:.0f} s, "
           f"evaluation {timings['evaluation']:.0f} s, λ sweep {timings['pareto']:.0f} s)."]
    return "\n".join(md)


def agent_table(world: World, table: pd.DataFrame) -> list[str]:
    """The comparison table: reward, the objective and every reward per user, response rate, habits, diversity."""
    columns = [("reward per user [95% CI]", None)]
    if world.label not in world.rewards:
        columns.append((f"{world.label} per user", "objective_per_user"))
    columns += [(f"{r} per user", f"{r}_per_user") for r in world.rewards]
    if world.response_reward is not None:
        columns.append((f"{world.response_reward} per push", "response_rate"))
    columns += [("pushes per user", "pushes_per_user"), ("unsubscribe rate", "unsubscribe_rate"),
                ("coverage", "catalogue_coverage"), ("novelty", "category_novelty"), ("Gini", "exposure_gini")]
    md = ["| agent | " + " | ".join(h for h, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name in table.index:
        cells = [_ci(table, name, "reward_per_user") if m is None else fmt(table.loc[name, m]) for _, m in columns]
        md.append(f"| {name} | " + " | ".join(cells) + " |")
    return md


def _shape_line(agent: str, shape: str, rho: float, pts: pd.DataFrame, acc: str) -> str:
    """One sweep agent's shape: flat, monotone or not, with the novelty range and whether the CIs cover it."""
    spread = pts[ACCURACY].max() - pts[ACCURACY].min()
    width = float(np.nanmean(pts[ACCURACY + "_ci_high"] - pts[ACCURACY + "_ci_low"]))
    noise = f" (the {acc} differences are within the CIs)" if np.isfinite(width) and spread <= width else ""
    nov = f"novelty {fmt(pts[DIVERSITY].min())} to {fmt(pts[DIVERSITY].max())}"
    if shape == FLAT:
        return (f"- **{agent}: flat** — the same {acc} ({fmt(pts[ACCURACY].iloc[0])}) at every λ while "
                f"{nov}: here diversity costs no accuracy.")
    if shape == MONOTONE:
        return (f"- **{agent}: monotone** — more diversity never came with a higher {acc} (rank correlation "
                f"{fmt(rho)}; {nov}){noise}.")
    return (f"- **{agent}: not monotone** — somewhere along the sweep more diversity came with a higher "
            f"{acc} (rank correlation of {acc} and novelty {fmt(rho)}; {nov}){noise}.")


def pareto_markdown(key: str, res: SequentialResults) -> str:
    """The λ-sweep section: what accuracy and diversity are, the points, and each agent's shape."""
    acc, front = f"{res.world.label} per push", res.front
    pm = [f"For each λ (in average pushes; λ x category novelty is added to the reward of every push) the agents "
          f"{', '.join(res.cfg.pareto_agents)} are run on the same users and seeds. Accuracy = {acc} (the objective the "
          "pushed promotions earned, per push message), diversity = mean category novelty of the pushed promotions "
          "(1 = a category the user has not been pushed lately); coverage = share of the pushable catalogue pushed at "
          "all. Filled points are non-dominated.", "",
          f"| agent | λ | {acc} [95% CI] | novelty [95% CI] | coverage | pushes per user | non-dominated |",
          "|---|---|---|---|---|---|---|"]
    for r in front.to_dict("records"):
        pm.append(f"| {r['agent']} | {r['lambda']:g} | {fmt_ci(r[ACCURACY], r[ACCURACY + '_ci_low'], r[ACCURACY + '_ci_high'])} | "
                  f"{fmt_ci(r[DIVERSITY], r[DIVERSITY + '_ci_low'], r[DIVERSITY + '_ci_high'])} | "
                  f"{fmt(r['catalogue_coverage'])} | {fmt(r['pushes_per_user'])} | {'yes' if r['non_dominated'] else 'no'} |")
    pm.append("")
    pm += [_shape_line(agent, shape, rho, front[front["agent"] == agent], acc) for agent, (shape, rho) in res.shapes.items()]
    pm += ["", f"![accuracy–diversity front]({key}/sequential/pareto.png)", "",
           f"Points with CIs: `{key}/sequential/pareto.csv`. A Hydra multirun over `sequential.diversity_weight` "
           "collects every job's agents into one front: `python -m pushrl.experiments.pareto MULTIRUN_DIR`."]
    return "\n".join(pm)


def _paired(cmp: dict[str, Any]) -> str:
    """The paired difference and, when the CIs overlap but it excludes 0, that it does."""
    lo, hi = cmp["difference_ci_low"], cmp["difference_ci_high"]
    text = f"paired difference over the shared seeds {fmt_ci(cmp['difference'], lo, hi)}"
    if cmp["verdict"] == "overlap" and (lo > 0 or hi < 0):
        text += ", which excludes 0: on the same users and seeds the difference is real"
    return text


def _spacing_line(table: pd.DataFrame, spacing: dict[str, Any]) -> str:
    """Does spacing pushes pay, and where PPO stands against the best spacing rule."""
    rule, rg, pr = spacing["best_rule"], spacing["rule_vs_greedy"], spacing["ppo_vs_rule"]
    pays = {"better": "**spacing pays** in this simulator (non-overlapping CIs)", "worse": "spacing does not pay here",
            "overlap": "spacing is not a significant gain by non-overlapping CIs"}[rg["verdict"]]
    ppo_vs_rule = {"better": "PPO is above it", "worse": "PPO is below it", "overlap": "PPO's CI overlaps it"}[pr["verdict"]]
    return (f"- Is there anything to learn about *when*? The best spacing rule `{rule}` (the myopic greedy, "
            f"pushing only to users with at most {rule.rsplit('_', 1)[1]} pushes in the fatigue window) earns "
            f"{_ci(table, rule, 'reward_per_user')} vs {_ci(table, GREEDY, 'reward_per_user')} for the daily "
            f"myopic greedy ({_paired(rg)}): {pays}; {ppo_vs_rule} ({_paired(pr)}).")


def _rl_line(table: pd.DataFrame, spacing: dict[str, Any]) -> str:
    """The best RL agent: its share of the optimum and its paired difference to the best spacing rule."""
    best, share = spacing["rl_best"], spacing.get("rl_best_share_of_optimum")
    text = f"- Best RL agent: `{best}` ({_ci(table, best, 'reward_per_user')})"
    if share is not None:
        text += f", {share:.1%} of the DP optimum's exact value ({'meets' if share >= 0.95 else 'misses'} the 95% bar)"
    cmp = spacing.get("rl_vs_best_rule")
    if cmp:
        word = {"better": "above", "worse": "**below**", "overlap": "not significantly different from"}[cmp["verdict"]]
        text += f"; {word} the best spacing rule `{cmp['rule']}` ({_paired(cmp)})"
    return text + "."


def verdict(table: pd.DataFrame, comparisons: dict[str, dict[str, Any]], spacing: dict[str, Any]) -> str:
    """PPO against each bandit, how often they push, the spacing question, and the best agent."""
    if not comparisons:
        return "No bandits configured: nothing to compare PPO with."
    lines = []
    for b, cmp in comparisons.items():
        what = {"better": f"**PPO beats {b}**: the 95% CIs of reward per user do not overlap",
                "worse": f"**{b} beats PPO**: the 95% CIs of reward per user do not overlap",
                "overlap": f"**PPO does not significantly beat {b}**: the 95% CIs of reward per user overlap"}[cmp["verdict"]]
        lines.append(f"- {what} (PPO {_ci(table, 'ppo', 'reward_per_user')} vs {_ci(table, b, 'reward_per_user')}; "
                     f"{_paired(cmp)}).")

    def habit(name: str) -> str:
        return (f"`{name}` {fmt(table.loc[name, 'pushes_per_user'])} pushes per user, unsubscribe rate "
                f"{fmt(table.loc[name, 'unsubscribe_rate'])}")

    lines.append("- How often they push: " + "; ".join(habit(n) for n in ["ppo", *comparisons]) + ".")
    if spacing.get("best_rule"):
        lines.append(_spacing_line(table, spacing))
    if spacing.get("rl_best"):
        lines.append(_rl_line(table, spacing))
    best = str(table["reward_per_user"].idxmax())
    lines.append(f"- Highest reward per user: `{best}` ({_ci(table, best, 'reward_per_user')}).")
    return "\n".join(lines)
