"""The accuracy–diversity Pareto front: one plot, and a Hydra multirun collector.

Points, accuracy, diversity and the non-dominated marking are `pushrl.policies.pareto`'s.

`collect_sweep(multirun_dir)` reads every job's `metrics.json` of a Hydra multirun, takes what
`pushrl.experiments.sequential.sequential_section` reported (stored under `<key>/sequential/...`),
marks the front per dataset key and writes `pareto_front.csv` and `pareto_front.png` into the
multirun folder. `python -m pushrl.experiments.pareto MULTIRUN_DIR` does the same from a shell.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from pushrl.envs.common.atomic import write_text
from pushrl.experiments.plots import save_figure
from pushrl.policies.pareto import ACCURACY, DIVERSITY, mark_front

FRONT_CSV = "pareto_front.csv"
FRONT_PNG = "pareto_front.png"
_AGENT_KEY = re.compile(r"^(?P<key>.+?)/sequential/agents/(?P<name>[^/]+)/(?P<field>[^/]+)$")
_POINT_KEY = re.compile(r"^(?P<key>.+?)/sequential/pareto/(?P<name>[^/]+)/(?P<field>[^/]+)$")
_WEIGHT_KEY = re.compile(r"^(?P<key>.+?)/sequential/diversity_weight$")


def front_plot(frame: pd.DataFrame, path: Path, title: str, accuracy: str = ACCURACY,
               diversity: str = DIVERSITY, label: str = "label", group: str | None = None) -> Path:
    """Scatter of accuracy (y) against diversity (x), front points filled and joined (one panel per group)."""
    groups = [(title, frame)] if group is None else [(f"{title}: {g}", f) for g, f in frame.groupby(group, sort=False)]
    fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(6.0 * max(1, len(groups)), 4.2), squeeze=False)
    for ax, (name, f) in zip(axes[0], groups, strict=False):
        front = f[f["non_dominated"]].sort_values(diversity)
        rest = f[~f["non_dominated"]]
        ax.scatter(rest[diversity], rest[accuracy], facecolors="none", edgecolors="grey", label="dominated")
        ax.scatter(front[diversity], front[accuracy], color="tab:red", zorder=3, label="non-dominated")
        ax.plot(front[diversity], front[accuracy], color="tab:red", alpha=0.5)
        if label in f.columns:  # one annotation per location: coincident points share it
            at: dict[tuple[float, float], list[str]] = {}
            for x, y, text in zip(f[diversity], f[accuracy], f[label], strict=True):
                if np.isfinite(x) and np.isfinite(y):
                    at.setdefault((float(x), float(y)), []).append(str(text))
            for (x, y), texts in at.items():
                ax.annotate(", ".join(texts), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(f"diversity: {diversity.replace('_', ' ')}")
        ax.set_ylabel(f"accuracy: {accuracy.replace('_', ' ')}")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def _job_rows(metrics: dict, job: str, overrides: str) -> list[dict]:
    """Rows (one per agent and per sweep point) of one job's flat metrics.json."""
    records: dict[tuple[str, str, str], dict] = {}
    weights: dict[str, float] = {}
    for k, v in metrics.items():
        if (m := _WEIGHT_KEY.match(k)) is not None:
            weights[m["key"]] = v
            continue
        for source, pattern in (("agent", _AGENT_KEY), ("sweep", _POINT_KEY)):
            if (m := pattern.match(k)) is not None:
                records.setdefault((m["key"], source, m["name"]), {})[m["field"]] = v
                break
    rows = []
    for (key, source, name), fields in records.items():
        row = {"job": job, "overrides": overrides, "dataset": key, "source": source,
               "agent": fields.pop("agent", name), "lambda": fields.pop("lambda", weights.get(key, np.nan))}
        row.update(fields)
        rows.append(row)
    return rows


def _overrides(job_dir: Path) -> str:
    """The job's Hydra overrides (`.hydra/overrides.yaml`) as one line, '' if there is none."""
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return ""
    lines = [ln.strip()[1:].strip() for ln in path.read_text().splitlines() if ln.strip().startswith("-")]
    return " ".join(lines)


