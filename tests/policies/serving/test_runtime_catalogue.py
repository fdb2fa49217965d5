"""Feature-based artifacts: shared-feature bandits exported with their catalogue; the serving runtime scores a
new catalogue (new promotions included) without retraining; bad catalogues are refused naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import onnx.numpy_helper
import pandas as pd
import pytest
import torch
from fastapi.testclient import TestClient

from pushrl.agents.bandits import make_bandit
from pushrl.agents.export import linear_onnx
from pushrl.agents.export_policies import export_policy
from pushrl.envs.common.errors import LoggedDataError
from pushrl.envs.data.features import ContextEncoder
from pushrl.policies.artifact import (
    ArtifactError,
    CatalogueSpec,
    Manifest,
    load_artifact,
    write_artifact,
)
from pushrl.policies.serving.decision_log import (
    DecisionLog,
    join_rewards,
    logged_action_ids,
    read_decision_log,
)
from pushrl.policies.serving.http import create_app
from pushrl.policies.serving.runtime import PolicyRuntime, RequestError
from tests.policies.serving.test_http import AUTH, TOKEN

RNG = np.random.default_rng(0)
CONTEXTS = pd.DataFrame({"age": RNG.normal(40, 10, 400), "city": RNG.choice(["north", "south"], 400)})
ENCODER = ContextEncoder.fit(CONTEXTS, ["age"], ["city"])
CATALOGUE = pd.DataFrame({"price": [10.0, 20.0, 30.0, 15.0], "kind": ["shoe", "shirt", "shoe", "hat"]})
CAT_ENCODER = ContextEncoder.fit(CATALOGUE, ["price"], ["kind"])
IDS = ["p0", "p1", "p2", "p3"]
NEW = [{"id": "p1", "features": {"price": 20.0, "kind": "shirt"}},
       {"id": "n7", "features": {"price": 55.0, "kind": "hat"}},
       {"id": "n8", "features": {"price": 5.0, "kind": "belt"}}]  # a category never seen: the unknown bucket


def _z(frame: pd.DataFrame) -> np.ndarray:
    return np.hstack([CAT_ENCODER.transform(frame), np.ones((len(frame), 1))])


def _x(frame: pd.DataFrame) -> np.ndarray:
    return np.hstack([ENCODER.transform(frame), np.ones((len(frame), 1))])


def _trained(name: str, interaction: str = "outer"):
    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    bandit = make_bandit(name, action_features=_z(CATALOGUE), n_features=ENCODER.n_features + 1, alpha=0.7,
                         interaction=interaction)
    x = _x(CONTEXTS)
    a = rng.integers(0, len(IDS), len(x))
    bandit.fit_offline(x, a, (rng.random(len(x)) < 0.2 + 0.1 * a).astype(float), np.full(len(x), 0.25), mode="ips")
    return bandit


def _reference(bandit, x: np.ndarray) -> np.ndarray:
    """The numpy bandit's own exported score: UCB for LinUCB, the posterior mean for LinTS."""
    return bandit.ucb(x) if hasattr(bandit, "ucb") else bandit.estimates(x)


def _export(bandit, name: str, folder: Path, **kw) -> Path:
    return export_policy(bandit, name, ENCODER, IDS, folder, catalogue=CatalogueSpec.from_frame(CAT_ENCODER, CATALOGUE),
                         parity_rows=2000, **kw)


@pytest.fixture(scope="module")
def linucb_artifact(tmp_path_factory) -> tuple[Path, object]:
    bandit = _trained("linucb_shared")
    return _export(bandit, "linucb_shared", tmp_path_factory.mktemp("a") / "artifact"), bandit


@pytest.mark.parametrize(("name", "interaction"), [("linucb_shared", "outer"), ("linucb_shared", "concat"),
                                                   ("lints_shared", "outer")])
def test_served_scores_follow_the_catalogue_without_retraining(tmp_path: Path, name: str, interaction: str) -> None:
    bandit = _trained(name, interaction)
    art = load_artifact(_export(bandit, name, tmp_path / "a"))
    assert art.manifest.schema_version == 2 and art.manifest.feature_based
    runtime = PolicyRuntime(art, seed=0)
    x = _x(CONTEXTS)
    np.testing.assert_allclose(runtime.scores(ENCODER.transform(CONTEXTS)), _reference(bandit, x), atol=1e-4)
    updated = runtime.with_catalogue(NEW)
    assert updated.action_ids == ["p1", "n7", "n8"] and runtime.action_ids == IDS  # the old runtime is untouched
    bandit.set_action_features(_z(pd.DataFrame([p["features"] for p in NEW])))  # the reference, re-pointed
    np.testing.assert_allclose(updated.scores(ENCODER.transform(CONTEXTS)), _reference(bandit, x), atol=1e-4)


