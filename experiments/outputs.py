"""The run folder: metrics.json/metrics.csv, report.md and plots, all written atomically."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pushrl.envs.common.atomic import write_json, write_text


def _flatten(prefix: str, obj: Any, out: dict[str, Any]) -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(f"{prefix}/{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = obj


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return value


@dataclass
class RunFolder:
    """Collects what a run reports and writes it under `root`."""

    root: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    sections: list[tuple[str, str]] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict)  # objects later stages of the same run reuse

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, *parts: str) -> Path:
        p = self.root.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def add_metrics(self, prefix: str, values: dict[str, Any]) -> None:
        flat: dict[str, Any] = {}
        _flatten(prefix, values, flat)
        self.metrics.update({k: _jsonable(v) for k, v in flat.items()})

    def add_section(self, title: str, markdown: str) -> None:
        self.sections.append((title, markdown))

    def write(self, title: str) -> dict[str, Path]:
        """Write metrics.json, metrics.csv and report.md; returns their paths."""
        metrics_json = write_json(self.path("metrics.json"), self.metrics)
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["metric", "value"])
        for k, v in sorted(self.metrics.items()):
            writer.writerow([k, v])
        metrics_csv = write_text(self.path("metrics.csv"), buf.getvalue())
        body = [f"# {title}", ""]
        for sec_title, md in self.sections:
            body += [f"## {sec_title}", "", md.rstrip(), ""]
        report = write_text(self.path("report.md"), "\n".join(body))
        return {"report": report, "metrics_json": metrics_json, "metrics_csv": metrics_csv}
