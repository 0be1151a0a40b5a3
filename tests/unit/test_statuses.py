"""A status's finality comes from the contract: every JobStatus is classified, the final ones as documented."""

from __future__ import annotations

from thresher.core import statuses
from thresher.v1 import jobs_pb2

# The README's list of statuses: a job in one of these has ended and never changes again.
DOCUMENTED_FINAL = {
    "succeeded",
    "completed_with_failures",
    "enqueue_failed",
    "worker_error",
    "worker_oom",
    "timed_out",
    "stopped",
    "unexpected_error",
}
DOCUMENTED_IN_PROGRESS = {"pending", "enqueuing", "running"}


def test_every_status_is_classified_and_the_final_ones_are_the_documented_set() -> None:
    named = {statuses.json_name(v.number): v.number for v in jobs_pb2.JobStatus.DESCRIPTOR.values if v.number}
    assert set(named) == DOCUMENTED_FINAL | DOCUMENTED_IN_PROGRESS  # a new status must be sorted into one set
    assert statuses.FINAL_NAMES == DOCUMENTED_FINAL
    assert {name for name, number in named.items() if statuses.is_final(number)} == DOCUMENTED_FINAL
    assert not statuses.is_final(jobs_pb2.JOB_STATUS_UNSPECIFIED)


def test_json_names_round_trip() -> None:
    for name, number in statuses.BY_JSON_NAME.items():
        assert statuses.json_name(number) == name
    assert statuses.json_name(jobs_pb2.JOB_STATUS_UNSPECIFIED) == "unknown"
