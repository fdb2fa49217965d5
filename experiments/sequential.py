"""The sequential part of `pushrl run`: when to push, with fatigue and churn on.

`sequential_section(cfg_seq, model=..., pool_contexts=..., ...)` builds a BatchedPushEnv over the
fitted response model and a pool of training users' encoded contexts, then
1. trains PPO (SB3) on it, trains contextual bandits online in the same env, and evaluates them
   with the baselines (always push a uniformly random promotion, never push, a myopic greedy on
   the response model) through the one `rollout` harness, on the same users and seeds;
2. sweeps λ (the weight of category novelty in the reward) for cheap agents and draws the
   accuracy (objective per push) – diversity (category novelty, coverage) front;
and adds two report sections. Wiring only: the env, the learners and the metrics are library calls.

The simulator pays the pipeline's objective (`Objective`: any declared reward, profit or a weighted
combination, with its cost per pushed action) in the response model's own reward names; the log's
no-push action (`no_push_action`, e.g. Hillstrom's "No E-Mail") is its push-nothing action, which
earns the organic outcomes the model predicts for it.

Units. Rewards differ by orders of magnitude between logs (OBD click ≈ 0.004 per push, Hillstrom
spend ≈ 1), so the costs and λ of `SequentialConfig` are given in *average pushes*: one unit is the
mean expected gross objective (before push costs) of a fresh push (no recent pushes, display slot 0)
over the pool's users and the pushable promotions. `unsubscribe_cost = 30` means an unsubscribe
costs what 30 average pushes earn (about one more 30-day horizon of daily pushes); λ = 1 makes a
never-seen category worth one average push. The section prints the absolute values too.

Files under `run.path(key)`: `ppo/` (SB3 checkpoints, config.json, learning_curve.csv),
`sequential/sequential.csv`, `sequential/ppo_learning_curve.png`, `sequential/pareto.csv`,
`sequential/pareto.png`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from pushrl.agents.bandits import BanditAgent, make_bandit  # noqa: E402
from pushrl.agents.rollout import RolloutResult, estimate, learn_online, rollout  # noqa: E402
from pushrl.agents.sb3_agents import SB3AgentConfig, train_sb3  # noqa: E402
from pushrl.envs.atomic import write_text  # noqa: E402
from pushrl.envs.batched_env import BatchedPushEnv  # noqa: E402
from pushrl.envs.env_config import EnvObjective, PushEnvConfig, Shop  # noqa: E402
from pushrl.envs.objectives import Objective  # noqa: E402
from pushrl.envs.push_env import PushDynamics  # noqa: E402
from pushrl.envs.response import ResponseFunction  # noqa: E402
from pushrl.experiments.outputs import RunFolder  # noqa: E402
from pushrl.experiments.pareto import ACCURACY, DIVERSITY, front_plot, mark_front  # noqa: E402
from pushrl.experiments.plots import save_figure  # noqa: E402
from pushrl.policies.baselines import greedy_probabilities  # noqa: E402
from pushrl.policies.policy import BasePolicy, ConstantPolicy  # noqa: E402

TABLE_METRICS = ("reward_per_user", "objective_per_user", "objective_per_push", "response_rate", "pushes_per_user",
                 "unsubscribe_rate", "catalogue_coverage", "category_novelty", "exposure_gini")
"""The agents' metrics in metrics.json, besides `<reward>_per_user` for each reward of the model."""
GREEDY = "greedy_myopic"
PPO_CURVE_USERS = 512
CONSTANT_CV = 0.01
"""Coefficient of variation of the expected objective below which the model counts as constant."""


from pushrl.experiments.sequential_config import SequentialConfig  # noqa: E402


def as_sequential_config(cfg: Any) -> SequentialConfig:
    """A validated SequentialConfig from a SequentialConfig, a DictConfig, a mapping or None (defaults)."""
    if isinstance(cfg, SequentialConfig):
        return SequentialConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)})
    if cfg is None:
        return SequentialConfig()
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(cfg, Mapping):
        raise TypeError(f"cfg_seq must be a SequentialConfig, a DictConfig or a mapping, got {type(cfg).__name__}")
    known = {f.name for f in dataclasses.fields(SequentialConfig)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"unknown sequential config key(s) {unknown}; allowed: {sorted(known)}")
    return SequentialConfig(**dict(cfg))


# --- the simulated shop ----------------------------------------------------------------------------


def objective_label(objective: EnvObjective) -> str:
    """The objective's name: an Objective's own, a reward's name, or "weighted" for a mapping."""
    if isinstance(objective, Objective):
        return objective.name
    return objective if isinstance(objective, str) else "weighted"


