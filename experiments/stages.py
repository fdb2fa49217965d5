"""Pipeline stages wired from config (no library logic here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from pushrl.envs.common.atomic import write_json, write_text
from pushrl.envs.data.describe import describe_data
from pushrl.envs.data.leakage import check_leakage
from pushrl.envs.data.split import split_indices, split_log
from pushrl.envs.objectives import find_no_push
from pushrl.experiments.builders import propensity_config
from pushrl.experiments.data import ESTIMATE, load_data
from pushrl.experiments.outputs import RunFolder
from pushrl.experiments.run_context import LoadedLog

console = Console(highlight=False)


def _run_folder() -> RunFolder:
    return RunFolder(Path(HydraConfig.get().runtime.output_dir))


def stage_estimate_propensities(data, cfg: DictConfig, run: RunFolder):
    """data.propensity=estimate: replace the log's propensities by cross-fitted calibrated estimates, and say so.
    Returns the log and the estimate (None where logging is deterministic: nothing to estimate)."""
    from pushrl.envs.data.propensity import (
        estimate_propensities,
        write_reliability_png,
    )
    from pushrl.envs.data.regime import classify_regime

    regime = classify_regime(data)
    if regime.regime == "deterministic":
        # nothing to estimate: the logging policy picked one action per context (propensity 1); every other
        # policy's effect is then not identified, which the run reports (DM and simulator only, model-based)
        note = (f"propensities not estimated: logging is deterministic ({regime.evidence}), so each logged action "
                "had probability 1 and no other policy's effect is identified from this log")
        run.add_section(f"{cfg.data.name}: propensities", f"**{note[0].upper() + note[1:]}.** Every candidate below is "
                        "valued by the response model only (DM and the simulator); none can ship.")
        console.print(f"  {note}")
        frame = data.frame.assign(propensity=1.0)
        return dataclasses.replace(data, frame=frame, columns=dataclasses.replace(data.columns, has_propensity=True)
                                   ).with_notes(note), None
    pcfg = propensity_config(cfg)
    console.print(f"  estimating propensities (cross-fitted multinomial logit, {pcfg.n_folds} folds, "
                  f"calibration: {pcfg.calibration}) ...")
    est = estimate_propensities(data, pcfg, replace_logged=True)
    write_json(run.path(cfg.data.name, "propensity_estimate.json"), est.to_dict(), default=str)
    write_reliability_png(est.reliability, run.path(cfg.data.name, "propensity_reliability.png"))
    md = [f"**Propensities estimated**, not logged: {est.note}. Expected calibration error {est.ece:.4g}; "
          f"{est.n_clipped:,} rows clipped; {int((~est.kept).sum()):,} trimmed. Everything below that uses "
          "propensities (IPS-family OPE) rests on this estimate.", "",
          f"![propensity calibration]({cfg.data.name}/propensity_reliability.png)"]
    md += [f"- {w}" for w in est.warnings]
    run.add_section(f"{cfg.data.name}: estimated propensities", "\n".join(md))
    return est.data, est


HISTORY_MODES = ("auto", "off")


def stage_history(data, cfg: DictConfig, run: RunFolder):
    """data.history=auto: on a log with user_id, timestamp and repeat users (and no recent-push column of its own),
    derive each user's push history before every row (pushrl.envs.data.history). Only `recent_pushes` (window
    `sequential.fatigue_window`) joins the log, as a frame column the response model reads as its separate fatigue
    input, never a context feature; the other history columns are summarised in `<dataset>/history.csv` and the
    data section, and are not added as context features: the simulator cannot update them day by day.
    Returns the log and the report lines."""
    from pushrl.envs.data.history import (
        RECENT,
        history_skip_reason,
        history_summary,
        log_history,
        with_log_column,
    )

    mode = cfg.data.get("history", "auto")
    if mode not in HISTORY_MODES:
        raise ValueError(f"data.history must be one of {list(HISTORY_MODES)}, got {mode!r}")
    column = cfg.model.recent_pushes_column
    if mode == "off" or column is None:
        return data, []
    reason = history_skip_reason(data, column)
    if reason is not None:  # the embedded samples (no user_id) say nothing: their report stays as it was
        return data, ([f"push history not derived: {reason}"] if cfg.data.kind == "file" else [])
    ids = data.action_ids
    no_push = None if cfg.data.no_push_action is None else ids[find_no_push(ids, cfg.data.no_push_action)]
    binary = [r for r in data.reward_names if np.isin(data.reward(r), (0.0, 1.0)).all()]
    category = "category" if "category" in data.catalogue.features.columns else None
    history = log_history(data, no_push, window=float(cfg.sequential.fatigue_window), reward=binary[0] if binary else None,
                          half_life_days=float(cfg.data.history_half_life_days), category_column=category)
    data = with_log_column(data, column, history[RECENT].to_numpy())
    summary = history_summary(data, history, no_push)
    write_text(run.path(cfg.data.name, "history.csv"), history.describe().T.to_csv())
    run.add_metrics(f"{cfg.data.name}/data/history", summary)
    md = [f"- push history derived from the log (strictly before each row): {summary['repeat_users']:,.0f} of "
          f"{summary['users']:,.0f} users are repeat users, {summary['pushes_per_user']:.3g} pushes per user, median "
          f"gap between a user's pushes {summary['median_gap_days']:.3g} days; `{column}` (pushes in the last "
          f"{cfg.sequential.fatigue_window} days, mean {summary['mean_' + RECENT]:.3g}) is the response model's "
          f"fatigue input. The other history columns are summarised in `{cfg.data.name}/history.csv`, not used as "
          "features."]
    return data.with_notes(f"{column} derived from user_id and timestamp (data.history=auto)"), md


def stage_data(cfg: DictConfig, run: RunFolder) -> LoadedLog:
    """Load, validate, describe and split the configured log."""
    console.print(f"[bold]data[/bold]: loading {cfg.data.name} ...")
    data, truth = load_data(cfg.data)
    # before any model sees the features: a feature that nearly determines a reward is refused, naming it
    check_leakage(data, rows=split_indices(data, tuple(cfg.split.fractions), seed=cfg.split.seed)[0])
    estimate = None
    if cfg.data.propensity == ESTIMATE:
        data, estimate = stage_estimate_propensities(data, cfg, run)
    data, history_md = stage_history(data, cfg, run)
    desc = describe_data(data)
    write_json(run.path("data", "description.json"), desc.to_dict(), default=str)
    write_text(run.path("data", "description.txt"), desc.to_text() + "\n")
    split = split_log(data, tuple(cfg.split.fractions), seed=cfg.split.seed)
    sizes = {"train": split.train.n_rounds, "validation": split.validation.n_rounds, "test": split.test.n_rounds}
    run.add_metrics(f"{cfg.data.name}/data", {"rows": data.n_rounds, "actions": data.n_actions, "positions": data.n_positions,
                             "split": sizes, "rewards": desc.rewards, "ess": desc.ess})
    md = [f"Log **{data.name}**: {data.n_rounds:,} rows, {data.n_actions} promotions, {data.n_positions} position(s), "
          f"logging regime **{desc.logging_regime}**.", ""]
    md += [f"- {n}" for n in data.notes]
    md += [f"- split ({split.method}): train {sizes['train']:,}, validation {sizes['validation']:,}, test {sizes['test']:,} rows",
           f"- {split.note}", *history_md, ""]
    md += ["| reward | mean | events |", "|---|---|---|"]
    md += [f"| {r} | {v:.5g} | {desc.reward_events[r]:.0f} |" for r, v in desc.rewards.items()]
    if desc.warnings:
        md += ["", "Warnings:"] + [f"- {w}" for w in desc.warnings]
    if data.timestamp is not None and data.n_rounds >= 400:
        from pushrl.envs.data.drift import drift_report

        drift = drift_report(data, n_windows=4)
        write_text(run.path(cfg.data.name, "drift.txt"), drift.to_text() + "\n")
        top = drift.psi.max(axis=0).sort_values(ascending=False).head(5) if not drift.psi.empty else None
        if top is not None:
            md += ["", "Drift across 4 time windows (population stability index, largest per feature): "
                   + ", ".join(f"{k} {v:.3f}" for k, v in top.items()) + f". Full report: `{cfg.data.name}/drift.txt`."]
        md += [f"- {w}" for w in drift.warnings]
    md += ["", "Full description: `data/description.txt`."]
    run.add_section(f"{cfg.data.name}: data", "\n".join(md))
    console.print(f"  {data.n_rounds:,} rows, {data.n_actions} promotions; split {sizes}")
    return LoadedLog(data, truth, split, estimate)


def _embedded_data_config(name: str) -> DictConfig:
    """The data config `configs/data/<name>.yaml` (for `also`), typed like `data`."""
    from importlib.resources import files

    from pushrl.experiments.config import DataConfig

    path = files("pushrl.configs") / "data" / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"also: unknown dataset {name!r}; one of the configs/data/*.yaml names")
    raw = OmegaConf.load(str(path))
    raw.pop("defaults", None)
    return OmegaConf.merge(OmegaConf.structured(DataConfig), raw)


def stage_run(cfg: DictConfig, run: RunFolder, stop_after: str | None = None) -> list:
    """The whole pipeline (or up to `stop_after`) on `data` and every dataset in `also`."""
    from pushrl.agents.training import check_agent_names
    from pushrl.experiments.pipeline import run_dataset

    check_agent_names(list(cfg.agents))
    results = []
    for i, data_cfg in enumerate([cfg.data] + [_embedded_data_config(n) for n in cfg.also]):
        sub = cfg.copy()
        sub.data = data_cfg
        if i > 0:  # an embedded dataset of `also` runs on its own default objective, without the main log's
            sub.objective.reward = "auto"  # guardrails or weights (they name the main log's rewards)
            sub.objective.guardrails = {}
            sub.objective.weights = {}
        res = run_dataset(sub, stage_data(sub, run), data_cfg.default_objective, run, data_cfg.name, console.print,
                          stop_after=stop_after)
        if res is not None:
            results.append(res)
    if _demos_on(cfg):
        from pushrl.experiments.synthetic_fidelity import synthetic_fidelity_section

        run.add_metrics("synthetic_fidelity", synthetic_fidelity_section(run, int(cfg.seed), console.print))
        from pushrl.experiments.cold_start_section import cold_start_section

        run.add_metrics("cold_start", cold_start_section(run, int(cfg.seed), console.print))
    return results


def stage_export(cfg: DictConfig, run: RunFolder) -> Path:
    """Rebuild a saved agent from an earlier run's dataset folder and export it to this run's `artifact/`."""
    import json

    from pushrl.agents.export_policies import export_policy
    from pushrl.agents.training import SHARED, load_agent, load_catalogue
    from pushrl.envs.model.response_model import ResponseModel

    if not cfg.export.run_dir or not cfg.export.agent:
        raise ValueError("pushrl export needs export.run_dir=<run>/<dataset> and export.agent=<name>")
    src = Path(cfg.export.run_dir)
    policy = load_agent(src / "agents", cfg.export.agent, seed=cfg.seed)
    model = ResponseModel.load(src / "response_model")
    fingerprint = json.loads((src / "response_model" / "fit.json").read_text())["train"]
    ids = list(model.catalogue_ids)
    wanted = cfg.data.get("no_push_action")
    no_push = None if wanted is None else ids[find_no_push(np.asarray(ids), wanted)]
    catalogue = load_catalogue(src / "agents") if cfg.export.agent in SHARED else None
    path = export_policy(policy, cfg.export.agent, model.encoder, ids, run.path("artifact"), no_push_action=no_push,
                         catalogue=catalogue, metadata={"data_fingerprint": fingerprint, "training_config": {"source_run": str(src)}})
    run.add_section("Export", f"Exported `{cfg.export.agent}` from `{src}` to `{path}`.")
    return path


def run_command(cfg: DictConfig) -> None:
    """Run the configured command; the report and metrics are written even when a later stage fails."""
    run = _run_folder()
    try:
        title, evaluation_path = _command(cfg, run)
    except Exception as exc:
        if run.sections:  # what was done stays readable; the error is the report's last section
            run.add_section("Run stopped early", f"The run stopped with: `{type(exc).__name__}: {exc}`. The sections "
                            "above are complete; rerun into the same folder after fixing the cause (saved models are reused).")
            run.write(f"pushrl {cfg.command}: {cfg.data.name} (stopped early)")
        raise
    paths = run.write(title)
    console.print(f"\n[bold green]done[/bold green]. Outputs in {run.root}")
    for name, p in paths.items():
        console.print(f"  {name}: {p}")
    if evaluation_path is not None:
        print(evaluation_path)  # last line: where the machine-readable result is


def _command(cfg: DictConfig, run: RunFolder) -> tuple[str, Path | None]:
    """The command's work; returns the report title and, for evaluate, the evaluation.json path."""
    command = cfg.command
    title = f"pushrl {command}: {cfg.data.name}"
    evaluation_path = None
    if command == "describe":
        stage_data(cfg, run)
    elif command == "evaluate":
        from pushrl.experiments.evaluate import evaluate_command
        from pushrl.experiments.run_context import resolve_objective

        log = stage_data(cfg, run)
        objective = resolve_objective(cfg, log.data, cfg.data.default_objective)
        ev, evaluation_path = evaluate_command(cfg, log, run, objective)
        title = f"pushrl evaluate: {ev.policy} on {log.data.name}"
    elif command == "export":
        stage_export(cfg, run)
        title = f"pushrl export: {cfg.export.agent}"
    elif command in ("run", "fit", "train"):
        results = stage_run(cfg, run, stop_after=None if command == "run" else command)
        title = f"pushrl {command}: " + ", ".join([cfg.data.name, *cfg.also])
        if results:
            lines = ["| dataset | objective | ship |", "|---|---|---|"]
            lines += [f"| {r.name} | {r.objective} | **{r.chosen}** |" for r in results]
            run.sections.insert(0, ("Summary", "\n".join(lines)))
    else:
        raise ValueError(f"command {command!r} is not wired yet")
    return title, evaluation_path


def _demos_on(cfg: DictConfig) -> bool:
    """`demos` (None: on for the embedded showcase, off for a user's own log, data.kind=file)."""
    return bool(cfg.demos) if cfg.demos is not None else cfg.data.kind != "file"
