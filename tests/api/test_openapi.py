"""The OpenAPI document: valid, open, generated from the validation schemas, covering every route."""

from __future__ import annotations

import json
import re

from flask import Flask
from openapi_spec_validator import validate

from api.schemas import JobRequest
from core.jobs import INTERNAL_FIELDS


def _doc(app: Flask) -> dict:
    resp = app.test_client().get("/openapi.json")  # no key: the contract is public
    assert resp.status_code == 200
    return resp.get_json()  # type: ignore[no-any-return]


def test_document_is_valid_openapi(app: Flask) -> None:
    doc = _doc(app)
    validate(doc)
    assert doc["openapi"].startswith("3.")
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "cvk_<id>_<secret>"}


def test_every_served_route_is_documented(app: Flask) -> None:
    doc = _doc(app)
    for rule in app.url_map.iter_rules():
        if rule.endpoint.endswith("static"):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            assert method.lower() in doc["paths"].get(path, {}), f"{method} {path} is not in /openapi.json"


def test_v1_operations_need_the_key_and_document_errors(app: Flask) -> None:
    doc = _doc(app)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if path.startswith("/v1"):
                assert "security" not in op  # the global bearer requirement applies
                for status in ("401", "429", "503"):
                    assert op["responses"][status]["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Error"}, (method, path, status)
                assert "Retry-After" in op["responses"]["429"]["headers"]
            elif path != "/metrics":
                assert op["security"] == [], (method, path)


def test_bodies_come_from_the_validation_schemas(app: Flask) -> None:
    schemas = _doc(app)["components"]["schemas"]
    generated = JobRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    assert schemas["JobRequest"]["properties"] == generated["properties"]
    assert schemas["JobRequest"]["additionalProperties"] is False
    assert schemas["BatchRequest"]["properties"]["jobs"]["items"] == {"$ref": "#/components/schemas/JobRequest"}
    job = schemas["Job"]
    assert not INTERNAL_FIELDS & set(job["properties"])
    assert {"id", "status", "image", "texts", "result", "error", "webhook"} <= set(job["required"])


def test_a_created_job_matches_the_job_schema(client, app: Flask) -> None:  # type: ignore[no-untyped-def]
    from jsonschema import Draft202012Validator

    doc = _doc(app)
    schema = {**doc["components"]["schemas"]["Job"], "$defs": doc["components"]["schemas"]}
    resolved = json.loads(json.dumps(schema).replace("#/components/schemas/", "#/$defs/"))
    job = client.post("/v1/jobs", json={"image": "s3://photos/a.jpg", "text": "a"}).get_json()
    Draft202012Validator(resolved).validate(job)