def test_catalogue_version_names_the_action_set(linucb_artifact) -> None:
    path, _ = linucb_artifact
    runtime = PolicyRuntime.load(path, seed=0)
    a, b = runtime.with_catalogue(NEW), runtime.with_catalogue([dict(p) for p in NEW])
    c = runtime.with_catalogue(NEW[:2])
    assert a.policy_version == b.policy_version != c.policy_version
    assert a.policy_version.startswith(runtime.policy_version + ".catalogue-")
    assert a.catalogue == NEW


def test_decisions_after_an_update_are_logged_and_read_back_for_ope(linucb_artifact, tmp_path: Path) -> None:
    path, _ = linucb_artifact
    with DecisionLog(tmp_path / "log") as log:
        live = PolicyRuntime.load(path, seed=0, decision_log=log)
        live.decide([{"request_id": "before", "context": {"age": 30.0, "city": "north"}}])
        updated = live.with_catalogue(NEW)
        out = updated.decide([{"request_id": f"r{i}", "context": {"age": float(20 + i), "city": "south"}}
                              for i in range(50)])
    assert {a for d in out for a in d.actions} <= {"p1", "n7", "n8"}
    assert all(set(d.probabilities) == {"p1", "n7", "n8"} for d in out)
    frame = read_decision_log(tmp_path / "log")
    assert frame["policy_version"].tolist() == [live.policy_version] + [updated.policy_version] * 50
    events = pd.DataFrame({"request_id": frame["request_id"], "click": 1.0})
    manifest = load_artifact(path).manifest
    with pytest.raises(LoggedDataError, match="not in the catalogue"):
        join_rewards(frame, events, manifest=manifest)  # the manifest's ids alone do not cover the new ones
    ids = logged_action_ids(tmp_path / "log", manifest)  # the manifest's, then the recorded update's new ones
    assert ids == IDS + ["n7", "n8"]
    recorded = json.loads((tmp_path / "log" / "catalogues" / f"{updated.policy_version}.json").read_text())
    assert recorded == NEW
    data = join_rewards(frame, events, manifest=manifest, action_ids=ids)
    assert data.n_rounds == 51 and data.action_ids.tolist() == ids


def test_retired_promotions_carry_over(linucb_artifact) -> None:
    path, _ = linucb_artifact
    runtime = PolicyRuntime.load(path, seed=0)
    runtime.retire(["p1", "p2"])
    updated = runtime.with_catalogue(NEW)
    assert [updated.action_ids[j] for j in updated.retired] == ["p1"]  # p2 left the catalogue
    d = updated.decide([{"request_id": "r", "context": {"age": 30.0, "city": "north"}}])[0]
    assert d.probabilities["p1"] == 0.0 and abs(sum(d.probabilities.values()) - 1) < 1e-12


@pytest.mark.parametrize(("catalogue", "field", "message"), [
    ([], "catalogue", "non-empty"),
    ([NEW[0], NEW[1], {"id": "p1", "features": {"price": 1.0, "kind": "hat"}}], "catalogue[2].id", "duplicate id 'p1'"),
    ([NEW[0], {"id": "n7", "features": {"kind": "hat"}}], "catalogue[1].features.price", "missing field"),
    ([NEW[0], {"id": "n7", "features": {"price": 1.0, "kind": "hat", "colour": "red"}}],
     "catalogue[1].features.colour", "unknown field"),
    ([{"id": "n7", "features": {"price": "cheap", "kind": "hat"}}], "catalogue[0].features.price", "number"),
    ([{"id": 1.5, "features": {"price": 1.0, "kind": "hat"}}], "catalogue[0].id", "string or integer"),
    ([{"id": "n7"}], "catalogue[0].features", "missing field"),
    ([{"id": "n7", "features": {"price": 1.0, "kind": "hat"}, "colour": "red"}], "catalogue[0].colour", "unknown"),
])
def test_bad_catalogues_are_refused_naming_the_field(linucb_artifact, catalogue, field, message) -> None:
    path, _ = linucb_artifact
    runtime = PolicyRuntime.load(path, seed=0)
    with pytest.raises(RequestError, match=message) as err:
        runtime.with_catalogue(catalogue)
    assert err.value.field == field
    assert runtime.action_ids == IDS


def test_a_fixed_action_set_artifact_refuses_a_catalogue_update(tmp_path: Path) -> None:
    manifest = Manifest(policy_kind="linear", encoder=ENCODER, action_ids=tuple(IDS))
    runtime = PolicyRuntime.load(write_artifact(tmp_path / "a", linear_onnx(np.ones((4, ENCODER.n_features))),
                                                manifest), seed=0)
    with pytest.raises(RequestError, match="fixed set of 4 actions.*feature-based"):
        runtime.with_catalogue(NEW)


