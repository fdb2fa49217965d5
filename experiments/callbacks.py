"""Hydra callbacks: after a multirun, collect every job into one Pareto-front table and plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class ParetoCollector(Callback):
    """`on_multirun_end`: read each job's metrics.json, mark non-dominated policies, write the front."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from pushrl.experiments.pareto import collect_sweep

        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.exists():
            table = collect_sweep(sweep_dir)
            print(f"Pareto front of {len(table)} policies: {sweep_dir / 'pareto_front.png'}")
