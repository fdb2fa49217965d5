"""Admin behind a token, reloads confined to the artifact root, incompatible reloads refused, the typed spec."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from pushrl.agents.export import linear_onnx
from pushrl.envs.data.features import ContextEncoder
from pushrl.policies.artifact import Exploration, Manifest, write_artifact
from pushrl.policies.serving import http as http_module
from pushrl.policies.serving.http import MAX_CATALOGUE, create_app, read_admin_token
from tests.policies.serving.test_http import ACTIONS, AUTH, CONTEXT, ENCODER, TOKEN, write

OTHER = ContextEncoder(("age",), (40.0,), (12.0,), ("city",), {"city": ("north", "south")})


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    (tmp_path / "root").mkdir()
    write(tmp_path / "root" / "live", seed=0)
    write(tmp_path / "root" / "next", seed=1)
    return tmp_path / "root"


@pytest.fixture()
def admin(root: Path):
    with TestClient(create_app(root / "live", seed=0, admin_token=TOKEN), raise_server_exceptions=False) as c:
        yield c


def reload(client: TestClient, path: str | Path, headers: dict | None = None):
    return client.post("/v1/admin/reload", json={"path": str(path)}, headers=AUTH if headers is None else headers)


def decide_ok(client: TestClient, rid: str) -> bool:
    return client.post("/v1/decide", json={"requests": [{"request_id": rid, "context": CONTEXT}]}).status_code == 200


def test_admin_is_off_without_a_token(root: Path) -> None:
    with TestClient(create_app(root / "live", seed=0), raise_server_exceptions=False) as c:
        for route in ("reload", "retire", "catalogue"):
            assert c.post(f"/v1/admin/{route}", json={}, headers=AUTH).status_code == 404
        assert not [p for p in c.get("/openapi.json").json()["paths"] if p.startswith("/v1/admin")]


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401), ({"Authorization": "Basic dXNlcjpwdw=="}, 401), ({"Authorization": "Bearer"}, 401),
    ({"Authorization": "Bearer wrong-token-of-some-length"}, 403), ({"Authorization": f"Bearer {TOKEN}x"}, 403),
    ({"Authorization": f"Bearer {TOKEN[:-1]}"}, 403),
])
def test_every_admin_call_needs_the_token(admin: TestClient, root: Path, headers: dict, status: int) -> None:
    before = admin.get("/healthz").json()["policy_version"]
    for route, body in (("reload", {"path": str(root / "next")}), ("retire", {"ids": ["Mens E-Mail"]}),
                        ("catalogue", {"catalogue": []})):
        resp = admin.post(f"/v1/admin/{route}", json=body, headers=headers)
        assert resp.status_code == status, resp.text
        assert resp.json()["field"] == "authorization"
        if status == 401:
            assert resp.headers["www-authenticate"].startswith("Bearer")
    assert admin.get("/healthz").json()["policy_version"] == before  # nothing changed
    assert admin.post("/v1/admin/retire", json={"ids": ["Mens E-Mail"]}, headers=AUTH).json() == {
        "retired": ["Mens E-Mail"]}


def test_the_token_must_be_long_enough(root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 16"):
        create_app(root / "live", admin_token="short")
    (tmp_path / "token").write_text(f"  {TOKEN}\n")
    assert read_admin_token(tmp_path / "token") == TOKEN
    (tmp_path / "bad").write_text("has a space in it, long")
    with pytest.raises(ValueError, match="bad"):
        read_admin_token(tmp_path / "bad")


def test_reload_inside_the_root_by_absolute_or_relative_path(admin: TestClient, root: Path) -> None:
    first = admin.get("/healthz").json()["policy_version"]
    swapped = reload(admin, "next")  # relative: from the root
    assert swapped.status_code == 200, swapped.text
    assert swapped.json()["previous_version"] == first
    assert reload(admin, root / "live").status_code == 200
    assert admin.get("/healthz").json()["policy_version"] == first


def test_paths_outside_the_root_are_refused_alike(admin: TestClient, root: Path, tmp_path: Path) -> None:
    write(tmp_path / "outside", seed=2)  # a real artifact, just not under the root
    (root / "escape").symlink_to(tmp_path / "outside")
    answers = [reload(admin, p) for p in (tmp_path / "outside", "../outside", root / "live" / ".." / ".." / "outside",
                                           "escape", "/etc", "/does/not/exist", "../nope", root, "")]
    assert [a.status_code for a in answers] == [403] * 9
    assert len({a.text for a in answers}) == 1  # the same answer: nothing says which folders exist
    assert "outside" not in answers[0].text and "etc" not in answers[0].text
    inside = reload(admin, "missing")  # inside the root, reporting is fine
    assert inside.status_code == 422 and inside.json()["field"] == "path"


def test_an_explicit_artifact_root(root: Path, tmp_path: Path) -> None:
    other_root = tmp_path / "deploys"
    write(other_root / "v2", seed=3)
    app = create_app(root / "live", seed=0, admin_token=TOKEN, artifact_root=other_root)
    with TestClient(app, raise_server_exceptions=False) as c:
        assert reload(c, "v2").status_code == 200
        assert reload(c, root / "next").status_code == 403  # the started artifact's folder is not the root now


def test_another_datasets_artifact_is_refused_and_the_live_policy_keeps_serving(admin: TestClient, root: Path) -> None:
    weight = np.random.default_rng(0).normal(size=(3, OTHER.n_features))
    write_artifact(root / "other-dataset", linear_onnx(weight),
                   Manifest(policy_kind="linear", encoder=OTHER, action_ids=ACTIONS))
    before = admin.get("/healthz").json()["policy_version"]
    resp = reload(admin, root / "other-dataset")
    assert resp.status_code == 409, resp.text
    assert resp.json()["field"] == "path" and "context field 'recency'" in resp.json()["detail"]
    assert "keeps serving" in resp.json()["detail"]
    assert admin.get("/healthz").json()["policy_version"] == before
    assert decide_ok(admin, "after-409")


def test_a_different_action_set_or_field_kind_is_refused(admin: TestClient, root: Path) -> None:
    weight = np.random.default_rng(0).normal(size=(3, ENCODER.n_features))
    write_artifact(root / "renamed", linear_onnx(weight), Manifest(
        policy_kind="linear", encoder=ENCODER, action_ids=("No E-Mail", "Kids E-Mail", "Womens E-Mail")))
    resp = reload(admin, root / "renamed")
    assert resp.status_code == 409 and "action_ids[1] is 'Mens E-Mail' now and 'Kids E-Mail'" in resp.json()["detail"]
    write_artifact(root / "fewer", linear_onnx(weight[:2]), Manifest(
        policy_kind="linear", encoder=ENCODER, action_ids=ACTIONS[:2]))
    resp = reload(admin, root / "fewer")
    assert resp.status_code == 409 and "3 actions, the new artifact 2" in resp.json()["detail"]
    kinds = ContextEncoder(("recency",), (6.0,), (3.5,), ("history", "channel"),
                           {"history": ("low", "high"), "channel": ("Web",)})
    write_artifact(root / "kinds", linear_onnx(np.ones((3, kinds.n_features))), Manifest(
        policy_kind="linear", encoder=kinds, action_ids=ACTIONS))
    resp = reload(admin, root / "kinds")
    assert resp.status_code == 409 and "'history' is a number now and a category" in resp.json()["detail"]
    assert decide_ok(admin, "still-serving")
    # a retrained artifact with a new category value is compatible
    grown = ContextEncoder(("recency", "history"), (6.0, 240.0), (3.5, 250.0), ("channel",),
                           {"channel": ("Multichannel", "Phone", "Web", "App")})
    write_artifact(root / "grown", linear_onnx(np.ones((3, grown.n_features))), Manifest(
        policy_kind="linear", encoder=grown, action_ids=ACTIONS, exploration=Exploration("epsilon", 0.2)))
    assert reload(admin, root / "grown").status_code == 200


def test_catalogue_size_limit(admin: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_module, "MAX_CATALOGUE", 2)
    promotions = [{"id": f"p{i}", "features": {}} for i in range(3)]
    resp = admin.post("/v1/admin/catalogue", json={"catalogue": promotions}, headers=AUTH)
    assert resp.status_code == 413 and resp.json()["field"] == "catalogue"
    assert MAX_CATALOGUE == 10_000


def test_admin_bodies_are_checked_like_decide_bodies(admin: TestClient) -> None:
    resp = admin.post("/v1/admin/reload", content=b'{"path": "a", "path": "b"}',
                      headers={**AUTH, "content-type": "application/json"})
    assert resp.status_code == 400
    assert admin.post("/v1/admin/reload", content=b'{"path": "next"}',
                      headers={**AUTH, "content-type": "text/plain"}).status_code == 415


def _example(schema: dict) -> object:
    """The first value a generated client would send for a schema (enums: their first member)."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {name: _example(sub) for name, sub in schema.get("properties", {}).items()
                if name in schema.get("required", [])}
    if kind == "array":
        return [_example(schema["items"])] * max(1, schema.get("minItems", 1))
    if kind == "string":
        return "c-generated"
    if kind in ("number", "integer"):
        return max(1, schema.get("minimum", 1))
    raise AssertionError(f"untyped schema {schema}")