def test_no_push_action_must_stay_and_fixed_set_shadows_are_refused(tmp_path: Path) -> None:
    bandit = _trained("linucb_shared")
    path = _export(bandit, "linucb_shared", tmp_path / "a", no_push_action="p0")
    runtime = PolicyRuntime.load(path, seed=0)
    with pytest.raises(RequestError, match="no-push action 'p0' must stay"):
        runtime.with_catalogue(NEW)
    fixed = write_artifact(tmp_path / "b", linear_onnx(np.ones((4, ENCODER.n_features))),
                           Manifest(policy_kind="linear", encoder=ENCODER, action_ids=tuple(IDS), no_push_action="p0"))
    runtime.attach_shadow(PolicyRuntime.load(fixed, seed=0))
    with pytest.raises(RequestError, match="shadow candidate scores a fixed action set"):
        runtime.with_catalogue([{"id": "p0", "features": {"price": 1.0, "kind": "hat"}}] + NEW)


def test_a_feature_based_shadow_follows_the_update(linucb_artifact, tmp_path: Path) -> None:
    path, _ = linucb_artifact
    candidate = _export(_trained("lints_shared"), "lints_shared", tmp_path / "candidate")
    with DecisionLog(tmp_path / "log") as log:
        live = PolicyRuntime.load(path, seed=0, decision_log=log)
        live.attach_shadow(PolicyRuntime.load(candidate, seed=0))
        live.with_catalogue(NEW).decide([{"request_id": "r", "context": {"age": 30.0, "city": "north"}}])
    rec = read_decision_log(tmp_path / "log").iloc[0]
    assert set(rec["shadow_probabilities"]) == {"p1", "n7", "n8"} and ".catalogue-" in rec["shadow_version"]


def test_export_refuses_a_missing_or_mismatched_catalogue(tmp_path: Path) -> None:
    bandit = _trained("linucb_shared")
    with pytest.raises(ValueError, match="catalogue=CatalogueSpec"):
        export_policy(bandit, "linucb_shared", ENCODER, IDS, tmp_path / "a")
    other = CatalogueSpec.from_frame(CAT_ENCODER, CATALOGUE.assign(price=CATALOGUE["price"] * 2))
    with pytest.raises(ValueError, match="does not encode to the action features"):
        export_policy(bandit, "linucb_shared", ENCODER, IDS, tmp_path / "a", catalogue=other)
    disjoint = make_bandit("linucb", n_actions=4, n_features=ENCODER.n_features + 1)
    with pytest.raises(ValueError, match="fixed action set"):
        export_policy(disjoint, "linucb", ENCODER, IDS, tmp_path / "a",
                      catalogue=CatalogueSpec.from_frame(CAT_ENCODER, CATALOGUE))
    assert not (tmp_path / "a").exists()


def _fixed_axis_model(d: int, m: int, a: int) -> bytes:
    """Two inputs, but the output width is a constant: it cannot score another catalogue."""
    w = np.ones((d, a), np.float32)
    graph = oh.make_graph(
        [oh.make_node("MatMul", ["contexts", "w"], ["output"])], "fixed",
        [oh.make_tensor_value_info("contexts", onnx.TensorProto.FLOAT, ["batch", d]),
         oh.make_tensor_value_info("action_features", onnx.TensorProto.FLOAT, ["actions", m])],
        [oh.make_tensor_value_info("output", onnx.TensorProto.FLOAT, ["batch", a])],
        [onnx.numpy_helper.from_array(w, "w")])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 18)], ir_version=10).SerializeToString()


def test_artifact_validation_needs_a_dynamic_action_axis(tmp_path: Path) -> None:
    spec = CatalogueSpec.from_frame(CAT_ENCODER, CATALOGUE)
    manifest = Manifest(policy_kind="broken", encoder=ENCODER, action_ids=tuple(IDS), catalogue=spec)
    with pytest.raises(ArtifactError, match="action axis must follow the action_features input"):
        write_artifact(tmp_path / "a", _fixed_axis_model(ENCODER.n_features, CAT_ENCODER.n_features, 4), manifest)
    with pytest.raises(ArtifactError, match="must have 2 input"):  # a one-input model with a catalogue
        write_artifact(tmp_path / "a", linear_onnx(np.ones((4, ENCODER.n_features))), manifest)
    assert not (tmp_path / "a").exists()