def objective_formula(dyn: PushDynamics, label: str) -> str:
    """What a simulated day pays, e.g. "profit = 0.3 × spend − the objective's cost of each push (0.1)"."""
    terms = " + ".join(f"{w:g} × {r}" for r, w in dyn.weights.items()).replace("+ -", "− ")
    text = label if terms in (label, f"1 × {label}") else f"{label} = {terms}"
    costs = dyn.action_costs[dyn.promotion_index]
    if costs.any():
        spread = f"{costs.min():.4g}" if np.ptp(costs) == 0 else f"{costs.min():.4g} to {costs.max():.4g}"
        text += f" − the objective's cost of each push ({spread})"
    return text


@dataclass(eq=False)
class World:
    """The simulated shop of the section: shop, env config (λ of the main comparison) and the unit."""

    shop: Shop
    config: PushEnvConfig
    horizon: int
    unit: float
    """Mean expected objective of a fresh push (the 'average push')."""
    notes: list[str]
    no_push_baseline: float | None
    """Mean expected objective of a day without a push (the no-push action's organic outcomes; None without one)."""
    label: str
    """The objective's name (report text)."""
    rewards: tuple[str, ...]
    """The response model's rewards, as the simulator reports them."""
    response_reward: str | None
    """The reward whose pushed rate is `response_rate` (the model's first binary reward; None without one)."""
    objective_costs: bool
    """Whether the objective itself charges for pushes (profit, weighted with costs)."""

    def factory(self, diversity_weight: float | None = None) -> Callable[[int], BatchedPushEnv]:
        """n_users -> BatchedPushEnv (SAME_STEP autoreset), λ (absolute) overriding the main one if given."""
        config = self.config if diversity_weight is None else dataclasses.replace(self.config, diversity_weight=diversity_weight)

        def make(n: int) -> BatchedPushEnv:
            return BatchedPushEnv(n, max_episode_steps=self.horizon, response=self.shop.response,
                                  contexts=self.shop.contexts, categories=self.shop.categories,
                                  action_ids=self.shop.action_ids, config=config)

        return make


def build_world(cfg: SequentialConfig, model: ResponseFunction, pool_contexts: np.ndarray, categories: np.ndarray,
                action_ids: np.ndarray, objective: EnvObjective, no_push_action: Any, rng: np.random.Generator) -> World:
    """The shop (a pool of cfg.n_users users), the env config in absolute units, and the notes."""
    ids = np.asarray(action_ids).tolist()
    if no_push_action is not None and no_push_action not in ids:
        raise ValueError(f"no_push_action {no_push_action!r} is not one of the log's action ids {ids[:20]}")
    pool = np.asarray(pool_contexts, dtype=np.float64)
    if pool.ndim != 2 or len(pool) == 0:
        raise ValueError(f"pool_contexts must be a non-empty (n_users, d) array, got shape {pool.shape}")
    if len(pool) > cfg.n_users:
        pool = pool[np.sort(rng.choice(len(pool), size=cfg.n_users, replace=False))]
    shop = Shop.build(model, pool, categories, action_ids)
    base = PushEnvConfig(objective=objective, no_push_action=no_push_action, horizon=cfg.horizon,
                         fatigue_window=cfg.fatigue_window, fatigue_factor=cfg.fatigue_factor,
                         churn_logit=cfg.churn_logit, churn_slope=cfg.churn_slope, frequency_cap=cfg.frequency_cap,
                         unsubscribe_penalty=0.0)
    probe = PushDynamics(base, shop)
    label = objective_label(objective)
    sample = shop.contexts[: min(len(shop.contexts), 2_000)]
    value = probe.expected_values(sample, np.zeros(len(sample)))
    pushable = value[:, probe.promotion_index]
    unit = float(pushable.mean())
    if not np.isfinite(unit) or unit <= 0:
        raise ValueError(f"the response model's mean expected {label} per push (before push costs) is {unit}: the "
                         "section's costs and λ are in units of it and need it > 0")
    notes = [f"objective: {objective_formula(probe, label)}", _outcome_note(probe)]
    no_push_baseline = None
    if probe.no_push_item is not None:
        organic = probe.expected_objective(sample, np.zeros(len(sample)))[:, -1]
        no_push_baseline = float(organic.mean())
        notes.append(f"`{no_push_action}` is the simulator's push-nothing action: a user not pushed on a day earns what "
                     f"the response model predicts for it ({no_push_baseline:.4g} {label} per user-day on average: "
                     "organic outcomes), so `never_push` earns that and a push pays only through its gain over it; "
                     f"it is not a promotion (coverage is over the {probe.n_allowed} pushable ones)")
    if float(pushable.std()) < CONSTANT_CV * unit:
        notes.append(f"the response model predicts (nearly) the same {label} for every user and promotion "
                     f"({unit:.4g}, relative spread {float(pushable.std()) / unit:.1%}; it kept the base rate), so which "
                     "promotion is pushed does not change the outcome here: only whether and when to push does")
    config = dataclasses.replace(base, unsubscribe_penalty=cfg.unsubscribe_cost * unit, push_cost=cfg.push_cost * unit,
                                 diversity_weight=cfg.diversity_weight * unit)
    mode = probe.fatigue_mode
    notes.append("fatigue: the response model reacts to recent pushes itself" if mode == "response" else
                 f"fatigue: the response model ignores recent pushes, so a push's expected outcomes are multiplied by "
                 f"{cfg.fatigue_factor:g}^(pushes in the last {cfg.fatigue_window} days): an assumption "
                 "(`sequential.fatigue_factor`), not learned from this log")
    costs = bool(probe.action_costs[probe.promotion_index].any())
    return World(shop, config, cfg.horizon, unit, notes, no_push_baseline, label, probe.outcomes, probe.response_reward,
                 costs)


