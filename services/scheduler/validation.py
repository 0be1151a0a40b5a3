"""Checks a submission before anything is created; messages follow Cortex's where Cortex had one.

Only what needs no I/O is checked here; whether a file source names any file is inputs.py's (it lists the store).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from thresher.core.config import Config
from thresher.core.errors import (
    ConflictingFields,
    InvalidRequest,
    LimitExceeded,
    MustBeGreaterThanOrEqualTo,
    TooFewElements,
)
from thresher.core.itemlists import MAX_BATCH_BYTES, ItemSizes
from thresher.core.retries import check_on_failure
from thresher.core.sources import (
    BATCHES,
    FILE_SOURCES,
    ITEM_LIST,
    SCHEMA_HINT,
    batch_size_of,
    check_batch_size,
    file_query,
    source_of,
)
from thresher.core.staging import Staging
from thresher.core.store.base import split_s3_path
from thresher.v1 import jobs_pb2


def validate_submission(submission: jobs_pb2.JobSubmission) -> None:
    """Raise InvalidRequest naming the first problem; return when the submission can become a job. As in Cortex,
    an error in the submission's schema ends with where the schema is documented; one in a file source's paths does
    not."""
    try:
        source = _validate_schema(submission)
    except InvalidRequest as e:
        raise e.followed_by(SCHEMA_HINT) from e
    if source in FILE_SOURCES:
        file_query(submission, source)
    if submission.HasField("results"):
        _validate_results(submission.results)


def _validate_schema(submission: jobs_pb2.JobSubmission) -> str:
    """The submission's source, once its fields are checked (Cortex's order)."""
    source = source_of(submission)
    if source == ITEM_LIST:
        _validate_item_list(submission.item_list)
    elif source == BATCHES:
        _validate_batches(submission.batches)
    else:
        check_batch_size(source, getattr(submission, source).batch_size)
    _validate_workers(submission)
    if submission.HasField("timeout_s"):
        _at_least("timeout", submission.timeout_s, 1)
    if submission.HasField("batch_timeout_s") and not submission.batch_timeout_s > 0:
        raise InvalidRequest(f"batch_timeout: must be greater than 0 (got {submission.batch_timeout_s})")
    if submission.HasField("sqs_dead_letter_queue"):
        # An empty arn (Cortex required one) keeps the job's own dead letter queue, with this max_receive_count.
        _at_least("sqs_dead_letter_queue: max_receive_count", submission.sqs_dead_letter_queue.max_receive_count, 1)
    check_on_failure(submission.on_failure, "on_failure")
    if submission.config_json:
        _validate_config(submission.config_json)
    return source


def check_limits(submission: jobs_pb2.JobSubmission, config: Config) -> None:
    """InvalidRequest when the submission asks for more than `limits.*` allow, or when one of its batches would not
    fit in one message of the configured queue (known up front for item_list; file sources are cut later).
    Call validate_submission first."""
    limits = config.limits
    for name in ("workers", "max_workers"):
        if (value := getattr(submission, name)) > limits.max_workers:
            raise InvalidRequest(f"{name}: must be at most {limits.max_workers} (got {value})")
    source = source_of(submission)
    if (batch_size := batch_size_of(submission, source)) is not None:
        check_batch_size(source, batch_size, limits.max_batch_size)
    if submission.results.s3_path and not config.results.job_s3_paths:
        raise InvalidRequest(
            "results: s3_path: this stack keeps every job's results in one place (results.job_s3_paths)"
        )
    if source == ITEM_LIST and not submission.item_list.HasField("staged"):  # a staged list was checked as written
        _check_sizes(submission.item_list, MAX_BATCH_BYTES.get(config.queue.backend))
    if submission.item_list.HasField("staged") and not Staging(config).holds(submission.item_list.staged.path):
        raise InvalidRequest("item_list: staged: not a file this stack staged (the gateway stages large item lists)")


def check_room(submission: jobs_pb2.JobSubmission, in_progress: int, workers_in_progress: int, config: Config) -> None:
    """The new job fits beside the `in_progress` jobs of its API (limits.max_jobs_in_progress_per_api), and its
    workers beside the `workers_in_progress` of every job (limits.max_workers_in_progress)."""
    limit = config.limits.max_jobs_in_progress_per_api
    if in_progress >= limit:
        raise LimitExceeded(
            f"{submission.api_name} has {limit} jobs in progress, the most allowed"
            " (limits.max_jobs_in_progress_per_api); submit again once one has ended"
        )
    workers_limit = config.limits.max_workers_in_progress
    workers = submission.workers or submission.min_workers  # an elastic job starts at its minimum
    if workers_in_progress + workers > workers_limit:
        raise LimitExceeded(
            f"jobs in progress have {workers_in_progress} workers and this one asks for {workers}: at most"
            f" {workers_limit} in all (limits.max_workers_in_progress); submit again once jobs have ended"
        )


def _check_sizes(item_list: jobs_pb2.ItemList, max_batch_bytes: int | None) -> None:
    sizes = ItemSizes(item_list.batch_size, max_batch_bytes)
    for item in item_list.items:
        sizes.add(len(item))
    sizes.end()


def _validate_workers(submission: jobs_pb2.JobSubmission) -> None:
    """A fixed `workers` (Cortex's), or an elastic range `min_workers`..`max_workers`, never both."""
    given = [name for name in ("min_workers", "max_workers") if getattr(submission, name)]
    if not given:
        _at_least("workers", submission.workers, 1)
        return
    if submission.workers:
        raise ConflictingFields.workers_with_range(given)
    if len(given) < 2:
        missing = "max_workers" if given == ["min_workers"] else "min_workers"
        raise InvalidRequest(f"{missing}: must be given with {given[0]} (an elastic job gives both)")
    _at_least("min_workers", submission.min_workers, 1)  # a job's last worker takes its completion hook
    if submission.max_workers < submission.min_workers:
        raise InvalidRequest(
            f"max_workers: must be at least min_workers ({submission.min_workers}) (got {submission.max_workers})"
        )


def _validate_item_list(item_list: jobs_pb2.ItemList) -> None:
    staged = item_list.HasField("staged")
    if staged and item_list.items:
        raise InvalidRequest("item_list: give its items or a staged file of them, not both")
    if not (item_list.staged.count if staged else item_list.items):
        raise TooFewElements("item_list: items: must contain at least 1 elements")
    if not staged:
        _check_sizes(item_list, None)  # items too large: a schema error, before any limit
    check_batch_size(ITEM_LIST, item_list.batch_size)


def _validate_batches(batches: Sequence[bytes]) -> None:
    for index, batch in enumerate(batches):
        try:
            items = json.loads(batch)
        except ValueError as e:
            raise InvalidRequest(f"batches[{index}]: not valid JSON: {e}") from e
        if not isinstance(items, list):
            raise InvalidRequest(f"batches[{index}]: must be a JSON array of items")


def _validate_config(config_json: bytes) -> None:
    try:
        config = json.loads(config_json)
    except ValueError as e:
        raise InvalidRequest(f"config: not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise InvalidRequest("config: must be a JSON object")


def _validate_results(results: jobs_pb2.ResultsTarget) -> None:
    """The job's own S3 path for its results: s3://bucket[/prefix], as input paths are written."""
    if not results.s3_path:
        raise InvalidRequest("results: s3_path: must be given (s3://bucket/prefix)")
    try:
        split_s3_path(results.s3_path)
    except InvalidRequest as e:
        raise e.within("results: s3_path") from None


def _at_least(name: str, value: int, minimum: int) -> None:
    if value < minimum:
        raise MustBeGreaterThanOrEqualTo(f"{name}: must be greater than or equal to {minimum} (got {value})")
