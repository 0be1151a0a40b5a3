"""The scheduler's pure parts: job transitions, submission checks, job ids."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client import REGISTRY

from services.scheduler import jobs
from services.scheduler.jobs import JobRecord, Status
from services.scheduler.metrics import EndedWorkerCounter
from services.scheduler.validation import validate_submission
from services.scheduler.views import job_message, waiting_reason
from thresher.core import statuses
from thresher.core.config import Config
from thresher.core.errors import InvalidRequest, WrongState
from thresher.core.ids import new_job_id
from thresher.core.itemlists import MAX_ITEM_BYTES
from thresher.core.runtime import WorkerPhase, WorkerState
from thresher.v1 import jobs_pb2, monitor_pb2


def a_job(**changes: object) -> JobRecord:
    submission = jobs_pb2.JobSubmission(api_name="sum", workers=1, timeout_s=10)
    job = jobs.new_job("j1", submission, now=1000.0)
    return JobRecord(**{**job.__dict__, **changes})


def test_a_job_goes_from_pending_through_enqueuing_and_running_to_succeeded() -> None:
    job = jobs.started_enqueuing(a_job(), "sqlite://q")
    assert job.status is Status.ENQUEUING
    job = jobs.enqueued(job, total_batch_count=5, items=50)
    assert (job.status, job.total_batch_count) == (Status.RUNNING, 5)
    job = jobs.settled(job, b"summary")
    assert job.settled and job.status is Status.RUNNING
    job = jobs.hook_finished(job, b"hook", dead_lettered=0, final_counts=b"counts")
    assert (job.status, job.hook, job.cleaned) == (Status.SUCCEEDED, b"hook", False)
    assert job.end_time is not None


def test_a_job_with_dead_lettered_batches_completes_with_failures() -> None:
    job = jobs.settled(a_job(status=Status.RUNNING), b"s")
    job = jobs.hook_finished(job, b"h", dead_lettered=2, final_counts=b"c")
    assert job.status is Status.COMPLETED_WITH_FAILURES
    assert "2 batches" in job.status_reason


def test_a_job_whose_workers_were_replaced_says_so_when_it_ends() -> None:
    job = jobs.settled(a_job(status=Status.RUNNING), b"s")
    hung = WorkerState("w1", WorkerPhase.FAILED, "worker hung: it answered nothing")
    reclaimed = WorkerState("w2", WorkerPhase.STOPPED, "terminated by the kubelet", disrupted=True)
    job = jobs.hook_finished(job, b"h", dead_lettered=0, final_counts=b"c", workers=[hung, reclaimed])
    assert job.status is Status.SUCCEEDED
    assert job.status_reason == "workers replaced: 1 (last: worker hung: it answered nothing)"
    assert (job.worker_restarts, job.worker_disruptions) == (1, 1)


def test_the_hook_cannot_finish_before_every_batch_is_terminal() -> None:
    with pytest.raises(WrongState):
        jobs.hook_finished(a_job(status=Status.RUNNING), b"h", 0, b"c")


def test_an_ended_job_keeps_its_counts_of_replaced_workers_which_its_status_shows() -> None:
    """Its runtime forgets its workers once they are stopped, and stopping them is no disruption."""
    running = [WorkerState("w1", WorkerPhase.FAILED, "api exited with code 1"), WorkerState("w2", WorkerPhase.RUNNING)]
    drained = WorkerState("w3", WorkerPhase.STOPPED, "drained", disrupted=True)
    message = job_message(a_job(status=Status.RUNNING), jobs_pb2.JobSubmission(), Config(), workers=[*running, drained])
    assert (message.worker_restarts, message.worker_disruptions, message.worker_counts.failed) == (1, 1, 1)

    ended = jobs.finished(a_job(status=Status.RUNNING), Status.STOPPED, "stopped", None, ended_workers=(1, 2))
    message = job_message(ended, jobs_pb2.JobSubmission(), Config())
    assert (message.worker_restarts, message.worker_disruptions, message.worker_counts.failed) == (1, 2, 1)


@pytest.mark.parametrize("final", [s for s in Status if s.is_final])
def test_a_finished_job_accepts_no_further_transition(final: Status) -> None:
    job = a_job(status=final)
    for transition in (
        lambda: jobs.started_enqueuing(job, "u"),
        lambda: jobs.enqueued(job, 1, 1),
        lambda: jobs.settled(job, b"s"),
        lambda: jobs.finished(job, Status.STOPPED, "", None),
    ):
        with pytest.raises(WrongState):
            transition()


def test_a_job_times_out_only_after_its_timeout_and_only_while_in_progress() -> None:
    job = a_job(status=Status.RUNNING)
    assert not jobs.timed_out(job, now=1009.9)
    assert jobs.timed_out(job, now=1010.0)
    assert not jobs.timed_out(a_job(status=Status.RUNNING, timeout_s=None), now=5000.0)
    assert not jobs.timed_out(a_job(status=Status.STOPPED), now=5000.0)


def test_queue_names_fit_sqs_limits_even_for_long_api_names() -> None:
    name = jobs.queue_name("a" * 63, new_job_id())
    assert len(name + ".fifo") <= 80


def items_submission(**changes: object) -> jobs_pb2.JobSubmission:
    submission = jobs_pb2.JobSubmission(api_name="sum", workers=2)
    submission.item_list.items.extend([b"1", b"2"])
    submission.item_list.batch_size = 1
    for key, value in changes.items():
        setattr(submission, key, value)
    return submission


def test_a_valid_submission_passes() -> None:
    validate_submission(items_submission(config_json=json.dumps({"k": 1}).encode(), timeout_s=60))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.ClearField("item_list"), "specify exactly one of the following keys"),
        (lambda s: s.file_path_lister.paths.append("s3://b/k"), "either the item_list or file_path_lister"),
        (lambda s: s.item_list.ClearField("items"), "items: must contain at least 1 elements"),
        (lambda s: setattr(s.item_list, "batch_size", 0), "batch_size: must be greater than or equal to 1 (got 0)"),
        (lambda s: setattr(s, "workers", 0), "workers: must be greater than or equal to 1 (got 0)"),
        (lambda s: setattr(s, "timeout_s", 0), "timeout: must be greater than or equal to 1"),
        (lambda s: setattr(s, "batch_timeout_s", 0.0), "batch_timeout: must be greater than 0"),
        (lambda s: s.sqs_dead_letter_queue.SetInParent(), "max_receive_count: must be greater than or equal to 1"),
        (lambda s: setattr(s, "config_json", b"[1]"), "config: must be a JSON object"),
        (lambda s: s.item_list.items.append(b'"' + b"x" * MAX_ITEM_BYTES + b'"'), "item 2 has size"),
        (lambda s: s.results.SetInParent(), "results: s3_path: must be given (s3://bucket/prefix)"),
        (lambda s: setattr(s.results, "s3_path", "/data/out"), "results: s3_path: /data/out: an S3 path must start"),
        (lambda s: setattr(s.results, "s3_path", "s3:///out"), "results: s3_path: s3:///out: an S3 path must be"),
        (lambda s: setattr(s.results, "s3_path", "s3://b c/out"), "results: s3_path: s3://b c/out: 'b c' is not"),
        (lambda s: setattr(s, "on_failure", "bisekt"), "on_failure: must be one of dead_letter, bisect, got 'bisekt'"),
    ],
)
def test_an_invalid_submission_is_rejected_with_a_message_naming_the_problem(mutate, message: str) -> None:
    submission = items_submission()
    mutate(submission)
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        validate_submission(submission)


@pytest.mark.parametrize(
    ("paths", "batch_size", "message"),
    [
        ([], 1, "delimited_files: s3_paths: must contain at least 1 elements"),
        (["s3://"], 1, "delimited_files: s3_paths: s3://: an S3 path must be s3://bucket[/key], with a bucket"),
        (["data/in"], 1, "must be absolute"),
        (["s3://bucket/data"], 0, "delimited_files: batch_size: must be greater than or equal to 1 (got 0)"),
    ],
)
def test_a_file_source_needs_valid_paths_and_a_batch_size(paths: list[str], batch_size: int, message: str) -> None:
    submission = jobs_pb2.JobSubmission(api_name="sum", workers=1)
    submission.delimited_files.SetInParent()
    submission.delimited_files.paths.extend(paths)
    submission.delimited_files.batch_size = batch_size
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        validate_submission(submission)
    # Whether files match is checked against the store (services/scheduler/inputs.py, tests/contract)


def test_job_ids_are_unique_and_sort_newest_first() -> None:
    ids = [new_job_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == list(reversed(ids))
    assert all(len(i) == 20 for i in ids)


def test_a_job_that_is_not_moving_says_why() -> None:

    nobody_ready = monitor_pb2.JobProgress(worker_counts=jobs_pb2.WorkerCounts(pending=2))
    ready = monitor_pb2.JobProgress(worker_counts=jobs_pb2.WorkerCounts(ready=1))
    pending = [WorkerState("w0", WorkerPhase.PENDING, "unschedulable: no free CPU")] * 2
    crashed = [WorkerState("w0", WorkerPhase.OOM_KILLED, "api was killed: OOMKilled")]
    assert waiting_reason(pending, nobody_ready) == "2 workers pending: unschedulable: no free CPU"
    assert waiting_reason(crashed, nobody_ready) == "worker restarting: api was killed: OOMKilled"
    starting = [WorkerState("w1", WorkerPhase.RUNNING)]
    assert waiting_reason(starting, nobody_ready) == "2 workers starting: waiting for the worker's readiness check"
    assert waiting_reason(pending, ready) == ""
    # Workers ready, but their receives keep failing: the job cannot move either
    running = [WorkerState("w0", WorkerPhase.RUNNING), WorkerState("w1", WorkerPhase.RUNNING)]
    failing = monitor_pb2.JobProgress(worker_counts=jobs_pb2.WorkerCounts(ready=2))
    failing.workers.add(worker_id="w0", phase="ready", queue_error="SQS ReceiveMessage failed: UnsupportedOperation")
    failing.workers.add(worker_id="w1", phase="ready")
    assert waiting_reason(running, failing) == (
        "1 workers cannot receive batches from the queue: SQS ReceiveMessage failed: UnsupportedOperation"
    )


def test_a_job_ends_once_its_workers_crash_more_often_than_its_restart_budget() -> None:
    crashed = WorkerState("w0", WorkerPhase.FAILED, reason="api exited with code 1")
    oom = WorkerState("w1", WorkerPhase.OOM_KILLED, reason="api killed for memory")

    assert jobs.out_of_restarts([crashed, crashed], budget=2) is None
    assert jobs.out_of_restarts([crashed, crashed, crashed], budget=2) == (
        Status.WORKER_ERROR,
        "workers crashed 3 times (restart budget 2); last: api exited with code 1",
    )
    assert jobs.out_of_restarts([oom, crashed], budget=1) == (
        Status.WORKER_OOM,
        "workers crashed 2 times (restart budget 1); last: api exited with code 1",
    )


def test_each_replaced_worker_is_counted_once_in_the_metrics_however_often_it_is_seen() -> None:
    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"api_name": "counted", **labels}) or 0.0

    counter = EndedWorkerCounter()
    crashed = WorkerState("w1", WorkerPhase.FAILED, "api exited with code 1")
    reclaimed = WorkerState("w2", WorkerPhase.STOPPED, "terminated by the kubelet", disrupted=True)
    for seen in ([crashed], [crashed, reclaimed], [crashed, reclaimed, WorkerState("w3", WorkerPhase.RUNNING)]):
        counter.count("counted", "job-1", seen)

    assert value("thresher_worker_restarts_total", reason="failed") == 1
    assert value("thresher_worker_disruptions_total") == 1
    assert counter.counted("job-1") == (1, 1)


def test_the_scheduler_has_a_status_for_each_of_the_contract_and_the_same_finality() -> None:
    assert {s.proto for s in Status} == set(statuses.BY_JSON_NAME.values())
    assert {s.proto for s in Status if s.is_final} == statuses.FINAL


def test_workers_are_counted_under_cortexs_keys_and_a_running_one_is_ready_once_its_dequeuer_says_so() -> None:
    """The local runtime knows phases only: a running worker is not_ready until its dequeuer reports it ready."""
    workers = [
        WorkerState("w1", WorkerPhase.RUNNING),
        WorkerState("w2", WorkerPhase.RUNNING),
        WorkerState("w3", WorkerPhase.PENDING, "starting"),
        WorkerState("w4", WorkerPhase.FAILED, "api exited with code 1"),
        WorkerState("w5", WorkerPhase.OOM_KILLED, "killed for memory"),
        WorkerState("w6", WorkerPhase.STOPPED, "drained", disrupted=True),
        WorkerState("w7", WorkerPhase.STOPPED, "its queue is gone"),
    ]
    progress = monitor_pb2.JobProgress(workers=[jobs_pb2.WorkerStatus(worker_id="w2", phase="ready")])
    message = job_message(a_job(status=Status.RUNNING), jobs_pb2.JobSubmission(), Config(), progress, workers=workers)
    assert message.worker_counts == jobs_pb2.WorkerCounts(
        not_ready=1, ready=1, pending=1, failed=1, killed_oom=1, killed=1, succeeded=1
    )


def test_the_batches_pending_count_the_halves_of_split_batches() -> None:
    """Each batch split in two (on_failure bisect) adds one batch to the job's total: 10 + 2 = 9 + 1 + 1 + 1."""
    counts = jobs_pb2.BatchCounts(succeeded=9, dead_lettered=1, in_flight=1, split=2)
    progress = monitor_pb2.JobProgress(batches=counts, pace=jobs_pb2.Pace(batches_per_s=1.0))
    message = job_message(
        a_job(status=Status.RUNNING, total_batch_count=10), jobs_pb2.JobSubmission(), Config(), progress
    )
    assert (message.batches.pending, message.pace.eta_s) == (1, 2.0)
