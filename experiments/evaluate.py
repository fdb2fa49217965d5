"""`pushrl evaluate`: OPE of one policy on a log, written to evaluation.json (wiring only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from pushrl.envs.atomic import write_json
from pushrl.envs.logged_data import LoggedData
from pushrl.envs.objectives import Objective
from pushrl.envs.split import split_indices, split_log
from pushrl.experiments import plots
from pushrl.experiments.outputs import RunFolder
from pushrl.experiments.pipeline import choose_estimator
from pushrl.policies.evaluation import EstimatorSettings, PolicyEvaluation, evaluate_policy
from pushrl.policies.external import ExternalPolicy, load_external_policy
from pushrl.policies.ope import cross_fit_mean_rewards

SPLITS = ("test", "all")
POLICY_KINDS = ("external", "uniform", "always", "artifact")


def eval_rows(cfg: DictConfig, data: LoggedData) -> np.ndarray:
    """Row indices (into the whole log) that are evaluated: every row, or the held-out test split."""
    if cfg.eval.split not in SPLITS:
        raise ValueError(f"eval.split must be one of {SPLITS}, got {cfg.eval.split!r}")
    if cfg.eval.split == "all":
        return np.arange(data.n_rounds)
    return split_indices(data, tuple(cfg.split.fractions), seed=cfg.split.seed)[2]


def policy_action_dist(cfg: DictConfig, data: LoggedData, rows: np.ndarray) -> tuple[str, np.ndarray]:
    """(name, (len(rows), n_actions, n_positions)) probabilities of the configured policy."""
    p = cfg.policy
    n, a, k = len(rows), data.n_actions, data.n_positions
    if p.kind == "external":
        if not p.path:
            raise ValueError("policy.path is required for policy=external")
        ext: ExternalPolicy = load_external_policy(p.path, data.n_rounds, a, k)
        return p.name or ext.name, ext.rows(rows)
    if p.kind == "artifact":
        return artifact_action_dist(p, data, rows)
    if p.kind == "uniform":
        return p.name or "uniform", np.full((n, a, k), 1.0 / a)
    if p.kind == "always":
        ids = [str(x) for x in data.action_ids.tolist()]
        if str(p.action) not in ids:
            raise ValueError(f"policy.action {p.action!r} is not an action id of {data.name}; known: {ids[:10]}")
        dist = np.zeros((n, a, k))
        dist[:, ids.index(str(p.action)), :] = 1.0
        return p.name or f"always {p.action}", dist
    raise ValueError(f"policy.kind must be one of {POLICY_KINDS}, got {p.kind!r}")


def artifact_action_dist(p, data: LoggedData, rows: np.ndarray) -> tuple[str, np.ndarray]:
    """An exported artifact's probabilities on the log's rows, through the serving runtime (its own preprocessing)."""
    from pushrl.policies.serving.runtime import PolicyRuntime

    if not p.path:
        raise ValueError("policy.path is required for policy=artifact (an artifact folder)")
    runtime = PolicyRuntime.load(p.path, seed=0)
    ids = [str(a) for a in runtime.manifest.action_ids]
    log_ids = [str(a) for a in data.action_ids.tolist()]
    if ids != log_ids:
        raise ValueError(f"artifact {p.path} scores actions {ids[:5]}... but {data.name} logs {log_ids[:5]}...: "
                         "the evaluation policy must have the log's action set")
    fields = runtime.manifest.encoder.input_fields
    missing = [f for f in fields if f not in data.frame.columns]
    if missing:
        raise ValueError(f"artifact {p.path} needs context fields {missing} that {data.name} does not have")
    contexts = data.frame.iloc[rows][fields].to_dict(orient="records")
    probs = runtime.action_probabilities(runtime.encode(contexts))
    return p.name or runtime.manifest.policy_kind, np.repeat(probs[:, :, None], data.n_positions, axis=2)


UNIDENTIFIED_HELP = ("What to do: read DM and the simulator's value (both rest on a reward model, so treat them "
                     "as model-based guesses), or collect exploratory data first: serve with exploration (an "
                     "epsilon or softmax artifact, or shadow mode beside the current policy) and evaluate again.")
LOW_PROPENSITY = 0.01
MAX_LOW_MASS = 0.05


def identification(data: LoggedData, rows: np.ndarray, dist: np.ndarray, run: RunFolder) -> tuple[bool, str]:
    """Are IPS-family estimates identified? Not for deterministic logging, nor when the candidate puts more than
    5% of its mass where estimated logging probabilities are below 0.01. Returns (identified, why not)."""
    from pushrl.envs.regime import classify_regime

    regime = classify_regime(data)
    if regime.regime == "deterministic":
        return False, (f"IPS-family estimates are not identified: logging was deterministic ({regime.evidence}), so "
                       "the log never shows what other actions would have done. " + UNIDENTIFIED_HELP)
    est = run.cache.get("propensity_estimate")
    if est is not None:
        p_hat = est.probabilities[rows]  # (n, A) estimated logging probabilities of every action
        mass = float((dist.sum(axis=2) / dist.shape[2] * (p_hat < LOW_PROPENSITY)).sum(axis=1).mean())
        if mass > MAX_LOW_MASS:
            return False, (f"IPS-family estimates are not identified: the candidate puts {mass:.1%} of its mass on "
                           f"actions whose estimated logging probability is below {LOW_PROPENSITY}. " + UNIDENTIFIED_HELP)
    return True, ""


def simulator_value(cfg: DictConfig, data: LoggedData, rows: np.ndarray, dist: np.ndarray, objective: Objective) -> float:
    """The candidate's value of `objective` by a response model fitted on the log's training split (unidentified cases)."""
    from pushrl.envs.response_model import ResponseModel
    from pushrl.experiments.builders import response_model_config

    split = split_log(data, tuple(cfg.split.fractions), seed=cfg.split.seed)
    model = ResponseModel.fit(split.train, split.validation, response_model_config(cfg, progress=False))
    sub = data.subset(rows)
    x, recent = model.encode(sub)
    total = 0.0
    for k in range(data.n_positions):
        q = objective.expected(model.predict(x, recent, np.full(len(rows), k)), data.action_ids)
        at = sub.position == k
        total += float((dist[at, :, k] * q[at]).sum())
    return total / len(rows)


def evaluate_command(cfg: DictConfig, data: LoggedData, run: RunFolder, objective: Objective
                     ) -> tuple[PolicyEvaluation, Path]:
    """Evaluate the configured policy; write evaluation.json; return it and its path."""
    if data.pscore is None:
        raise ValueError(f"{data.name} has no propensity column: IPS-family OPE needs the logging policy's propensities")
    rows = eval_rows(cfg, data)
    name, dist = policy_action_dist(cfg, data, rows)
    sub = data.subset(rows)
    r = objective.logged(data)[rows]
    if cfg.eval.reward_model != "mean":
        raise ValueError(f"eval.reward_model must be 'mean' in `pushrl evaluate` (got {cfg.eval.reward_model!r}); "
                         "`pushrl run` uses the learned response model")
    q_hat = cross_fit_mean_rewards(r, sub.action, sub.position, data.n_actions, data.n_positions,
                                   n_folds=cfg.eval.n_folds, seed=cfg.seed)
    identified, why = identification(data, rows, dist, run)
    settings = EstimatorSettings(clip=cfg.eval.clip, switch_threshold=cfg.eval.switch_threshold,
                                 dros_lambda=cfg.eval.dros_lambda)
    rec = choose_estimator(cfg, sub, settings, run, "selection") if identified else "dm"
    ev = evaluate_policy(
        policy=name, data=data.name, split=cfg.eval.split, action_dist=np.ascontiguousarray(dist), reward=r,
        action=sub.action, pscore=sub.pscore, position=sub.position, estimated_rewards=q_hat,
        recommended=rec, settings=settings,
        n_bootstrap=cfg.eval.n_bootstrap, alpha=cfg.eval.alpha, seed=cfg.seed, identified=identified,
    )
    estimated = [n for n in data.notes if "propensities estimated" in n]
    ev.notes += estimated
    doc = ev.to_json()
    doc["propensities"] = "estimated" if estimated else "logged"
    if not identified:
        doc["why_not_identified"] = why
        doc["simulator_value"] = simulator_value(cfg, data, rows, dist, objective)
        ev.notes.append(why)
        doc["notes"] = list(ev.notes)
    path = write_json(run.path("evaluation.json"), doc)
    weights = dist[np.arange(len(rows)), sub.action, sub.position] / sub.pscore
    source = " (estimated propensities)" if estimated else ""
    plots.weight_histogram(weights, ev.diagnostics, run.path("weights.png"), f"importance weights of {name}{source}")
    rows_md = [f"| estimator{source} | value | 95% CI | lift vs logging |", "|---|---|---|---|"]
    for k, i in ev.estimates.items():
        rows_md.append(f"| {k} | {i.value:.6g} | [{i.ci_low:.6g}, {i.ci_high:.6g}] | {ev.lift(k):+.1%} |")
    d = ev.diagnostics
    rows_md += ["", f"Logging policy (on-policy): {ev.logging.value:.6g} [{ev.logging.ci_low:.6g}, {ev.logging.ci_high:.6g}]; "
                f"recommended estimator: **{ev.recommended}**; ESS {d.effective_sample_size:,.0f} of {ev.n_rounds:,}; "
                f"max weight {d.max_weight:.3g}; low-support mass {d.low_support_mass:.3g}."]
    rows_md += [f"- {n}" for n in ev.notes]
    rows_md.append("- DM, DR and their variants use a cross-fitted mean reward per action and slot as reward model "
                   "(`eval.reward_model=mean`); `pushrl run` uses its learned response model, so their values can "
                   "differ between the two commands while IPS and SNIPS agree exactly.")
    rows_md += ["", "![importance weights](weights.png)"]
    run.add_section(f"OPE of `{name}` on {data.name} ({cfg.eval.split} split, {ev.n_rounds:,} rows)", "\n".join(rows_md))
    return ev, path
