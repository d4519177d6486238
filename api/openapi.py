"""``GET /openapi.json``: the OpenAPI 3.1 contract, built from the schemas the API validates with.

Request bodies come from ``api.schemas`` and the job document from ``core.jobs.Job`` (less its
internal fields), through pydantic's JSON Schema, so nothing is written twice. Only the
operations whose route this app serves are listed: the document never promises an endpoint
that a deployment lacks.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from flask import Blueprint, Flask, current_app
from pydantic.json_schema import models_json_schema

from api.schemas import (
    DEFAULT_LIST_LIMIT,
    DEFAULT_WINDOW_MINUTES,
    MAX_BATCH_JOBS,
    MAX_IDEMPOTENCY_KEY,
    MAX_LIST_LIMIT,
    MAX_WINDOW_MINUTES,
    BatchRequest,
    JobRequest,
)
from core.jobs import INTERNAL_FIELDS, Job, Status

bp = Blueprint("openapi", __name__)

REF = "#/components/schemas/{model}"
_RULE_ARG = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


@bp.get("/openapi.json")
def openapi_document() -> Any:
    """Return the OpenAPI document of this app (built on the first request: the routes are fixed by then)."""
    ext = current_app.extensions["verifier"]
    if "openapi" not in ext:
        ext["openapi"] = build_document(current_app)
    return ext["openapi"]


def build_document(app: Flask) -> dict[str, Any]:
    """Return the OpenAPI document covering the routes ``app`` serves."""
    served: set[tuple[str, str]] = set()
    for rule in app.url_map.iter_rules():
        for method in rule.methods or ():
            served.add((_RULE_ARG.sub(r"{\1}", rule.rule), method.lower()))
    paths: dict[str, dict[str, Any]] = {}
    for (path, method), operation in _operations().items():
        if (path, method) in served:
            paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "caption-verifier",
            "version": "1",
            "description": "Checks whether claimed captions fit images. Errors always have the body "
                           '`{"error": {"code", "message"}}`; see docs/api.md for the codes.',
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerAuth": []}],
        "paths": paths,
        "components": {"schemas": _schemas(), "securitySchemes": {
            "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "cvk_<id>_<secret>"},
        }},
    }


@lru_cache(maxsize=1)
def _schemas() -> dict[str, Any]:
    _, generated = models_json_schema(
        [(JobRequest, "validation"), (BatchRequest, "validation"), (Job, "serialization")], ref_template=REF
    )
    schemas: dict[str, Any] = generated["$defs"]
    job = schemas["Job"]
    for name in INTERNAL_FIELDS:
        job["properties"].pop(name, None)
    # public() writes every field, null or not.
    job["required"] = list(job["properties"])
    job["description"] = "The job document."
    # Items are validated one by one (each may fail alone), but a client sends job bodies.
    schemas["BatchRequest"]["properties"]["jobs"]["items"] = {"$ref": REF.format(model="JobRequest")}
    schemas.update({
        "Error": {
            "type": "object", "required": ["error"], "additionalProperties": False,
            "properties": {"error": {"$ref": REF.format(model="ErrorDetail")}},
        },
        "ErrorDetail": {
            "type": "object", "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$", "description": "stable snake_case"},
                "message": {"type": "string", "description": "for humans"},
                "details": {"type": "object"},
            },
        },
        "JobList": {
            "type": "object", "required": ["jobs", "next_cursor"], "additionalProperties": False,
            "properties": {
                "jobs": {"type": "array", "items": {"$ref": REF.format(model="Job")}},
                "next_cursor": {"type": ["string", "null"]},
            },
        },
        "BatchResponse": {
            "type": "object", "required": ["jobs"], "additionalProperties": False,
            "properties": {"jobs": {"type": "array", "maxItems": MAX_BATCH_JOBS, "items": {"oneOf": [
                {"$ref": REF.format(model="Job")}, {"$ref": REF.format(model="Error")},
            ]}}},
        },
    })
    return schemas


def _json(schema: str | dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    ref = {"$ref": REF.format(model=schema)} if isinstance(schema, str) else schema
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": ref}}}
    if headers:
        response["headers"] = headers
    return response


_RETRY_AFTER = {"Retry-After": {"schema": {"type": "string"}, "description": "seconds to wait"}}
_ERRORS = {
    "400": _json("Error", "malformed request (not JSON, not an object, bad cursor)"),
    "401": _json("Error", "no API key, or an unknown or revoked one",
                 {"WWW-Authenticate": {"schema": {"type": "string"}}}),
    "403": _json("Error", "the key may not do this (bucket_not_allowed, missing_scope)"),
    "404": _json("Error", "no such job, or another tenant's"),
    "409": _json("Error", "conflict with the job's state or an earlier request"),
    "413": _json("Error", "the request body is over the configured size"),
    "422": _json("Error", "a field is invalid"),
    "429": _json("Error", "over the key's request rate or the tenant's job quota", _RETRY_AFTER),
    "503": _json("Error", "a dependency (Redis, the queue) is unreachable", _RETRY_AFTER),
}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: _ERRORS[code] for code in ("401", "429", "503", *codes)}


def _path_id(description: str = "the job id") -> dict[str, Any]:
    return {"name": "job_id", "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": REF.format(model=schema)}}}}


_OPEN: list[dict[str, Any]] = []
_ANY_OBJECT = {"type": "object"}


def _operations() -> dict[tuple[str, str], dict[str, Any]]:
    job_id = _path_id()
    return {
        ("/v1/jobs", "post"): {
            "operationId": "createJob", "summary": "Submit one job",
            "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                            "description": "the same key and body return the same job (200)",
                            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY}}],
            "requestBody": _body("JobRequest"),
            "responses": {"202": _json("Job", "accepted: the job, queued"),
                          "200": _json("Job", "an idempotent replay: the earlier job"),
                          **_errors("400", "403", "409", "413", "422")},
        },
        ("/v1/jobs", "get"): {
            "operationId": "listJobs", "summary": "List the tenant's jobs, newest first",
            "parameters": [
                {"name": "status", "in": "query", "schema": {"type": "string", "enum": [s.value for s in Status]}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT,
                                                             "default": DEFAULT_LIST_LIMIT}},
                {"name": "cursor", "in": "query", "schema": {"type": "string"},
                 "description": "next_cursor of the previous page"},
            ],
            "responses": {"200": _json("JobList", "a page of jobs"), **_errors("400", "422")},
        },
        ("/v1/jobs/batch", "post"): {
            "operationId": "createJobs", "summary": f"Submit up to {MAX_BATCH_JOBS} jobs",
            "description": "Each item is the job document or, for that item alone, an error. "
                           "Every valid item counts against the tenant's quota; if they do not all fit, "
                           "the whole request gets 429.",
            "requestBody": _body("BatchRequest"),
            "responses": {"202": _json("BatchResponse", "one entry per item, in order"),
                          **_errors("400", "413", "422")},
        },
        ("/v1/jobs/{job_id}", "get"): {
            "operationId": "getJob", "summary": "Read a job", "parameters": [job_id],
            "responses": {"200": _json("Job", "the job"), **_errors("404")},
        },
        ("/v1/jobs/{job_id}", "delete"): {
            "operationId": "cancelJob", "summary": "Cancel a queued or running job", "parameters": [job_id],
            "responses": {"200": _json("Job", "the canceled job"), **_errors("404", "409")},
        },
        ("/v1/jobs/{job_id}/deliveries", "get"): {
            "operationId": "listDeliveries", "summary": "The webhook delivery attempts of a job",
            "parameters": [job_id],
            "responses": {"200": _json(_ANY_OBJECT, "the delivery attempts"), **_errors("404")},
        },
        ("/v1/jobs/{job_id}/webhook/redeliver", "post"): {
            "operationId": "redeliverWebhook", "summary": "Send a finished job's webhook again",
            "parameters": [job_id],
            "responses": {"202": _json(_ANY_OBJECT, "the redelivery is queued"),
                          "200": _json(_ANY_OBJECT, "the redelivery is queued"),
                          **_errors("404", "409", "422")},
        },
        ("/v1/stats", "get"): {
            "operationId": "getStats", "summary": "Throughput, latency, queues, workers (operator scope)",
            "parameters": [{"name": "window", "in": "query", "description": "minutes",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_WINDOW_MINUTES,
                                       "default": DEFAULT_WINDOW_MINUTES}}],
            "responses": {"200": _json(_ANY_OBJECT, "the figures"), **_errors("403", "422")},
        },
        ("/healthz", "get"): {
            "operationId": "healthz", "summary": "The process is alive", "security": _OPEN,
            "responses": {"200": _json({"type": "object", "required": ["status"],
                                        "properties": {"status": {"const": "ok"}}}, "alive")},
        },
        ("/readyz", "get"): {
            "operationId": "readyz", "summary": "Redis answers and a warm worker was seen recently",
            "security": _OPEN,
            "responses": {"200": _json(_READY, "ready"), "503": _json(_READY, "not ready, with an error")},
        },
        ("/metrics", "get"): {
            "operationId": "metrics", "summary": "Prometheus text (a key with the operator scope when not public)",
            "security": [{}, {"bearerAuth": []}],
            "responses": {"200": {"description": "Prometheus exposition format",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}},
                          "401": _ERRORS["401"], "403": _ERRORS["403"]},
        },
        ("/openapi.json", "get"): {
            "operationId": "openapi", "summary": "This document", "security": _OPEN,
            "responses": {"200": _json(_ANY_OBJECT, "OpenAPI 3.1")},
        },
        ("/dashboard", "get"): {
            "operationId": "dashboard", "summary": "The ops dashboard page (its data: /v1/stats)",
            "security": _OPEN,
            "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}},
        },
    }


_READY = {
    "type": "object", "required": ["status", "checks"],
    "properties": {
        "status": {"enum": ["ready", "not_ready"]},
        "checks": {"type": "object"},
        "error": {"$ref": REF.format(model="ErrorDetail")},
    },
}
