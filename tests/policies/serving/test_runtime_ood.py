"""Out-of-distribution contexts: detected per field, counted, listed in the decision record, refused in strict mode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pushrl.agents.export import linear_onnx
from pushrl.envs.data.features import ContextEncoder
from pushrl.policies.artifact import Exploration, Manifest, write_artifact
from pushrl.policies.serving.decision_log import DecisionLog
from pushrl.policies.serving.metrics import ServingMetrics
from pushrl.policies.serving.runtime import PolicyRuntime, RequestError

ACTIONS = ("No E-Mail", "Mens E-Mail", "Womens E-Mail")
TRAIN = pd.DataFrame({"recency": [1, 4, 12], "history": [29.99, 500.0, 3345.93],
                      "channel": ["Web", "Phone", "Multichannel"], "zip_code": ["Urban", "Rural", "Surburban"]})
ENCODER = ContextEncoder.fit(TRAIN, ["recency", "history"], ["channel", "zip_code"])
OK = {"recency": 6, "history": 329.08, "channel": "Web", "zip_code": "Urban"}


def write(folder: Path, encoder: ContextEncoder = ENCODER) -> Path:
    weight = np.random.default_rng(0).normal(size=(len(ACTIONS), encoder.n_features))
    manifest = Manifest(policy_kind="linear", encoder=encoder, action_ids=ACTIONS, no_push_action="No E-Mail",
                        exploration=Exploration("epsilon", 0.1))
    return write_artifact(folder, linear_onnx(weight), manifest)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(tmp_path_factory.mktemp("ood") / "a")


def decide_one(rt: PolicyRuntime, **context) -> dict:
    return rt.decide([{"request_id": "r", "context": {**OK, **context}}])[0].to_dict()


def test_the_artifact_carries_the_training_ranges(artifact: Path) -> None:
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["encoder"]["ranges"] == {"recency": [1.0, 12.0], "history": [29.99, 3345.93]}
    assert manifest["encoder"]["vocabularies"]["zip_code"] == ["Rural", "Surburban", "Urban"]


@pytest.mark.parametrize(("context", "field", "kind", "problem"), [
    ({"zip_code": "Urbn"}, "zip_code", "unknown_category", "unknown category 'Urbn'"),
    ({"zip_code": "urban"}, "zip_code", "unknown_category", "unknown category 'urban' (the known 'Urban' differs only in case)"),
    ({"channel": 7}, "channel", "unknown_category", "unknown category 7"),
    ({"history": 1e300}, "history", "above_range", "1e+300 is above the training range [29.99, 3345.93]"),
    ({"recency": -5}, "recency", "below_range", "-5 is below the training range [1, 12]"),
    ({"recency": 10**400}, "recency", "not_finite", None),
])
def test_each_kind_is_detected_per_field(artifact: Path, context: dict, field: str, kind: str,
                                         problem: str | None) -> None:
    rt = PolicyRuntime.load(artifact, seed=0)
    if kind == "not_finite":  # always refused, and still counted
        with pytest.raises(RequestError, match=rf"requests\[0\]\.context\.{field}: must be a finite number"):
            decide_one(rt, **context)
    else:
        out = decide_one(rt, **context)
        assert out["ood"] == {field: problem}
        assert len(out["actions"]) == 1  # non-strict: decided as before
    assert rt.metrics.ood.value(field=field, kind=kind) == 1
    assert rt.metrics.decisions.value() == (0 if kind == "not_finite" else 1)


def test_in_distribution_decisions_carry_no_ood_and_bounds_are_inclusive(artifact: Path) -> None:
    rt = PolicyRuntime.load(artifact, seed=0)
    for ctx in (OK, {**OK, "recency": 1, "history": 3345.93}, {**OK, "recency": 12.0, "history": 29.99}):
        d = rt.decide([{"request_id": "r", "context": ctx}])[0]
        assert d.ood is None and "ood" not in d.to_dict()
    assert "pushrl_ood_total{" not in rt.metrics.exposition()
    assert rt.metrics.decisions.value() == 3


def test_non_strict_keeps_the_decision_unchanged(artifact: Path, tmp_path: Path) -> None:
    """Same weights and seed, with and without ranges: the OOD flag changes nothing about the decision."""
    legacy = ContextEncoder.from_dict({k: v for k, v in ENCODER.to_dict().items() if k != "ranges"})
    a, b = PolicyRuntime.load(write(tmp_path / "legacy", legacy), seed=3), PolicyRuntime.load(artifact, seed=3)
    ctx = {**OK, "history": 1e6, "channel": "Fax"}
    da, db = (rt.decide([{"request_id": f"r{i}", "context": ctx} for i in range(20)]) for rt in (a, b))
    assert [d.actions for d in da] == [d.actions for d in db]
    assert [d.probabilities for d in da] == [d.probabilities for d in db]
    assert set(db[0].ood) == {"history", "channel"} and set(da[0].ood) == {"channel"}


def test_several_fields_and_rows_are_listed_logged_and_counted(artifact: Path, tmp_path: Path) -> None:
    metrics = ServingMetrics()
    with DecisionLog(tmp_path / "log") as log:
        rt = PolicyRuntime.load(artifact, seed=0, decision_log=log, metrics=metrics)
        out = rt.decide([{"request_id": "a", "context": {**OK, "zip_code": "Urbn", "history": 1e300, "recency": -5}},
                         {"request_id": "b", "context": OK},
                         {"request_id": "c", "context": {**OK, "zip_code": "Mars"}}])
    assert list(out[0].ood) == ["recency", "history", "zip_code"]  # input-field order
    assert out[1].ood is None and out[2].ood == {"zip_code": "unknown category 'Mars'"}
    lines = [json.loads(x) for f in sorted((tmp_path / "log").rglob("*.jsonl")) for x in f.read_text().splitlines()]
    by_id = {r["request_id"]: r for r in lines}
    assert by_id["a"]["ood"]["zip_code"] == "unknown category 'Urbn'" and set(by_id["a"]["ood"]) == set(out[0].ood)
    assert "ood" not in by_id["b"] and by_id["c"]["ood"] == {"zip_code": "unknown category 'Mars'"}
    assert metrics.ood.value(field="zip_code", kind="unknown_category") == 2
    assert metrics.ood.value(field="history", kind="above_range") == 1
    assert metrics.ood.value(field="recency", kind="below_range") == 1
    assert metrics.decisions.value() == 3


def test_strict_mode_refuses_naming_the_field(artifact: Path) -> None:
    rt = PolicyRuntime.load(artifact, seed=0, strict=True)
    assert len(decide_one(rt)["actions"]) == 1
    with pytest.raises(RequestError, match=r"^requests\[0\]\.context\.zip_code: unknown category 'Urbn': out of "
                                           r"the training distribution, refused in strict mode$") as err:
        decide_one(rt, zip_code="Urbn")
    assert err.value.field == "requests[0].context.zip_code"
    with pytest.raises(RequestError, match=r"requests\[1\]\.context\.history: 1e\+300 is above") as err:
        rt.decide([{"request_id": "a", "context": OK}, {"request_id": "b", "context": {**OK, "history": 1e300}}])
    with pytest.raises(RequestError, match=r"requests\[0\]\.context\.recency: -5 is below"):
        decide_one(rt, recency=-5, channel="Fax")  # several: the first in input-field order
    assert rt.metrics.ood.value(field="zip_code", kind="unknown_category") == 1  # refused values are counted
    assert rt.metrics.ood.value(field="channel", kind="unknown_category") == 1
    assert rt.metrics.decisions.value() == 1  # refused batches decide nothing


def test_strict_is_settable_and_metrics_outlive_a_reload(artifact: Path) -> None:
    rt = PolicyRuntime.load(artifact, seed=0)
    assert decide_one(rt, recency=-5)["ood"]
    rt.strict = True
    with pytest.raises(RequestError, match="refused in strict mode"):
        decide_one(rt, recency=-5)
    rt.strict = False
    decide_one(rt, recency=-5)
    again = PolicyRuntime.load(artifact, seed=1, metrics=rt.metrics)  # a reload keeps counting on the same metrics
    decide_one(again, recency=-5)
    assert rt.metrics.ood.value(field="recency", kind="below_range") == 4


def test_old_artifacts_without_ranges_check_only_categories(tmp_path: Path) -> None:
    legacy = ContextEncoder.from_dict({k: v for k, v in ENCODER.to_dict().items() if k != "ranges"})
    assert legacy.ranges == {} and "ranges" not in legacy.to_dict()
    rt = PolicyRuntime.load(write(tmp_path / "legacy", legacy), seed=0, strict=True)
    assert "ood" not in decide_one(rt, history=1e300, recency=-5)
    with pytest.raises(RequestError, match="zip_code: unknown category 'Urbn'"):
        decide_one(rt, zip_code="Urbn")
    with pytest.raises(RequestError, match="history: must be a finite number"):
        decide_one(rt, history=float("inf"))


def test_refuse_encoder_counts_the_unknown_before_refusing(tmp_path: Path) -> None:
    enc = ContextEncoder.fit(TRAIN, ["recency", "history"], ["channel", "zip_code"], unknown="refuse")
    rt = PolicyRuntime.load(write(tmp_path / "refuse", enc), seed=0)
    with pytest.raises(RequestError, match=r"requests\[0\]\.context\.channel: unknown category 'Fax'; known"):
        decide_one(rt, channel="Fax")
    assert rt.metrics.ood.value(field="channel", kind="unknown_category") == 1


def test_long_hostile_values_are_shortened_in_the_problem(artifact: Path) -> None:
    rt = PolicyRuntime.load(artifact, seed=0)
    problem = decide_one(rt, zip_code="x" * 10_000)["ood"]["zip_code"]
    assert len(problem) < 80 and problem.endswith("...")
    surrogate = decide_one(rt, zip_code="\ud800")["ood"]["zip_code"]
    surrogate.encode("utf-8")  # repr escapes the lone surrogate: the problem text is valid UTF-8