def _outcome_note(dyn: PushDynamics) -> str:
    """How the simulator draws each reward (binary: Bernoulli; continuous: its expected value)."""
    if getattr(dyn.response, "reward_kinds", None) is None:
        return ("outcomes: the response model does not say which rewards are binary (`reward_kinds`), so every "
                f"outcome ({', '.join(dyn.outcomes)}) is paid as its expected value")
    binary = [r for r in dyn.outcomes if r in dyn.binary]
    money = [r for r in dyn.outcomes if r not in dyn.binary]
    parts = ([f"{', '.join(binary)} drawn as 0/1 outcomes of the model's probabilities (one shared uniform per "
              "pushed item or organic day, so nested outcomes stay nested)"] if binary else []) + \
            ([f"{', '.join(money)} paid as the model's expected value"] if money else [])
    return "outcomes: " + "; ".join(parts)


# --- agents that are not library learners ------------------------------------------------------------


class UniformPush(BasePolicy):
    """Always push: a uniformly random promotion every day (never the push-nothing action)."""

    def __init__(self, n_promotions: int) -> None:
        self._n = int(n_promotions)

    @property
    def n_actions(self) -> int:
        return self._n + 1

    def _probabilities(self, contexts: np.ndarray) -> np.ndarray:
        p = np.full((len(contexts), self._n + 1), 1.0 / self._n)
        p[:, -1] = 0.0
        return p


class MyopicGreedy(BasePolicy):
    """Each day the action with the highest expected one-day reward under the simulator's own rules.

    Push score of promotion a for an observation: E[objective | a] (with the env's fatigue and the
    objective's cost of a) + λ × novelty of a's category − push_cost − unsubscribe_penalty ×
    P(unsubscribe | recent pushes); push nothing scores E[objective | no push] (the no-push action's
    organic outcomes, 0 without one) and is chosen when no push scores more or the frequency cap is
    hit. It knows the response model exactly but ignores what today's push does to tomorrow: the
    myopic optimum. `max_recent` = k: push nothing to users with more than k pushes in the fatigue
    window (a spacing rule).
    """

    def __init__(self, dynamics: PushDynamics, diversity_weight: float, max_recent: int | None = None) -> None:
        self.dyn, self.lam, self.max_recent = dynamics, float(diversity_weight), max_recent
        self.n_features = dynamics.obs_dim
        self._cats = dynamics.categories[dynamics.promotion_index]

    @property
    def n_actions(self) -> int:
        return self.dyn.n_allowed + 1

    def scores(self, obs: np.ndarray) -> np.ndarray:
        """(n, n_allowed + 1) expected one-day reward of each action (last: push nothing)."""
        dyn, c, d = self.dyn, self.dyn.config, self.dyn.d
        recent = obs[:, d].astype(np.float64)
        value = dyn.expected_objective(obs[:, :d].astype(np.float64), recent)  # the env's own rules exactly
        novelty = 1.0 / (1.0 + obs[:, d + 3 + self._cats].astype(np.float64))
        p_unsub = dyn.unsubscribe_probability(recent)
        push = value[:, :-1] + self.lam * novelty - c.push_cost - c.unsubscribe_penalty * p_unsub[:, None]
        push[obs[:, -1] > 0.5] = -np.inf  # cap hit: a push would be refused
        if self.max_recent is not None:
            push[recent > self.max_recent + 0.5] = -np.inf
        return np.hstack([push, value[:, -1:]])

    def _probabilities(self, contexts: np.ndarray) -> np.ndarray:
        return greedy_probabilities(self.scores(contexts))


