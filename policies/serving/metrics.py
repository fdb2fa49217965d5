"""A small Prometheus registry for the decision service: labelled counters and fixed-bucket histograms.

Standard library only (no prometheus_client). `Registry.exposition()` writes the
text format 0.0.4 (`# HELP`, `# TYPE`, `name{label="value"} value`, histograms as
cumulative `_bucket{le="..."}` plus `_sum` and `_count`), served at `GET /metrics`
with `CONTENT_TYPE`. Every metric is thread-safe (one lock each).

`ServingMetrics` holds the service's metrics; one instance outlives reloads (each
runtime is given it), so counts do not reset when the policy is swapped:

  pushrl_decisions_total                       decisions made (one per request)
  pushrl_errors_total{status}                  error responses by HTTP status
  pushrl_ood_total{field,kind}                 out-of-distribution context values, by raw field and kind
                                               (unknown_category, below_range, above_range, not_finite)
  pushrl_request_latency_seconds{route}        request latency (histogram)

Label values come from fixed sets (field names from the artifact, kinds above,
status codes, route names), never from request contents.
"""

from __future__ import annotations

import bisect
import math
import re
import threading
from collections.abc import Iterable, Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
OOD_KINDS = ("unknown_category", "below_range", "above_range", "not_finite")
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def format_value(v: float) -> str:
    """A sample value as the text format writes it: integers without a point, +Inf/-Inf/NaN spelt out."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if float(v).is_integer() and abs(v) < 2**53:
        return str(int(v))
    return repr(float(v))


def _escape_label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def _labels_text(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        if not _NAME.match(name):
            raise ValueError(f"metric name {name!r} is not a valid Prometheus name")
        for label in labelnames:
            if not _LABEL.match(label) or label.startswith("__") or label == "le":
                raise ValueError(f"metric {name}: label name {label!r} is not allowed")
        self.name, self.help, self.labelnames = name, help_text, tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, object]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"metric {self.name} takes labels {list(self.labelnames)}, got {sorted(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def _header(self) -> list[str]:
        return [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def lines(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A monotonically increasing count per label set (a label-less counter shows 0 before any inc)."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must end in _total")
        super().__init__(name, help_text, labelnames)
        self._values: dict[tuple[str, ...], float] = {} if labelnames else {(): 0.0}

    def inc(self, amount: float = 1.0, **labels: object) -> None:
        if amount < 0:
            raise ValueError(f"counter {self.name} cannot decrease (inc by {amount})")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: object) -> float:
        key = self._key(labels)
        with self._lock:
            return self._values.get(key, 0.0)

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return self._header() + [f"{self.name}{_labels_text(self.labelnames, k)} {format_value(v)}" for k, v in items]


class Histogram(_Metric):
    """Observations counted in fixed buckets (upper bounds, `le`); exposed cumulatively with +Inf, _sum, _count."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = (),
                 buckets: Iterable[float] = LATENCY_BUCKETS) -> None:
        super().__init__(name, help_text, labelnames)
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds or len(set(bounds)) != len(bounds) or any(math.isnan(b) for b in bounds):
            raise ValueError(f"histogram {name}: buckets must be distinct numbers, got {list(buckets)}")
        self.buckets = tuple(bounds)
        self._series: dict[tuple[str, ...], list[float]] = {}  # per bucket counts (+Inf last), then sum

    def observe(self, value: float, **labels: object) -> None:
        key = self._key(labels)
        i = bisect.bisect_left(self.buckets, value)  # first bound >= value (le is inclusive)
        with self._lock:
            s = self._series.get(key)
            if s is None:
                s = self._series[key] = [0.0] * (len(self.buckets) + 2)
            s[i] += 1
            s[-1] += value

    def count(self, **labels: object) -> int:
        key = self._key(labels)
        with self._lock:
            s = self._series.get(key)
            return 0 if s is None else int(sum(s[:-1]))

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted((k, list(v)) for k, v in self._series.items())
        out = self._header()
        for key, s in items:
            running = 0.0
            for bound, n in zip((*self.buckets, math.inf), s[:-1], strict=True):
                running += n
                le = f'le="{format_value(bound) if math.isinf(bound) else repr(bound)}"'
                out.append(f"{self.name}_bucket{_labels_text(self.labelnames, key, le)} {format_value(running)}")
            labels = _labels_text(self.labelnames, key)
            out.append(f"{self.name}_sum{labels} {format_value(s[-1])}")
            out.append(f"{self.name}_count{labels} {format_value(running)}")
        return out


class Registry:
    """Named metrics, exposed together in registration order."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}
        self._lock = threading.Lock()

    def _add(self, metric: _Metric) -> _Metric:
        with self._lock:
            if metric.name in self._metrics:
                raise ValueError(f"metric {metric.name} is already registered")
            self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._add(Counter(name, help_text, labelnames))  # type: ignore[return-value]

    def histogram(self, name: str, help_text: str, labelnames: Sequence[str] = (),
                  buckets: Iterable[float] = LATENCY_BUCKETS) -> Histogram:
        return self._add(Histogram(name, help_text, labelnames, buckets))  # type: ignore[return-value]

    def exposition(self) -> str:
        """Every metric in the Prometheus text format 0.0.4 (ends with a newline)."""
        with self._lock:
            metrics = list(self._metrics.values())
        lines: list[str] = []
        for m in metrics:
            lines += m.lines()
        return "\n".join(lines) + "\n"


class ServingMetrics:
    """The decision service's metrics (module docstring); one instance shared by every runtime it serves."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.decisions = self.registry.counter("pushrl_decisions_total", "Decisions made (one per request).")
        self.errors = self.registry.counter("pushrl_errors_total", "Error responses by HTTP status.", ("status",))
        self.ood = self.registry.counter(
            "pushrl_ood_total", "Out-of-distribution context values seen at decision time, by raw field and kind "
            "(unknown_category, below_range, above_range, not_finite).", ("field", "kind"))
        self.latency = self.registry.histogram("pushrl_request_latency_seconds",
                                               "Request latency in seconds, by route.", ("route",))

    def exposition(self) -> str:
        return self.registry.exposition()
