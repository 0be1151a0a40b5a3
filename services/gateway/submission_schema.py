"""The job submission's JSON schema (Cortex's, within the configured limits), as `GET /openapi.json` describes it."""

from __future__ import annotations

from typing import Any

from services.gateway.submission import INT32_MAX, INT64_MAX
from thresher.core.config import LimitSettings
from thresher.core.retries import ON_FAILURE_CHOICES
from thresher.core.sources import FILE_SOURCES, ITEM_LIST
from thresher.core.store.globs import MAX_GLOB_CHARS
from thresher.core.store.select import MAX_GLOBS


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    """As Go decodes JSON, `null` means "not given": an optional field may be null."""
    return schema | {"type": [schema["type"], "null"]}


def submission_schema(limits: LimitSettings) -> dict[str, Any]:
    """Cortex's submission as the gateway and scheduler take it: `null` is "not given" (as Go decodes it), exactly
    one source is given, and the numbers stay within the configured limits."""
    batch_size = {"type": "integer", "minimum": 1, "maximum": limits.max_batch_size}
    strings = {"type": "array", "items": {"type": "string"}}
    globs = {"type": "array", "maxItems": MAX_GLOBS, "items": {"type": "string", "maxLength": MAX_GLOB_CHARS}}
    file_source = {
        "type": "object",
        "required": ["s3_paths", "batch_size"],
        "properties": {
            "s3_paths": strings | {"minItems": 1},
            "includes": nullable(globs),
            "excludes": nullable(globs),
            "batch_size": batch_size,
        },
    }
    item_list = {
        "type": "object",
        "required": ["items", "batch_size"],
        "properties": {"items": {"type": "array", "minItems": 1}, "batch_size": batch_size},
    }
    sources = {ITEM_LIST: item_list} | dict.fromkeys(FILE_SOURCES, file_source)
    dead_letter_queue = {
        "type": "object",
        "required": ["max_receive_count"],
        "properties": {
            # Empty or left out: the job's own dead letter queue, with this max_receive_count (services/gateway/README).
            "arn": {"type": "string"},
            "max_receive_count": {"type": "integer", "minimum": 1, "maximum": INT32_MAX},
        },
    }
    return {
        "type": "object",
        "anyOf": [{"required": ["workers"]}, {"required": ["min_workers", "max_workers"]}],  # not both: 400
        "properties": {
            "workers": {"type": "integer", "minimum": 1, "maximum": limits.max_workers},
            "min_workers": {"type": "integer", "minimum": 1, "maximum": limits.max_workers},
            "max_workers": {"type": "integer", "minimum": 1, "maximum": limits.max_workers},
            **{name: nullable(source) for name, source in sources.items()},
            "config": nullable({"type": "object"}),
            "timeout": nullable({"type": "integer", "minimum": 1, "maximum": INT64_MAX}),
            "batch_timeout": nullable({"type": "number", "exclusiveMinimum": 0}),
            "sqs_dead_letter_queue": nullable(dead_letter_queue),
            "results": nullable(
                {"type": "object", "required": ["s3_path"], "properties": {"s3_path": {"type": "string"}}}
            ),
            "on_failure": nullable({"type": "string", "enum": list(ON_FAILURE_CHOICES)}),
        },
        "oneOf": [
            {"required": [name], "properties": {s: {"type": "object" if s == name else "null"} for s in sources}}
            for name in sources
        ],
    }