class ObservationBandit(BasePolicy):
    """A contextual bandit on compact features of the env observation (rewards in average pushes).

    features = [top-k principal components of the context, the history part of the observation, 1];
    `update` divides rewards by `reward_scale` so exploration settings mean the same on every log.
    """

    def __init__(self, name: str, hparams: Mapping[str, Any], dynamics: PushDynamics, pool: np.ndarray, dims: int,
                 reward_scale: float, seed: int) -> None:
        self.d, self.reward_scale = dynamics.d, float(reward_scale)
        self.n_features = dynamics.obs_dim
        self.mean = pool.mean(axis=0)
        _, s, vt = np.linalg.svd(pool - self.mean, full_matrices=False)
        k = min(dims, vt.shape[0])
        self.projection = vt[:k].T  # (d, k)
        total = float((s**2).sum())
        self.explained = float((s[:k] ** 2).sum() / total) if total > 0 else 1.0
        width = k + (dynamics.obs_dim - self.d) + 1
        self.bandit: BanditAgent = make_bandit(name, n_actions=dynamics.n_allowed + 1, n_features=width, seed=seed,
                                               **dict(hparams))

    @property
    def n_actions(self) -> int:
        return self.bandit.n_actions

    def features(self, obs: np.ndarray) -> np.ndarray:
        x = np.asarray(obs, dtype=np.float64)
        z = (x[:, : self.d] - self.mean) @ self.projection
        return np.hstack([z, x[:, self.d:], np.ones((len(x), 1))])

    def _probabilities(self, contexts: np.ndarray) -> np.ndarray:
        return self.bandit.action_probabilities(self.features(contexts))

    def act(self, contexts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return self.bandit.act(self.features(contexts), rng)

    def update(self, contexts: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        self.bandit.update(self.features(contexts), actions, np.asarray(rewards, dtype=np.float64) / self.reward_scale)


def train_bandit(name: str, hparams: Mapping[str, Any], world: World, cfg: SequentialConfig, diversity_weight: float | None,
                 seed: int) -> tuple[ObservationBandit, np.ndarray]:
    """A bandit trained online (`learn_online`) in the world's env; returns it and its per-day mean reward."""
    env = world.factory(diversity_weight)(cfg.bandit_users)
    agent = ObservationBandit(name, hparams, env.dynamics, world.shop.contexts, cfg.bandit_context_dims, world.unit, seed)
    res = learn_online(agent, env, cfg.bandit_days, batch=1, seed=seed)
    return agent, res.mean_reward


# --- the section ----------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return "nan" if not np.isfinite(x) else f"{x:.4g}"


def _ci(frame: pd.DataFrame, name: str, metric: str) -> str:
    r = frame.loc[name]
    return f"{_fmt(r[metric])} [{_fmt(r[f'{metric}_ci_low'])}, {_fmt(r[f'{metric}_ci_high'])}]"


def compare(a: RolloutResult, b: RolloutResult, metric: str = "reward_per_user") -> dict[str, Any]:
    """Is a better than b on `metric`? Non-overlapping 95% CIs over seeds, and the paired difference per seed."""
    ea, eb = a.metrics[metric], b.metrics[metric]
    if ea.ci_low > eb.ci_high:
        verdict = "better"
    elif ea.ci_high < eb.ci_low:
        verdict = "worse"
    else:
        verdict = "overlap"
    diff = estimate(a.per_seed[metric] - b.per_seed[metric])
    return {"verdict": verdict, "difference": diff.mean, "difference_ci_low": diff.ci_low, "difference_ci_high": diff.ci_high}


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


def _monotone(points: pd.DataFrame) -> tuple[str, float]:
    """Over one agent's sweep: "flat" (one accuracy at every λ), "monotone" (accuracy never rises as
    novelty rises) or "not monotone"; and the Spearman rank correlation of accuracy and novelty."""
    p = points.dropna(subset=[ACCURACY, DIVERSITY]).sort_values([DIVERSITY, ACCURACY], ascending=[True, False])
    acc = p[ACCURACY].to_numpy()
    if len(p) < 2 or np.ptp(acc) <= 1e-12 * max(1.0, float(np.abs(acc).max())):
        return "flat", float("nan")
    rho = float(p[[ACCURACY, DIVERSITY]].rank().corr().iloc[0, 1])
    return ("monotone" if np.all(np.diff(acc) <= 1e-12) else "not monotone"), rho


def pareto_sweep(cfg: SequentialConfig, world: World, seed: int, eval_seed: int, say) -> pd.DataFrame:
    """One point per (agent, λ): the agent trained (bandits) and evaluated with λ x unit in the reward."""
    rows = []
    seeds = np.random.SeedSequence(seed).spawn(len(cfg.pareto_agents) * len(cfg.lambdas))
    it = iter(seeds)
    for agent in cfg.pareto_agents:
        for lam in cfg.lambdas:
            ss = next(it)
            lam_abs = lam * world.unit
            factory = world.factory(lam_abs)
            env = factory(cfg.eval_users)
            if agent == "greedy":
                policy: BasePolicy = MyopicGreedy(env.dynamics, lam_abs)
            else:
                policy, _ = train_bandit(agent, cfg.bandits.get(agent, {}), world, cfg, lam_abs,
                                         int(ss.generate_state(1)[0] % 2**31))
            res = rollout(policy, env, None, cfg.eval_seeds, eval_seed)
            m = res.metrics
            row: dict[str, Any] = {"agent": agent, "lambda": lam, "lambda_abs": lam_abs}
            for metric in (ACCURACY, "response_rate", DIVERSITY, "catalogue_coverage", "pushes_per_user",
                           "unsubscribe_rate", "reward_per_user"):
                row.update({metric: m[metric].mean, f"{metric}_ci_low": m[metric].ci_low,
                            f"{metric}_ci_high": m[metric].ci_high})
            rows.append(row)
        say(f"  λ sweep: {agent} at {len(cfg.lambdas)} λ values done")
    table = mark_front(pd.DataFrame(rows))
    table.insert(0, "point", [f"{a}_lambda_{lam:g}" for a, lam in zip(table["agent"], table["lambda"], strict=True)])
    return table


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
    cfg = as_sequential_config(cfg_seq)
    if not cfg.enabled:
        return {"enabled": False}
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    ss_pool, ss_ppo, ss_bandits, ss_eval, ss_pareto = np.random.SeedSequence(seed).spawn(5)
    world = build_world(cfg, model, pool_contexts, categories, action_ids, objective, no_push_action,
                        np.random.default_rng(ss_pool))
    eval_seed = int(ss_eval.generate_state(1)[0] % 2**31)
    out_dir = run.path(key, "sequential", "sequential.csv").parent
    factory = world.factory()
    eval_env = factory(cfg.eval_users)
    n_promotions = eval_env.dynamics.n_allowed
    say(f"[bold]{key}[/bold]: sequential section: {len(world.shop.contexts):,} pool users, {n_promotions} pushable "
        f"promotions, {cfg.horizon}-day episodes, objective {world.label}")

    # PPO --------------------------------------------------------------------------------------
    t = time.perf_counter()
    ppo_seed = int(ss_ppo.generate_state(1)[0] % 2**31)
    eval_freq = max(1, cfg.ppo_timesteps // cfg.ppo_curve_points) if cfg.ppo_curve_points else 0
    sb3 = SB3AgentConfig(algo="ppo", total_timesteps=cfg.ppo_timesteps, n_envs=cfg.n_envs,
                         learning_rate=cfg.ppo_learning_rate, seed=ppo_seed, tensorboard_log=None,
                         checkpoint_freq=max(1, cfg.ppo_timesteps // 2), eval_freq=eval_freq, eval_users=PPO_CURVE_USERS,
                         eval_seeds=3, algo_kwargs={"n_steps": cfg.ppo_n_steps, "ent_coef": cfg.ppo_ent_coef})
    say(f"  ppo: {cfg.ppo_timesteps:,} user-days on {cfg.n_envs} users at a time")
    trained = train_sb3(sb3, factory, run.path(key, "ppo"))
    policies: dict[str, BasePolicy] = {"ppo": trained.policy()}
    timings["ppo"] = time.perf_counter() - t

    # bandits (online, same env) -----------------------------------------------------------------
    t = time.perf_counter()
    explained = None
    for (name, hp), ss in zip(cfg.bandits.items(), ss_bandits.spawn(max(1, len(cfg.bandits))), strict=False):
        say(f"  {name}: {cfg.bandit_days} online days x {cfg.bandit_users} users")
        agent, _ = train_bandit(name, hp, world, cfg, None, int(ss.generate_state(1)[0] % 2**31))
        policies[name] = agent
        explained = agent.explained
    timings["bandits"] = time.perf_counter() - t

    # baselines and evaluation -------------------------------------------------------------------
    t = time.perf_counter()
    policies[GREEDY] = MyopicGreedy(eval_env.dynamics, world.config.diversity_weight)
    if cfg.spacing_rules:
        for k in range(cfg.fatigue_window):
            policies[f"greedy_spaced_{k}"] = MyopicGreedy(eval_env.dynamics, world.config.diversity_weight, k)
    policies["uniform_push"] = UniformPush(n_promotions)
    policies["never_push"] = ConstantPolicy(n_promotions + 1, n_promotions)
    say(f"  evaluating {len(policies)} agents on {cfg.eval_users:,} users x {cfg.eval_seeds} seeds")
    results = {name: rollout(p, eval_env, None, cfg.eval_seeds, eval_seed) for name, p in policies.items()}
    table = pd.concat([r.to_frame(name) for name, r in results.items()])
    write_text(out_dir / "sequential.csv", table.to_csv())
    timings["evaluation"] = time.perf_counter() - t
    learning_curve_plot(trained.learning_curve, table, out_dir / "ppo_learning_curve.png",
                        f"{key}: PPO in the push simulator (fatigue and churn on)")

    # λ sweep ------------------------------------------------------------------------------------
    t = time.perf_counter()
    front = pareto_sweep(cfg, world, int(ss_pareto.generate_state(1)[0] % 2**31), eval_seed, say)
    write_text(out_dir / "pareto.csv", front.to_csv(index=False))
    front_plot(front.assign(label=[f"{a} λ={lam:g}" for a, lam in zip(front["agent"], front["lambda"], strict=True)]),
               out_dir / "pareto.png", f"{key}: accuracy–diversity front over λ ({', '.join(cfg.pareto_agents)})")
    timings["pareto"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_start

    comparisons = {b: compare(results["ppo"], results[b]) for b in cfg.bandits}
    spacing = _spacing(results)
    monotone = {a: _monotone(front[front["agent"] == a]) for a in cfg.pareto_agents}
    _sections(run, key, cfg, world, table, comparisons, spacing, front, monotone, trained.learning_curve, explained,
              timings)
    say(f"  sequential section done in {timings['total']:.0f} s")
    return _headline(cfg, world, table, comparisons, spacing, front, monotone, timings)


def _spacing(results: dict[str, RolloutResult]) -> dict[str, Any]:
    """The best spacing rule against the daily myopic greedy, and PPO against both (empty without rules)."""
    rules = [n for n in results if n.startswith("greedy_spaced_")]
    if not rules or GREEDY not in results:
        return {}
    best = max(rules, key=lambda n: results[n].metrics["reward_per_user"].mean)
    return {"best_rule": best, "rule_vs_greedy": compare(results[best], results[GREEDY]),
            "ppo_vs_rule": compare(results["ppo"], results[best]), "ppo_vs_greedy": compare(results["ppo"], results[GREEDY])}


def _headline(cfg: SequentialConfig, world: World, table: pd.DataFrame, comparisons: dict[str, dict[str, Any]],
              spacing: dict[str, Any], front: pd.DataFrame, monotone: dict[str, tuple[str, float]], timings: dict[str, float]) -> dict[str, Any]:
    metrics = TABLE_METRICS + tuple(f"{r}_per_user" for r in world.rewards)
    agents = {name: {m: float(table.loc[name, m]) for m in metrics}
              | {f"reward_per_user_ci_{s}": float(table.loc[name, f"reward_per_user_ci_{s}"]) for s in ("low", "high")}
              for name in table.index}
    best = str(table["reward_per_user"].idxmax())
    points = {r["point"]: {"agent": r["agent"], "lambda": float(r["lambda"]), ACCURACY: float(r[ACCURACY]),
                           DIVERSITY: float(r[DIVERSITY]), "catalogue_coverage": float(r["catalogue_coverage"]),
                           "non_dominated": bool(r["non_dominated"])} for r in front.to_dict("records")}
    return {
        "objective": world.label,
        "diversity_weight": cfg.diversity_weight,
        "unit": world.unit,
        "unsubscribe_penalty": world.config.unsubscribe_penalty,
        "agents": agents,
        "best_agent": best,
        "ppo_vs_bandits": comparisons,
        "ppo_beats_bandits": bool(comparisons) and all(c["verdict"] == "better" for c in comparisons.values()),
        "spacing": spacing,
        "pareto": points,
        "pareto_monotone": {a: m[0] != "not monotone" for a, m in monotone.items()},
        "pareto_shape": {a: m[0] for a, m in monotone.items()},
        "seconds": timings,
    }


def _sections(run: RunFolder, key: str, cfg: SequentialConfig, world: World, table: pd.DataFrame,
              comparisons: dict[str, dict[str, Any]], spacing: dict[str, Any], front: pd.DataFrame,
              monotone: dict[str, tuple[str, float]], curve: pd.DataFrame, explained: float | None,
              timings: dict[str, float]) -> None:
    c = world.config
    obj = world.label
    md = [f"Every agent runs in the push simulator over the response model: {len(world.shop.contexts):,} training users "
          f"as the pool, {cfg.horizon}-day episodes (one push opportunity a day), objective **{obj}**, evaluated on the "
          f"same {cfg.eval_users:,} users x {cfg.eval_seeds} seeds (95% t-intervals over seeds).", ""]
    besides = " besides the objective's own push cost" if world.objective_costs else ""
    md.append(f"Costs are in *average pushes* (1 = the mean expected {obj} of a rested push before push costs = "
              f"{world.unit:.4g}): an unsubscribe costs {cfg.unsubscribe_cost:g} ({c.unsubscribe_penalty:.4g}), a push "
              f"{cfg.push_cost:g} ({c.push_cost:.4g}){besides}, λ = {cfg.diversity_weight:g} ({c.diversity_weight:.4g}) "
              f"x category novelty. Churn, assumed (`sequential.churn_logit`, `churn_slope`), not learned from this log: "
              f"P(unsubscribe | push) = sigmoid({c.churn_logit:g} + {c.churn_slope:g} x "
              f"pushes in the last {c.fatigue_window} days); frequency cap: "
              + (f"{c.frequency_cap} per {c.cap_window} days." if c.frequency_cap else "none (spacing is the agents' call)."))
    md += [f"- {n}" for n in world.notes]
    md += ["", f"Agents: PPO ({cfg.ppo_timesteps:,} user-days); bandits {', '.join(cfg.bandits) or '(none)'} learning online "
           f"for {cfg.bandit_days} days x {cfg.bandit_users} users (one-day rewards: myopic)"
           + (f", on the top {cfg.bandit_context_dims} principal components of the context ({explained:.0%} of its "
              "variance) plus the history features" if explained is not None else "")
           + f"; `{GREEDY}` maximises the expected one-day reward with the response model itself; `uniform_push` "
           "pushes a random promotion every day; `never_push` sends nothing.", ""]
    md += _agent_table(world, table)
    md += ["", _verdict(table, comparisons, spacing), ""]
    if len(curve):
        first, last = curve.iloc[0], curve.iloc[-1]
        md.append(f"While training, PPO went from {_fmt(first.reward_per_user)} to {_fmt(last.reward_per_user)} reward per "
                  f"user and from {_fmt(first.pushes_per_user)} to {_fmt(last.pushes_per_user)} pushes per user "
                  f"({PPO_CURVE_USERS} users x 3 seeds per point; `{key}/ppo/learning_curve.csv`).")
    md += ["", f"![PPO learning curve]({key}/sequential/ppo_learning_curve.png)", "",
           f"Table with every metric and CI: `{key}/sequential/sequential.csv`; PPO checkpoints: `{key}/ppo/checkpoints/`. "
           f"Section time: {timings['total']:.0f} s (PPO {timings['ppo']:.0f} s, bandits {timings['bandits']:.0f} s, "
           f"evaluation {timings['evaluation']:.0f} s, λ sweep {timings['pareto']:.0f} s)."]
    run.add_section(f"{key}: when to push: PPO vs bandits with fatigue and churn on", "\n".join(md))
    run.add_section(f"{key}: accuracy–diversity front (λ sweep)", _pareto_markdown(key, cfg, world, front, monotone))


def _agent_table(world: World, table: pd.DataFrame) -> list[str]:
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
        cells = [_ci(table, name, "reward_per_user") if m is None else _fmt(table.loc[name, m]) for _, m in columns]
        md.append(f"| {name} | " + " | ".join(cells) + " |")
    return md


def _pareto_markdown(key: str, cfg: SequentialConfig, world: World, front: pd.DataFrame,
                     monotone: dict[str, tuple[str, float]]) -> str:
    """The λ-sweep section: what accuracy and diversity are, the points, and each agent's shape."""
    acc = f"{world.label} per push"
    pm = [f"For each λ (in average pushes; λ x category novelty is added to the reward of every push) the agents "
          f"{', '.join(cfg.pareto_agents)} are run on the same users and seeds. Accuracy = {acc} (the objective the "
          "pushed promotions earned, per push message), diversity = mean category novelty of the pushed promotions "
          "(1 = a category the user has not been pushed lately); coverage = share of the pushable catalogue pushed at "
          "all. Filled points are non-dominated.", "",
          f"| agent | λ | {acc} [95% CI] | novelty [95% CI] | coverage | pushes per user | non-dominated |",
          "|---|---|---|---|---|---|---|"]
    for r in front.to_dict("records"):
        pm.append(f"| {r['agent']} | {r['lambda']:g} | {_fmt(r[ACCURACY])} [{_fmt(r[ACCURACY + '_ci_low'])}, "
                  f"{_fmt(r[ACCURACY + '_ci_high'])}] | {_fmt(r[DIVERSITY])} [{_fmt(r[DIVERSITY + '_ci_low'])}, "
                  f"{_fmt(r[DIVERSITY + '_ci_high'])}] | {_fmt(r['catalogue_coverage'])} | {_fmt(r['pushes_per_user'])} | "
                  f"{'yes' if r['non_dominated'] else 'no'} |")
    pm.append("")
    for agent, (shape, rho) in monotone.items():
        pts = front[front["agent"] == agent]
        spread = pts[ACCURACY].max() - pts[ACCURACY].min()
        width = float(np.nanmean(pts[ACCURACY + "_ci_high"] - pts[ACCURACY + "_ci_low"]))
        noise = f" (the {acc} differences are within the CIs)" if np.isfinite(width) and spread <= width else ""
        nov = f"novelty {_fmt(pts[DIVERSITY].min())} to {_fmt(pts[DIVERSITY].max())}"
        if shape == "flat":
            pm.append(f"- **{agent}: flat** — the same {acc} ({_fmt(pts[ACCURACY].iloc[0])}) at every λ while "
                      f"{nov}: here diversity costs no accuracy.")
        elif shape == "monotone":
            pm.append(f"- **{agent}: monotone** — more diversity never came with a higher {acc} (rank correlation "
                      f"{_fmt(rho)}; {nov}){noise}.")
        else:
            pm.append(f"- **{agent}: not monotone** — somewhere along the sweep more diversity came with a higher "
                      f"{acc} (rank correlation of {acc} and novelty {_fmt(rho)}; {nov}){noise}.")
    pm += ["", f"![accuracy–diversity front]({key}/sequential/pareto.png)", "",
           f"Points with CIs: `{key}/sequential/pareto.csv`. A Hydra multirun over `sequential.diversity_weight` "
           "collects every job's agents into one front: `python -m pushrl.experiments.pareto MULTIRUN_DIR`."]
    return "\n".join(pm)


def _paired(cmp: dict[str, Any]) -> str:
    """The paired difference and, when the CIs overlap but it excludes 0, that it does."""
    lo, hi = cmp["difference_ci_low"], cmp["difference_ci_high"]
    text = f"paired difference over the shared seeds {_fmt(cmp['difference'])} [{_fmt(lo)}, {_fmt(hi)}]"
    if cmp["verdict"] == "overlap" and (lo > 0 or hi < 0):
        text += ", which excludes 0: on the same users and seeds the difference is real"
    return text


def _verdict(table: pd.DataFrame, comparisons: dict[str, dict[str, Any]], spacing: dict[str, Any]) -> str:
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
        return (f"`{name}` {_fmt(table.loc[name, 'pushes_per_user'])} pushes per user, unsubscribe rate "
                f"{_fmt(table.loc[name, 'unsubscribe_rate'])}")

    lines.append("- How often they push: " + "; ".join(habit(n) for n in ["ppo", *comparisons]) + ".")
    if spacing:
        rule, rg, pr = spacing["best_rule"], spacing["rule_vs_greedy"], spacing["ppo_vs_rule"]
        pays = {"better": "**spacing pays** in this simulator (non-overlapping CIs)", "worse": "spacing does not pay here",
                "overlap": "spacing is not a significant gain by non-overlapping CIs"}[rg["verdict"]]
        ppo_vs_rule = {"better": "PPO is above it", "worse": "PPO is below it",
                       "overlap": "PPO's CI overlaps it"}[pr["verdict"]]
        lines.append(f"- Is there anything to learn about *when*? The best spacing rule `{rule}` (the myopic greedy, "
                     f"pushing only to users with at most {rule.rsplit('_', 1)[1]} pushes in the fatigue window) earns "
                     f"{_ci(table, rule, 'reward_per_user')} vs {_ci(table, GREEDY, 'reward_per_user')} for the daily "
                     f"myopic greedy ({_paired(rg)}): {pays}; {ppo_vs_rule} ({_paired(pr)}).")
    best = str(table["reward_per_user"].idxmax())
    lines.append(f"- Highest reward per user: `{best}` ({_ci(table, best, 'reward_per_user')}).")
    return "\n".join(lines)
