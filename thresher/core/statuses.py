"""Job statuses as the contract declares them: each one's JSON name, and whether it is final.

Finality is the `final_status` option on each JobStatus value in proto/thresher/v1/jobs.proto, read here once;
everything else (the scheduler's state machine, WatchJob, the gateway, the CLI) asks this module.
"""

from __future__ import annotations

from thresher.v1 import jobs_pb2

_PREFIX = "JOB_STATUS_"
UNKNOWN = "unknown"  # Cortex's word for an unset status


def _json_name(name: str) -> str:
    return name.removeprefix(_PREFIX).lower()


_VALUES = jobs_pb2.JobStatus.DESCRIPTOR.values
BY_JSON_NAME: dict[str, jobs_pb2.JobStatus.ValueType] = {
    _json_name(name): number for name, number in jobs_pb2.JobStatus.items() if number
}
FINAL: frozenset[int] = frozenset(v.number for v in _VALUES if v.GetOptions().Extensions[jobs_pb2.final_status])
FINAL_NAMES: frozenset[str] = frozenset(_json_name(v.name) for v in _VALUES if v.number in FINAL)


def is_final(status: int) -> bool:
    """Whether a job in this JobStatus has ended for good."""
    return status in FINAL


def json_name(status: jobs_pb2.JobStatus.ValueType) -> str:
    """JOB_STATUS_COMPLETED_WITH_FAILURES -> "completed_with_failures"; "unknown" when unset."""
    if status == jobs_pb2.JOB_STATUS_UNSPECIFIED:
        return UNKNOWN
    return _json_name(jobs_pb2.JobStatus.Name(status))
