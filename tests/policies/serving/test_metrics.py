"""The Prometheus registry: text format 0.0.4 that parses, labelled counters, cumulative histograms, threads."""

from __future__ import annotations

import math
import re
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.agents.export import linear_onnx
from pushrl.envs.data.features import ContextEncoder
from pushrl.policies.artifact import Exploration, Manifest, write_artifact
from pushrl.policies.serving.metrics import (
    CONTENT_TYPE,
    Counter,
    Histogram,
    Registry,
    ServingMetrics,
)
from pushrl.policies.serving.runtime import PolicyRuntime, RequestError

# name{labels} value  (timestamps are not written)
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def _unescape(v: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], v)


def parse(text: str) -> dict[str, dict]:
    """A strict little parser of the text format: {family: {"type", "help", "samples": {(name, labels): value}}}."""
    assert text.endswith("\n")
    families: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in families, f"family {name} twice"
            current = families[name] = {"help": help_text, "type": None, "samples": {}}
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert current is families.get(name) and kind in ("counter", "histogram", "gauge"), line
            current["type"] = kind
        else:
            m = _SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            name, labels_text, value = m.groups()
            labels = ()
            if labels_text:
                pairs = _PAIR.findall(labels_text)
                assert "".join(f'{k}="{v}"{sep}' for k, v, sep in pairs) == labels_text, line
                labels = tuple(sorted((k, _unescape(v)) for k, v, _ in pairs))
            family = next(f for f in (name, re.sub(r"_(bucket|sum|count)$", "", name)) if f in families)
            assert family == name or families[family]["type"] == "histogram", line
            key = (name, labels)
            assert key not in families[family]["samples"], f"duplicate sample {line!r}"
            families[family]["samples"][key] = float(value.replace("Inf", "inf"))
    return families


def test_counter_labels_escaping_and_format() -> None:
    reg = Registry()
    c = reg.counter("demo_total", "A demo\ncounter with a \\ backslash.", ("field", "kind"))
    plain = reg.counter("plain_total", "No labels.")
    c.inc(field='we"ird\nname\\', kind="unknown_category")
    c.inc(2, field="a", kind="b")
    c.inc(0.5, field="a", kind="b")
    text = reg.exposition()
    assert "# HELP demo_total A demo\\ncounter with a \\\\ backslash.\n# TYPE demo_total counter\n" in text
    assert 'demo_total{field="we\\"ird\\nname\\\\",kind="unknown_category"} 1\n' in text
    fam = parse(text)
    assert fam["demo_total"]["samples"][("demo_total", (("field", 'we"ird\nname\\'), ("kind", "unknown_category")))] == 1
    assert fam["demo_total"]["samples"][("demo_total", (("field", "a"), ("kind", "b")))] == 2.5
    assert fam["plain_total"]["samples"] == {("plain_total", ()): 0}  # a label-less counter shows 0 at once
    plain.inc()
    assert plain.value() == 1
    with pytest.raises(ValueError, match="cannot decrease"):
        c.inc(-1, field="a", kind="b")
    with pytest.raises(ValueError, match=r"takes labels \['field', 'kind'\]"):
        c.inc(field="a")
    with pytest.raises(ValueError, match="must end in _total"):
        Counter("demo", "x")
    with pytest.raises(ValueError, match="already registered"):
        reg.counter("demo_total", "again")


def test_histogram_buckets_are_cumulative_and_count_matches() -> None:
    reg = Registry()
    h = reg.histogram("lat_seconds", "Latency.", ("route",), buckets=(0.01, 0.1, 1.0))
    values = [0.001, 0.01, 0.05, 0.1, 0.5, 2.0, 30.0]  # 0.01 and 0.1 sit on a bound: le is inclusive
    for v in values:
        h.observe(v, route="/v1/decide")
    h.observe(0.2, route="/metrics")
    s = parse(reg.exposition())["lat_seconds"]
    assert parse(reg.exposition())["lat_seconds"]["type"] == "histogram"
    route = ("route", "/v1/decide")
    buckets = [s["samples"][("lat_seconds_bucket", tuple(sorted((route, ("le", le)))))]
               for le in ("0.01", "0.1", "1.0", "+Inf")]
    assert buckets == [2, 4, 5, 7]
    assert buckets == sorted(buckets)  # cumulative
    assert s["samples"][("lat_seconds_count", (route,))] == len(values) == h.count(route="/v1/decide")
    assert s["samples"][("lat_seconds_sum", (route,))] == pytest.approx(sum(values))
    assert s["samples"][("lat_seconds_count", (("route", "/metrics"),))] == 1
    with pytest.raises(ValueError, match="distinct"):
        Histogram("h", "x", buckets=(1.0, 1.0))


def test_metrics_are_thread_safe() -> None:
    m = ServingMetrics()

    def work() -> None:
        for _ in range(2000):
            m.decisions.inc()
            m.ood.inc(field="recency", kind="below_range")
            m.latency.observe(0.0003, route="/v1/decide")

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert m.decisions.value() == 16000 and m.ood.value(field="recency", kind="below_range") == 16000
    assert m.latency.count(route="/v1/decide") == 16000


def test_decisions_with_ood_fields_raise_the_counters(tmp_path: Path) -> None:
    train = pd.DataFrame({"recency": [1, 12], "history": [30.0, 3000.0], "zip_code": ["Urban", "Rural"]})
    enc = ContextEncoder.fit(train, ["recency", "history"], ["zip_code"])
    manifest = Manifest(policy_kind="linear", encoder=enc, action_ids=("a", "b"), exploration=Exploration("none"))
    folder = write_artifact(tmp_path / "art", linear_onnx(np.ones((2, enc.n_features))), manifest)
    metrics = ServingMetrics()
    rt = PolicyRuntime.load(folder, seed=0, metrics=metrics)
    ok = {"recency": 3, "history": 100.0, "zip_code": "Urban"}

    def family(name: str) -> dict:
        return parse(metrics.exposition())[name]["samples"]

    assert family("pushrl_decisions_total") == {("pushrl_decisions_total", ()): 0}
    assert family("pushrl_ood_total") == {}
    rt.decide([{"request_id": "a", "context": ok}, {"request_id": "b", "context": {**ok, "zip_code": "Urbn"}}])
    rt.decide([{"request_id": "c", "context": {**ok, "zip_code": "urban", "history": 1e300}}])
    rt.strict = True
    with pytest.raises(RequestError):
        rt.decide([{"request_id": "d", "context": {**ok, "recency": -5}}])
    ood = family("pushrl_ood_total")
    assert ood == {
        ("pushrl_ood_total", (("field", "zip_code"), ("kind", "unknown_category"))): 2,
        ("pushrl_ood_total", (("field", "history"), ("kind", "above_range"))): 1,
        ("pushrl_ood_total", (("field", "recency"), ("kind", "below_range"))): 1,
    }
    assert family("pushrl_decisions_total")[("pushrl_decisions_total", ())] == 3
    metrics.errors.inc(status=422)
    assert family("pushrl_errors_total") == {("pushrl_errors_total", (("status", "422"),)): 1}


def test_content_type_and_every_family_documented() -> None:
    assert CONTENT_TYPE.startswith("text/plain; version=0.0.4")
    m = ServingMetrics()
    m.latency.observe(math.pi, route="/v1/decide")
    fam = parse(m.exposition())
    assert set(fam) == {"pushrl_decisions_total", "pushrl_errors_total", "pushrl_ood_total",
                        "pushrl_request_latency_seconds"}
    assert all(f["help"] and f["type"] for f in fam.values())
