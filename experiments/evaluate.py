"""`pushrl evaluate`: OPE of one policy on a log, written to evaluation.json (wiring only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from pushrl.envs.common.atomic import write_json
from pushrl.envs.data.logged_data import LoggedData
from pushrl.envs.data.regime import classify_regime
from pushrl.envs.objectives import Objective
from pushrl.experiments import plots
from pushrl.experiments.builders import estimator_settings, response_model_config
from pushrl.experiments.outputs import RunFolder
from pushrl.experiments.pipeline import choose_estimator
from pushrl.experiments.run_context import LoadedLog
from pushrl.policies.evaluation import PolicyEvaluation, evaluate_policy
from pushrl.policies.external import ExternalPolicy, load_external_policy
from pushrl.policies.ope import cross_fit_mean_rewards
from pushrl.policies.ope.identification import identification

SPLITS = ("test", "all")
POLICY_KINDS = ("external", "uniform", "always", "artifact")


def eval_rows(cfg: DictConfig, log: LoadedLog) -> np.ndarray:
    """Row indices (into the whole log) that are evaluated: every row, or the held-out test split."""
    if cfg.eval.split not in SPLITS:
        raise ValueError(f"eval.split must be one of {SPLITS}, got {cfg.eval.split!r}")
    if cfg.eval.split == "all":
        return np.arange(log.data.n_rounds)
    return log.split.rows[2]


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


def simulator_value(cfg: DictConfig, log: LoadedLog, rows: np.ndarray, dist: np.ndarray, objective: Objective) -> float:
    """The candidate's value of `objective` by a response model fitted on the log's training split (unidentified cases)."""
    from pushrl.envs.model.response_model import ResponseModel

    data = log.data
    model = ResponseModel.fit(log.split.train, log.split.validation, response_model_config(cfg, progress=False))
    sub = data.subset(rows)
    x, recent = model.encode(sub)
    total = 0.0
    for k in range(data.n_positions):
        q = objective.expected(model.predict(x, recent, np.full(len(rows), k)), data.action_ids)
        at = sub.position == k
        total += float((dist[at, :, k] * q[at]).sum())
    return total / len(rows)


def evaluate_command(cfg: DictConfig, log: LoadedLog, run: RunFolder, objective: Objective
                     ) -> tuple[PolicyEvaluation, Path]:
    """Evaluate the configured policy; write evaluation.json; return it and its path."""
    data = log.data
    if data.pscore is None:
        raise ValueError(f"{data.name} has no propensity column: IPS-family OPE needs the logging policy's propensities")
    rows = eval_rows(cfg, log)
    name, dist = policy_action_dist(cfg, data, rows)
    sub = data.subset(rows)
    r = objective.logged(data)[rows]
    if cfg.eval.reward_model != "mean":
        raise ValueError(f"eval.reward_model must be 'mean' in `pushrl evaluate` (got {cfg.eval.reward_model!r}); "
                         "`pushrl run` uses the learned response model")
    q_hat = cross_fit_mean_rewards(r, sub.action, sub.position, data.n_actions, data.n_positions,
                                   n_folds=cfg.eval.n_folds, seed=cfg.seed)
    ident = identification(classify_regime(data), dist, log.logging_probabilities(rows))
    identified, why = ident.identified, ident.why
    settings = estimator_settings(cfg)
    rec = choose_estimator(cfg, sub, settings, run, "selection") if identified else "dm"
    ev = evaluate_policy(
        policy=name, data=data.name, split=cfg.eval.split, action_dist=np.ascontiguousarray(dist), reward=r,
        action=sub.action, pscore=sub.pscore, position=sub.position, estimated_rewards=q_hat,
        recommended=rec, settings=settings,
        n_bootstrap=cfg.eval.n_bootstrap, alpha=cfg.eval.alpha, seed=cfg.seed, identified=identified,
    )
    estimated = log.propensity_estimate is not None
    if estimated:
        ev.notes.append(log.propensity_estimate.note)
    doc = ev.to_json()
    doc["propensities"] = "estimated" if estimated else "logged"
    if not identified:
        doc["why_not_identified"] = why
        doc["simulator_value"] = simulator_value(cfg, log, rows, dist, objective)
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