def collect_sweep(multirun_dir: str | Path, accuracy: str = ACCURACY, diversity: str = DIVERSITY) -> pd.DataFrame:
    """Every job's sequential-section points of a Hydra multirun, with the front marked per dataset.

    Reads `<multirun_dir>/**/metrics.json` (one per job), keeps the entries under
    `<key>/sequential/agents/<agent>/...` (the agents of the main comparison, at the job's λ) and
    `<key>/sequential/pareto/<point>/...` (the job's own λ sweep), marks the non-dominated
    (accuracy, diversity) points per dataset key and writes `pareto_front.csv` and
    `pareto_front.png` into `multirun_dir`. Returns the table (empty, and nothing written,
    when no job reported a sequential section).
    """
    root = Path(multirun_dir)
    if not root.is_dir():
        raise ValueError(f"multirun_dir must be an existing folder, got {str(root)!r}")
    rows: list[dict] = []
    for path in sorted(root.rglob("metrics.json")):
        try:
            metrics = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc}); was the job interrupted while writing it?") from exc
        if not isinstance(metrics, dict):
            raise ValueError(f"{path} must hold a JSON object of metrics, got {type(metrics).__name__}")
        job = str(path.parent.relative_to(root)) or "."
        rows += _job_rows(metrics, job, _overrides(path.parent))
    columns = ["job", "overrides", "dataset", "source", "agent", "lambda", accuracy, diversity, "non_dominated"]
    if not rows:
        return pd.DataFrame(columns=columns)
    table = pd.DataFrame(rows)
    for col in (accuracy, diversity):
        if col not in table.columns:
            raise ValueError(f"the sequential metrics under {root} have no {col!r}; fields present: "
                             f"{sorted(set(table.columns) - set(columns))}")
        table[col] = pd.to_numeric(table[col], errors="coerce")
    table = mark_front(table, accuracy, diversity, group="dataset")
    table["label"] = [f"{a}" + (f" λ={lam:g}" if pd.notna(lam) else "") + (f" [{j}]" if j != "." else "")
                      for a, lam, j in zip(table["agent"], pd.to_numeric(table["lambda"], errors="coerce"),
                                           table["job"], strict=True)]
    first = [c for c in columns if c in table.columns]
    table = table[first + [c for c in table.columns if c not in first]]
    table = table.sort_values(["dataset", "non_dominated", diversity], ascending=[True, False, True], kind="stable")
    table = table.reset_index(drop=True)
    write_text(root / FRONT_CSV, table.to_csv(index=False))
    front_plot(table, root / FRONT_PNG, "accuracy–diversity front", accuracy, diversity, group="dataset")
    return table


def pareto_main(argv: Sequence[str] | None = None) -> int:
    """`python -m pushrl.experiments.pareto MULTIRUN_DIR`: collect the front and print it."""
    parser = argparse.ArgumentParser(prog="python -m pushrl.experiments.pareto",
                                     description="Collect the accuracy–diversity front of a Hydra multirun.")
    parser.add_argument("multirun_dir", help="the multirun folder (holds one folder per job with metrics.json)")
    parser.add_argument("--accuracy", default=ACCURACY, help=f"accuracy metric (default {ACCURACY})")
    parser.add_argument("--diversity", default=DIVERSITY, help=f"diversity metric (default {DIVERSITY})")
    args = parser.parse_args(argv)
    try:
        table = collect_sweep(args.multirun_dir, args.accuracy, args.diversity)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if table.empty:
        print(f"error: no job under {args.multirun_dir} reported a sequential section "
              "(metrics.json entries <key>/sequential/...)", file=sys.stderr)
        return 1
    front = table[table["non_dominated"]]
    show = ["dataset", "job", "agent", "lambda", args.accuracy, args.diversity]
    print(f"{len(table)} points, {len(front)} non-dominated:")
    print(front[show].to_string(index=False))
    print(f"wrote {Path(args.multirun_dir) / FRONT_CSV} and {Path(args.multirun_dir) / FRONT_PNG}")
    return 0


if __name__ == "__main__":
    sys.exit(pareto_main())
