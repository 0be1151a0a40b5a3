"""`GET /openapi.json`: the HTTP API described in OpenAPI 3.1. The tests check it against the routes that exist."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.gateway.routes import CONFIG
from services.gateway.submission import INT32_MAX
from services.gateway.submission_schema import nullable, submission_schema

_ERROR = {"$ref": "#/components/schemas/Error"}
_JOB = {"$ref": "#/components/schemas/JobResponse"}
_JOB_SPEC = {"$ref": "#/components/schemas/JobSpec"}
_API = {"$ref": "#/components/schemas/Api"}


def _errors(*codes: int) -> dict[str, Any]:
    words = {
        400: "invalid request",
        401: "no API key, or not a valid one",
        403: "the API key lacks the scope, or the job is another key's",
        404: "unknown API or job",
        408: "the request body did not arrive in time",
        409: "wrong state",
        413: "body over the limit",
        429: "too many jobs in progress for the API, or too many workers in all",
        503: "a service is unavailable",
    }
    return {str(c): {"description": words[c], "content": {"application/json": {"schema": _ERROR}}} for c in codes}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(summary: str, ok: dict[str, Any], *errors: int, **extra: Any) -> dict[str, Any]:
    """A route of the job and API service: it takes an API key when keys are configured."""
    if "requestBody" in extra:
        errors += (408, 413)
    responses = {"200": ok, **_errors(*sorted({*errors, 401, 403, 503}))}
    return {"summary": summary, "responses": responses, "security": [{"bearer": []}], **extra}


_API_PARAM = {"name": "api", "in": "path", "required": True, "schema": {"type": "string"}}
_API_NAME_PARAM = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_JOB_ID_PARAM = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
_JOB_ID_QUERY = {"name": "jobID", "in": "query", "required": True, "schema": {"type": "string", "minLength": 1}}
_SUBMISSION_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Submission"}}},
}


_JSON_LINES_BODY = {"required": True, "content": {"application/jsonl": {"schema": {"type": "string"}}}}  # README


def _submit(summary: str, path_param: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    op = _op(
        summary,
        {
            "description": "the job spec; for a dry run, text: the files it would read, then `validations passed`",
            "content": {"application/json": {"schema": _JOB_SPEC}, "text/plain": {"schema": {"type": "string"}}},
        },
        400,
        404,
        429,
        parameters=[path_param, {"name": "dryRun", "in": "query", "schema": {"type": "string"}}],
        requestBody=body,
    )
    op["responses"]["400"]["content"]["text/plain"] = {"schema": {"type": "string"}}  # a dry run's, as Cortex's
    return op


# Cortex's job routes: the operator's path, and the API's endpoint that `cortex get` printed.
_CORTEX_JOB_ROUTES: dict[str, Any] = {
    "post": _submit("Submit a job (Cortex); ?dryRun=true validates and creates nothing", _API_PARAM, _SUBMISSION_BODY),
    "get": _op("A job's status (Cortex)", _json("the job", _JOB), 400, 404, parameters=[_API_PARAM, _JOB_ID_QUERY]),
    "delete": _op(
        "Stop a job (Cortex)",
        _json("stopped", {"type": "object", "properties": {"message": {"type": "string"}}}),
        400,
        404,
        409,
        parameters=[_API_PARAM, _JOB_ID_QUERY],
    ),
}

PATHS: dict[str, dict[str, Any]] = {
    "/batch/{api}": _CORTEX_JOB_ROUTES,
    "/{api}": _CORTEX_JOB_ROUTES,
    "/v1/apis": {
        "get": _op(
            "List Batch APIs",
            _json("the APIs", {"type": "object", "properties": {"apis": {"type": "array", "items": _API}}}),
        ),
        "post": _op(
            "Deploy (or update) Batch APIs",
            _json("the deployed APIs", {"type": "object", "properties": {"apis": {"type": "array", "items": _API}}}),
            400,
            requestBody={
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["apis"],
                            "properties": {
                                "apis": {"type": "array", "minItems": 1, "items": {"type": "object"}},
                                "working_dir": nullable({"type": "string", "pattern": r"^(/[\s\S]*)?$"}),
                            },
                        }
                    }
                },
            },
        ),
    },
    "/v1/apis/{name}/jobs": {"post": _submit("Submit a job of items as JSON Lines", _API_NAME_PARAM, _JSON_LINES_BODY)},
    "/v1/apis/{name}": {
        "get": _op("A Batch API", _json("the API", _API), 404, parameters=[_API_NAME_PARAM]),
        "delete": _op(
            "Delete a Batch API: its jobs in progress end `stopped`; ?delete_jobs=true also forgets its jobs",
            _json(
                "deleted",
                {
                    "type": "object",
                    "properties": {
                        "message": {"type": "string"},
                        "stopped_jobs": {"type": "array", "items": {"type": "string"}},
                        "deleted_jobs": {"type": "integer"},
                    },
                },
            ),
            404,
            parameters=[_API_NAME_PARAM, {"name": "delete_jobs", "in": "query", "schema": {"type": "string"}}],
        ),
    },
    "/v1/jobs": {
        "get": _op(
            "Jobs, newest first",
            _json("the jobs", {"type": "object", "properties": {"jobs": {"type": "array", "items": _JOB}}}),
            400,
            parameters=[
                {"name": "api", "in": "query", "schema": {"type": "string"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": INT32_MAX}},
            ],
        ),
    },
    "/v1/jobs/{job_id}": {
        "get": _op("A job", _json("the job", _JOB), 404, parameters=[_JOB_ID_PARAM]),
        "delete": _op("Stop a job", _json("the job after the stop", _JOB), 404, 409, parameters=[_JOB_ID_PARAM]),
    },
    "/v1/jobs/{job_id}/failed": {
        "get": _op(
            "A job's dead-lettered batches with their items, attempts and last error",
            _json("the failed batches", {"$ref": "#/components/schemas/FailedBatches"}),
            404,
            parameters=[_JOB_ID_PARAM],
        ),
    },
    "/v1/jobs/{job_id}/retry": {
        "post": _op(
            "Submit a new job made of a finished job's failed batches",
            _json("the new job", _JOB_SPEC),
            400,
            404,
            409,
            429,
            parameters=[_JOB_ID_PARAM],
        ),
    },
    "/v1/jobs/{job_id}/events": {
        "get": _op(
            "A job's changes as server-sent events (`status`, then `error` if the stream fails), until it ends",
            {"description": "an event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
            404,
            parameters=[_JOB_ID_PARAM],
        ),
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics of the gateway: its process, and HTTP requests by route and status",
            "responses": {
                "200": {"description": "Prometheus text", "content": {"text/plain": {"schema": {"type": "string"}}}}
            },
        }
    },
    "/v1/jobs/{job_id}/logs": {
        "get": _op(
            "The job's worker and dequeuer logs, a line each (`<worker id> <source> | <line>`); ?follow=true streams"
            " new lines until the job ends",
            {"description": "log lines", "content": {"text/plain": {"schema": {"type": "string"}}}},
            404,
            parameters=[_JOB_ID_PARAM, {"name": "follow", "in": "query", "schema": {"type": "boolean"}}],
        ),
    },
    "/v1/key": {
        "get": _op(
            "The request's API key: its name (a job's `owner`) and its scopes",
            _json(
                "the key",
                {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "scopes": {"type": "array", "items": {"type": "string"}},
                    },
                },
            ),
        ),
    },
    "/ui/{file}": {
        "get": {
            "summary": "The web console: its page (`/ui/`) and its scripts and styles; it asks for an API key",
            "parameters": [{"name": "file", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": {
                    "description": "a file of the console",
                    "content": {
                        t: {"schema": {"type": "string"}}
                        for t in ("text/html", "text/javascript", "text/css", "image/svg+xml")
                    },
                },
                **_errors(404),
            },
        }
    },
    "/v1/jobs/{job_id}/results": {
        "get": _op(
            "The job's results as JSON Lines in batch order (`batch_id`, `index`, `result`, with ?items=true `items`);"
            " ?after=<index> resumes, ?follow=true streams new ones until the job is final",
            {"description": "JSON Lines", "content": {"application/x-ndjson": {"schema": {"type": "string"}}}},
            400,
            404,
            parameters=[
                _JOB_ID_PARAM,
                {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                {"name": "follow", "in": "query", "schema": {"type": "boolean"}},
                {"name": "items", "in": "query", "schema": {"type": "boolean"}},
            ],
        ),
        "delete": _op(
            "Delete the job's results",
            _json("what was deleted", {"type": "object"}),
            404,
            parameters=[_JOB_ID_PARAM],
        ),
    },
    "/healthz": {"get": {"summary": "The gateway is up", "responses": {"200": _json("ok", {"type": "object"})}}},
    "/openapi.json": {"get": {"summary": "This document", "responses": {"200": _json("OpenAPI", {"type": "object"})}}},
}

JOB_SPEC_FIELDS = (
    "job_id",
    "api_name",
    "kind",
    "workers",
    "sqs_dead_letter_queue",
    "config",
    "timeout",
    "api_id",
    "sqs_url",
    "start_time",
)
SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["kind", "message"],
        "properties": {"kind": {"type": "string"}, "message": {"type": "string"}},
    },
    "JobSpec": {"type": "object", "properties": {k: {} for k in JOB_SPEC_FIELDS}},
    "JobResponse": {
        "type": "object",
        "properties": {"job_status": {"type": "object"}, "metrics": {"type": "object"}, "endpoint": {"type": "string"}},
    },
    "Api": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "kind": {"type": "string"},
            "endpoint": {"type": "string"},
            "api_id": {"type": "string"},
            "pod": {"type": "object"},
            "compute": nullable({"type": "object"}),
            "node_groups": {"type": "array", "items": {"type": "string"}},
            "node_selector": {"type": "object"},
            "tolerations": {"type": "array", "items": {"type": "object"}},
        },
    },
    "FailedBatches": {
        "type": "object",
        "properties": {
            "job_id": {"type": "string"},
            "batches": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "batch_id": {"type": "string"},
                        "items": {"type": "array"},
                        "attempts": {"type": "integer"},
                        "error": {"type": "string"},
                    },
                },
            },
        },
    },
}


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Thresher", "version": "1", "description": "Batch jobs on demand; Cortex Batch API compatible."},
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "an API key (`thresher up` writes its own to <data dir>/api_key); scopes: submit,"
                " read, admin",
            }
        },
    },
}


async def openapi_document(request: web.Request) -> web.Response:
    """The document for this gateway's settings: its limits, and only the paths it serves (not /metrics when that
    has a port of its own)."""
    served = {r.resource.canonical for r in request.app.router.routes() if r.resource is not None}
    components = DOCUMENT["components"] | {
        "schemas": SCHEMAS | {"Submission": submission_schema(request.app[CONFIG].limits)}
    }
    paths = {p: ops for p, ops in PATHS.items() if p in served}
    return web.json_response(DOCUMENT | {"paths": paths, "components": components})
