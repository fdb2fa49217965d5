"""Pipeline stages wired from config (no library logic here)."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from rich.console import Console

from pushrl.envs.atomic import write_json, write_text
from pushrl.envs.describe import describe_data
from pushrl.envs.split import split_log
from pushrl.experiments.data import load_data
from pushrl.experiments.outputs import RunFolder

console = Console(highlight=False)


def _run_folder() -> RunFolder:
    return RunFolder(Path(HydraConfig.get().runtime.output_dir))


def stage_data(cfg: DictConfig, run: RunFolder):
    """Load, validate, describe and split the configured log."""
    console.print(f"[bold]data[/bold]: loading {cfg.data.name} ...")
    data, truth = load_data(cfg.data)
    desc = describe_data(data)
    write_json(run.path("data", "description.json"), desc.to_dict(), default=str)
    write_text(run.path("data", "description.txt"), desc.to_text() + "\n")
    split = split_log(data, tuple(cfg.split.fractions), seed=cfg.split.seed)
    sizes = {"train": split.train.n_rounds, "validation": split.validation.n_rounds, "test": split.test.n_rounds}
    run.add_metrics("data", {"rows": data.n_rounds, "actions": data.n_actions, "positions": data.n_positions,
                             "split": sizes, "rewards": desc.rewards, "ess": desc.ess})
    md = [f"Log **{data.name}**: {data.n_rounds:,} rows, {data.n_actions} promotions, {data.n_positions} position(s), "
          f"logging regime **{desc.logging_regime}**.", ""]
    md += [f"- {n}" for n in data.notes]
    md += [f"- split ({split.method}): train {sizes['train']:,}, validation {sizes['validation']:,}, test {sizes['test']:,} rows",
           f"- {split.note}", ""]
    md += ["| reward | mean | events |", "|---|---|---|"]
    md += [f"| {r} | {v:.5g} | {desc.reward_events[r]:.0f} |" for r, v in desc.rewards.items()]
    if desc.warnings:
        md += ["", "Warnings:"] + [f"- {w}" for w in desc.warnings]
    md += ["", "Full description: `data/description.txt`."]
    run.add_section("Data", "\n".join(md))
    console.print(f"  {data.n_rounds:,} rows, {data.n_actions} promotions; split {sizes}")
    return data, truth, split


def run_command(cfg: DictConfig) -> None:
    run = _run_folder()
    command = cfg.command
    if command in ("run", "describe"):
        stage_data(cfg, run)
    else:
        raise ValueError(f"command {command!r} is not wired yet")
    paths = run.write(f"pushrl {command}: {cfg.data.name}")
    console.print(f"\n[bold green]done[/bold green]. Outputs in {run.root}")
    for name, p in paths.items():
        console.print(f"  {name}: {p}")