def test_manifest_catalogue_is_validated() -> None:
    spec = CatalogueSpec.from_frame(CAT_ENCODER, CATALOGUE)
    with pytest.raises(ValueError, match="catalogue.features has 4 rows but action_ids has 3"):
        Manifest(policy_kind="x", encoder=ENCODER, action_ids=("a", "b", "c"), catalogue=spec)
    with pytest.raises(ValueError, match=r"catalogue.features\[1\] must have exactly the fields.*missing \['kind'\]"):
        CatalogueSpec(CAT_ENCODER, ({"price": 1.0, "kind": "hat"}, {"price": 2.0}))
    with pytest.raises(ValueError, match=r"catalogue.features\[0\].price must be a finite number"):
        CatalogueSpec(CAT_ENCODER, ({"price": float("nan"), "kind": "hat"},))
    with pytest.raises(ValueError, match="schema_version must be 2"):
        Manifest(policy_kind="x", encoder=ENCODER, action_ids=tuple(IDS), catalogue=spec, schema_version=1)


def test_edited_catalogue_in_the_manifest_is_refused(linucb_artifact, tmp_path: Path) -> None:
    path, _ = linucb_artifact
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in path.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    raw = json.loads((copy / "manifest.json").read_text())
    raw["catalogue"]["features"][0]["price"] = 99.0
    (copy / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(ArtifactError, match="edited after it was written"):
        load_artifact(copy)


def test_http_catalogue_update(linucb_artifact, tmp_path: Path) -> None:
    path, _ = linucb_artifact
    with TestClient(create_app(path, seed=0, admin_token=TOKEN), raise_server_exceptions=False, headers=AUTH) as http:
        before = http.get("/v1/policy").json()
        resp = http.post("/v1/admin/catalogue", json={"catalogue": NEW})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["action_ids"] == ["p1", "n7", "n8"] and body["previous_version"] == before["policy_version"]
        policy = http.get("/v1/policy").json()
        assert policy["action_ids"] == ["p1", "n7", "n8"] and policy["serving_catalogue"] == NEW
        assert policy["policy_version"] == body["policy_version"] == http.get("/healthz").json()["policy_version"]
        out = http.post("/v1/decide", json={"requests": [{"request_id": "r", "context": {"age": 30, "city": "north"}}]})
        assert out.status_code == 200 and out.json()["decisions"][0]["actions"][0] in {"p1", "n7", "n8"}
        bad = http.post("/v1/admin/catalogue", json={"catalogue": [NEW[0], NEW[0]]})
        assert bad.status_code == 422 and bad.json()["field"] == "catalogue[1].id"
        assert http.post("/v1/admin/catalogue", json={"ids": []}).status_code == 422
        assert http.get("/v1/policy").json()["action_ids"] == ["p1", "n7", "n8"]  # a refused update changes nothing


def test_catalogue_file_keeps_the_served_catalogue_across_restarts_and_reloads(linucb_artifact, tmp_path: Path) -> None:
    path, _ = linucb_artifact
    kept = tmp_path / "catalogue.json"
    with TestClient(create_app(path, seed=0, catalogue_file=kept, admin_token=TOKEN), raise_server_exceptions=False,
                    headers=AUTH) as http:
        assert http.get("/v1/policy").json()["action_ids"] == IDS and not kept.exists()  # nothing kept yet
        assert http.post("/v1/admin/catalogue", json={"catalogue": NEW}).status_code == 200
        assert json.loads(kept.read_text()) == NEW
        reloaded = http.post("/v1/admin/reload", json={"path": str(path)})
        assert reloaded.status_code == 200, reloaded.text
        assert http.get("/v1/policy").json()["action_ids"] == ["p1", "n7", "n8"]  # a new model, the kept catalogue
    with TestClient(create_app(path, seed=0, catalogue_file=kept, admin_token=TOKEN), raise_server_exceptions=False,
                    headers=AUTH) as http:
        policy = http.get("/v1/policy").json()  # a restart serves the kept catalogue
        assert policy["action_ids"] == ["p1", "n7", "n8"] and policy["serving_catalogue"] == NEW
    kept.write_text(json.dumps([NEW[0], NEW[0]]))
    with pytest.raises(ArtifactError, match=r"catalogue.json.*catalogue\[1\].id: duplicate id 'p1'"):
        create_app(path, seed=0, catalogue_file=kept)
    kept.write_text("{not json")
    with pytest.raises(ArtifactError, match="is not valid JSON"):
        create_app(path, seed=0, catalogue_file=kept)
    fixed = write_artifact(tmp_path / "fixed", linear_onnx(np.ones((4, ENCODER.n_features))),
                           Manifest(policy_kind="linear", encoder=ENCODER, action_ids=tuple(IDS)))
    with pytest.raises(ArtifactError, match="needs a feature-based artifact"):
        create_app(fixed, seed=0, catalogue_file=tmp_path / "other.json")
