"""A job's input sources, and the rules every service applies to them, with one wording each.

The contract keeps the sources as separate fields of JobSubmission, not a oneof, so that the scheduler can tell a
submission with two of them from one with one: this module is the one list of them. The scheduler validates a
submission with these rules; the gateway and the enqueuer rely on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from thresher.core.errors import (
    ConflictingFields,
    InvalidRequest,
    MustBeGreaterThanOrEqualTo,
    NoFilesFound,
    SpecifyExactlyOneKey,
)
from thresher.core.store.select import FileQuery
from thresher.v1 import jobs_pb2

# Final: the names keep their literal types, which the generated HasField and ClearField accept.
ITEM_LIST: Final = "item_list"  # items inline: an ItemList
FILE_SOURCES: Final = ("file_path_lister", "delimited_files")  # files in a store: FileSources
SUBMITTED: Final = (ITEM_LIST, *FILE_SOURCES)  # the sources a user submits (Cortex's keys)
BATCHES: Final = "batches"  # pre-cut batches, each a JSON array: a retry of failed batches, made by the scheduler
SOURCES: Final = (*SUBMITTED, BATCHES)
# Cortex ends every error in a submission's schema with where the schema is documented; ours is on the gateway.
SCHEMA_HINT = "\n\njob submission schema can be found at /openapi.json (the Submission schema) on this gateway"


def given_sources(submission: jobs_pb2.JobSubmission) -> list[str]:
    """The sources the submission gives, in SOURCES' order (a valid one gives exactly one)."""
    given = [name for name in SUBMITTED if submission.HasField(name)]
    return given + ([BATCHES] if submission.batches else [])


def source_of(submission: jobs_pb2.JobSubmission) -> str:
    """The submission's one source; Cortex's errors, in its words, when it gives none or more than one."""
    given = given_sources(submission)
    if not given:
        raise SpecifyExactlyOneKey(f"specify exactly one of the following keys: {_either(SUBMITTED)}")
    if len(given) > 1:
        raise ConflictingFields(
            f"please specify either the {_either(given)} field (but not more than one at the same time)"
        )
    return given[0]


def no_files_found(source: str, paths: Sequence[str]) -> NoFilesFound:
    """Cortex's error for a file source that matches no file (in its words when every path is in S3)."""
    where = "s3 files" if all(path.startswith("s3://") for path in paths) else "files"
    return NoFilesFound(f"{source}: no {where} match search criteria")


def _either(keys: Sequence[str]) -> str:
    """`a or b`, `a, b, or c`: Cortex's list of alternatives."""
    return " or ".join(keys) if len(keys) < 3 else f"{', '.join(keys[:-1])}, or {keys[-1]}"


def batch_size_of(submission: jobs_pb2.JobSubmission, source: str) -> int | None:
    """The batch_size the submission gives its `source`; None for pre-cut batches, which have none."""
    return None if source == BATCHES else getattr(submission, source).batch_size


def check_batch_size(source: str, batch_size: int, maximum: int | None = None) -> None:
    """InvalidRequest when `batch_size` is below 1, or above `maximum` (limits.max_batch_size) when given."""
    if batch_size < 1:
        raise MustBeGreaterThanOrEqualTo(f"{source}: batch_size: must be greater than or equal to 1 (got {batch_size})")
    if maximum is not None and batch_size > maximum:
        raise InvalidRequest(f"{source}: batch_size: must be at most {maximum} (got {batch_size})")


def file_query(submission: jobs_pb2.JobSubmission, source: str) -> FileQuery:
    """The checked query (paths, compiled globs) of the submission's file source `source`, whose batch_size is
    checked too; InvalidRequest naming the first problem."""
    files: jobs_pb2.FileSource = getattr(submission, source)
    query = FileQuery.parse(files.paths, files.includes, files.excludes, source)
    check_batch_size(source, files.batch_size)
    return query
