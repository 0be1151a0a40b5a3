"""A Cortex job submission (JSON) read into the contract's JobSubmission: types only, semantics are the scheduler's.

As Cortex decodes with Go's encoding/json, unknown keys are ignored, `null` means "not given" and a value of the
wrong type is an error naming its field. Exactly one source, workers >= 1 and the like are checked by the scheduler.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from services.gateway.rawitems import raw_items
from thresher.core.errors import ConflictingFields, InvalidRequest
from thresher.core.sources import FILE_SOURCES, ITEM_LIST
from thresher.v1 import jobs_pb2

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
# Arrays and objects nest at most this deep in a request body (an item is at depth 3): deeper values would reach
# Python's recursion limit in some service or worker that parses or writes them again.
MAX_JSON_DEPTH = 100
_CONTAINERS = (list, dict)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # \ud800-\udfff: half of a pair, or a lone surrogate


def parse_json_body(body: bytes) -> Any:
    """Strict JSON: NaN and Infinity are not JSON, so they are refused rather than passed to workers; so are lone
    surrogates (no character: they cannot be written as UTF-8) and values nested deeper than MAX_JSON_DEPTH."""
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise InvalidRequest(f"malformed JSON: {e}") from e
    except RecursionError:
        raise InvalidRequest(f"malformed JSON: arrays and objects nested deeper than {MAX_JSON_DEPTH}") from None
    # Only a body that could break a rule is looked at again: most have few brackets and no \ud800-\udfff escapes.
    if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH:
        _check_depth(value)
    if _SURROGATE_ESCAPE.search(body):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            raise InvalidRequest(f"malformed JSON: {e.object[e.start]!r} is a lone surrogate, not a character") from e
    return value


def _check_depth(value: Any) -> None:
    """InvalidRequest for arrays and objects nested deeper than MAX_JSON_DEPTH; looked at a level at a time."""
    level = [value] if type(value) in _CONTAINERS else []
    for _ in range(MAX_JSON_DEPTH):
        level = [c for node in level for c in (node.values() if type(node) is dict else node) if type(c) in _CONTAINERS]
        if not level:
            return
    raise InvalidRequest(f"malformed JSON: arrays and objects nested deeper than {MAX_JSON_DEPTH}")


# One encoder for every value: json.dumps with options builds a new one per call, and a job may have millions of items.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def compact_json(value: Any, where: str) -> bytes:
    """The value as compact UTF-8 JSON, the form workers receive."""
    try:
        return _compact(value)
    except ValueError as e:  # a number too large for a double, such as 1e400
        raise InvalidRequest(f"{where}: number out of range") from e


def _compact(value: Any) -> bytes:
    if type(value) is int:  # the commonest item, ten times faster than through the encoder (bools are not ints here)
        return b"%d" % value
    return _COMPACT.encode(value).encode("utf-8")


def parse_submission(api_name: str, body: bytes) -> jobs_pb2.JobSubmission:
    """The JobSubmission for the JSON `body`, or InvalidRequest naming the first field of the wrong type. Items are
    passed on as written (rawitems.py); every other value as compact JSON."""
    value = _object(parse_json_body(body), "request body")
    sub = jobs_pb2.JobSubmission(api_name=api_name)
    if (workers := value.get("workers")) is not None:
        sub.workers = _int(workers, "workers", INT32_MAX)
    range_given = []
    for key in ("min_workers", "max_workers"):  # an elastic job's range, instead of workers
        if (count := value.get(key)) is not None:
            setattr(sub, key, _int(count, key, INT32_MAX))
            range_given.append(key)
    if workers is not None and range_given:  # even `workers: 0`, which gRPC could not tell from no workers
        raise ConflictingFields.workers_with_range(range_given)
    if (item_list := value.get(ITEM_LIST)) is not None:
        _item_list(sub.item_list, _object(item_list, ITEM_LIST), body)
    for key in FILE_SOURCES:
        if (source := value.get(key)) is not None:
            _file_source(getattr(sub, key), _object(source, key), key)
    if (config := value.get("config")) is not None:
        sub.config_json = compact_json(_object(config, "config"), "config")
    if (timeout := value.get("timeout")) is not None:
        sub.timeout_s = _int(timeout, "timeout", INT64_MAX)
    if (dlq := value.get("sqs_dead_letter_queue")) is not None:
        _dead_letter_queue(sub.sqs_dead_letter_queue, _object(dlq, "sqs_dead_letter_queue"))
    _thresher_fields(sub, value)
    return sub


def _thresher_fields(sub: jobs_pb2.JobSubmission, value: dict[str, Any]) -> None:
    """The fields Thresher adds to Cortex's submission."""
    if (batch_timeout := value.get("batch_timeout")) is not None:
        sub.batch_timeout_s = _number(batch_timeout, "batch_timeout")
    if (results := value.get("results")) is not None:
        _results(sub.results, _object(results, "results"))
    if (on_failure := value.get("on_failure")) is not None:
        if not isinstance(on_failure, str):
            raise InvalidRequest("on_failure: must be a string")
        sub.on_failure = on_failure


def _results(target: jobs_pb2.ResultsTarget, value: dict[str, Any]) -> None:
    target.SetInParent()
    if (s3_path := value.get("s3_path")) is not None:
        if not isinstance(s3_path, str):
            raise InvalidRequest("results: s3_path: must be a string")
        target.s3_path = s3_path


def _item_list(target: jobs_pb2.ItemList, value: dict[str, Any], body: bytes) -> None:
    target.SetInParent()  # present even when empty, so the scheduler can tell "empty" from "not given"
    if (items := value.get("items")) is not None:
        if not isinstance(items, list):
            raise InvalidRequest("item_list: items: must be a list")
        target.items.extend(map(str.encode, raw_items(body.decode("utf-8")) or ()))  # UTF-8
    if (batch_size := value.get("batch_size")) is not None:
        target.batch_size = _int(batch_size, "item_list: batch_size", INT32_MAX)


def _file_source(target: jobs_pb2.FileSource, value: dict[str, Any], where: str) -> None:
    target.SetInParent()
    for key, field in (("s3_paths", target.paths), ("includes", target.includes), ("excludes", target.excludes)):
        if (strings := value.get(key)) is not None:
            if not isinstance(strings, list) or not all(isinstance(s, str) for s in strings):
                raise InvalidRequest(f"{where}: {key}: must be a list of strings")
            field.extend(strings)
    if (batch_size := value.get("batch_size")) is not None:
        target.batch_size = _int(batch_size, f"{where}: batch_size", INT32_MAX)


def _dead_letter_queue(target: jobs_pb2.DeadLetterPolicy, value: dict[str, Any]) -> None:
    target.SetInParent()
    if (arn := value.get("arn")) is not None:
        if not isinstance(arn, str):
            raise InvalidRequest("sqs_dead_letter_queue: arn: must be a string")
        target.arn = arn
    if (count := value.get("max_receive_count")) is not None:
        target.max_receive_count = _int(count, "sqs_dead_letter_queue: max_receive_count", INT32_MAX)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where}: must be an object")
    return value


def _int(value: Any, where: str, maximum: int) -> int:
    # bool is a subclass of int in Python, but `true` is not an integer in JSON (nor for Go).
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f"{where}: must be an integer")
    if not -maximum - 1 <= value <= maximum:
        raise InvalidRequest(f"{where}: must be an integer from {-maximum - 1} to {maximum}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any double
            number = math.inf
        if math.isfinite(number):
            return number
    raise InvalidRequest(f"{where}: must be a number")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
