"""One error hierarchy, mapped to HTTP statuses and gRPC codes at the service boundaries."""

from __future__ import annotations

from typing import Self

import grpc


class ThresherError(Exception):
    """Root of every error Thresher reports; unexpected ones surface as `internal`."""

    kind = "internal"
    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message or self.kind

    def __str__(self) -> str:
        return self.message

    def within(self, where: str) -> Self:
        """The same error (class, hence kind) with `where` before its message, as Cortex's `errors.Wrap`."""
        return type(self)(f"{where}: {self.message}")

    def followed_by(self, text: str) -> Self:
        """The same error with `text` after its message, as Cortex's `errors.Append`."""
        return type(self)(self.message + text)


class InvalidRequest(ThresherError):
    kind = "invalid"
    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class TooLarge(ThresherError):
    kind = "too_large"
    http_status = 413
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class Unauthenticated(ThresherError):
    kind = "unauthenticated"
    http_status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED


class Forbidden(ThresherError):
    kind = "forbidden"
    http_status = 403
    grpc_code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(ThresherError):
    kind = "not_found"
    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND


class WrongState(ThresherError):
    kind = "conflict"
    http_status = 409
    grpc_code = grpc.StatusCode.FAILED_PRECONDITION


class LimitExceeded(ThresherError):
    """A configured limit on work in progress is reached (jobs in progress per API); trying again later may work."""

    kind = "limit_exceeded"
    http_status = 429
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(ThresherError):
    """A backend or another service cannot be reached; trying again later may work."""

    kind = "unavailable"
    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE


class QueueNotFound(NotFound):
    """The job's queue does not exist (never created, or deleted when the job ended)."""


# Cortex's own kinds (CORTEX-REFERENCE.md 2.3, 3.1), for the errors Cortex had: a Cortex client branches on them.
# Each keeps the status of the Thresher error it refines (an unknown API or job stays 404, not Cortex's 400).


class SpecifyExactlyOneKey(InvalidRequest):
    kind = "job.specify_exactly_one_key"


class ConflictingFields(InvalidRequest):
    kind = "job.conflicting_fields"

    @classmethod
    def workers_with_range(cls, given: list[str]) -> ConflictingFields:
        """A fixed `workers` given with `given` (`min_workers`, `max_workers`): a job has one or the other."""
        return cls(
            f"workers: cannot be given with {' and '.join(given)}: give a fixed workers, or min_workers and"
            " max_workers for workers that follow the work"
        )


class ItemSizeExceedsLimit(InvalidRequest):
    kind = "batchapi.item_size_exceeds_limit"


class InvalidS3Path(InvalidRequest):
    kind = "aws.invalid_s3_path"


class NoFilesFound(InvalidRequest):
    kind = "batchapi.no_s3_files_found"


class MustBeGreaterThanOrEqualTo(InvalidRequest):
    kind = "configreader.must_be_greater_than_or_equal_to"


class TooFewElements(InvalidRequest):
    kind = "configreader.too_few_elements"


class QueryParamRequired(InvalidRequest):
    kind = "endpoints.query_param_required"


class ApiNotDeployed(NotFound):
    kind = "resources.api_not_deployed"


class JobNotFound(NotFound):
    kind = "job.not_found"


_BY_KIND: dict[str, type[ThresherError]] = {
    cls.kind: cls
    for cls in (
        ThresherError,
        InvalidRequest,
        TooLarge,
        Unauthenticated,
        Forbidden,
        NotFound,
        WrongState,
        LimitExceeded,
        Unavailable,
        SpecifyExactlyOneKey,
        ConflictingFields,
        ItemSizeExceedsLimit,
        InvalidS3Path,
        NoFilesFound,
        MustBeGreaterThanOrEqualTo,
        TooFewElements,
        QueryParamRequired,
        ApiNotDeployed,
        JobNotFound,
    )
}
_BY_CODE: dict[grpc.StatusCode, type[ThresherError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: Forbidden,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: WrongState,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: Unavailable,
}


def from_kind(kind: str, message: str) -> ThresherError:
    """The error a JSON `{"kind", "message"}` body stands for."""
    return _BY_KIND.get(kind, ThresherError)(message)


def from_grpc(code: grpc.StatusCode, details: str, kind: str | None) -> ThresherError:
    """The error class a gRPC failure stands for: by the kind it carries, else by its status code."""
    cls = _BY_KIND.get(kind or "") or _BY_CODE.get(code, ThresherError)
    return cls(details or code.name.lower())