def test_the_openapi_spec_is_typed_from_the_artifact(admin: TestClient) -> None:
    spec = admin.get("/openapi.json").json()
    decide = spec["paths"]["/v1/decide"]["post"]
    body = decide["requestBody"]["content"]["application/json"]["schema"]
    request = body["properties"]["requests"]["items"]
    context = request["properties"]["context"]
    assert context["required"] == ["recency", "history", "channel"] and context["additionalProperties"] is False
    assert context["properties"]["recency"] == {"type": "number"}
    assert context["properties"]["channel"] == {"enum": ["Multichannel", "Phone", "Web"]}
    assert request["properties"]["exclude"]["items"] == {"enum": list(ACTIONS)}
    assert request["properties"]["request_id"]["maxLength"] == 256
    assert set(decide["responses"]) == {"200", "400", "409", "413", "415", "422"}
    for route in ("reload", "retire", "catalogue"):
        op = spec["paths"][f"/v1/admin/{route}"]["post"]
        assert op["requestBody"]["required"] is True and op["security"] == [{"adminToken": []}]
        assert {"400", "401", "403", "413", "415", "422"} <= set(op["responses"])
    assert spec["paths"]["/v1/admin/reload"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "required"] == ["path"]
    assert spec["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"
    generated = _example(body)  # what a client generated from the spec sends: a real decision
    resp = admin.post("/v1/decide", json=generated)
    assert resp.status_code == 200, resp.text
    assert resp.json()["decisions"][0]["actions"][0] in ACTIONS


def test_the_spec_follows_a_reload(admin: TestClient, root: Path) -> None:
    grown = ContextEncoder(("recency", "history"), (6.0, 240.0), (3.5, 250.0), ("channel",),
                           {"channel": ("Multichannel", "Phone", "Web", "App")})
    write_artifact(root / "grown", linear_onnx(np.ones((3, grown.n_features))),
                   Manifest(policy_kind="linear", encoder=grown, action_ids=ACTIONS))
    assert reload(admin, "grown").status_code == 200
    spec = admin.get("/openapi.json").json()
    context = spec["paths"]["/v1/decide"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "properties"]["requests"]["items"]["properties"]["context"]
    assert context["properties"]["channel"]["enum"][-1] == "App"
    assert spec["info"]["version"] == admin.get("/healthz").json()["policy_version"]


@pytest.mark.skipif(os.name != "posix", reason="symlinks")
def test_a_symlinked_root_still_confines(root: Path, tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to(root)
    app = create_app(tmp_path / "link" / "live", seed=0, admin_token=TOKEN, artifact_root=tmp_path / "link")
    with TestClient(app, raise_server_exceptions=False) as c:
        assert reload(c, "next").status_code == 200
        assert reload(c, tmp_path / "link" / ".." / "root" / "next").status_code == 200  # resolves inside
        assert reload(c, tmp_path).status_code == 403
