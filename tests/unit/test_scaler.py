"""Elastic jobs: what a submission may ask (`min_workers` / `max_workers`) and the scaler's decisions (pure)."""

from __future__ import annotations

import pytest

from services.scheduler.jobs import new_job, retry_submission
from services.scheduler.scaler import HOLD, SCALE_DOWN, SCALE_UP, Load, decide, seconds_per_batch
from services.scheduler.validation import check_limits, check_room, validate_submission
from thresher.core.config import Config
from thresher.core.errors import InvalidRequest, LimitExceeded
from thresher.core.names import EXIT_IDLE
from thresher.core.runtime.base import WorkerPhase
from thresher.core.runtime.k8s_pods import worker_state
from thresher.v1 import jobs_pb2, monitor_pb2

TARGET_S = 10.0


def submission(**workers: int) -> jobs_pb2.JobSubmission:
    s = jobs_pb2.JobSubmission(api_name="a", **workers)
    s.item_list.items.extend([b"1", b"2"])
    s.item_list.batch_size = 1
    return s


def load(asked: int = 2, idle_exits: int = 0, backlog: int = 0, seconds: float | None = 1.0, room: int = 100) -> Load:
    return Load(asked=asked, idle_exits=idle_exits, backlog=backlog, seconds_per_batch=seconds, room=room)


def test_a_range_instead_of_workers_is_an_elastic_job_starting_at_its_minimum() -> None:
    elastic = submission(min_workers=2, max_workers=5)
    validate_submission(elastic)
    check_limits(elastic, Config())
    job = new_job("j", elastic, now=0.0)
    assert (job.elastic, job.workers, job.min_workers, job.max_workers) == (True, 2, 2, 5)
    fixed = new_job("k", submission(workers=3), now=0.0)
    assert (fixed.elastic, fixed.workers) == (False, 3), "workers keeps its meaning"


@pytest.mark.parametrize(
    ("workers", "message"),
    [
        ({"workers": 2, "min_workers": 1, "max_workers": 3}, r"^workers: cannot be given with min_workers and max_"),
        ({"workers": 2, "max_workers": 3}, r"^workers: cannot be given with max_workers"),
        ({"min_workers": 2}, r"^max_workers: must be given with min_workers"),
        ({"max_workers": 2}, r"^min_workers: must be given with max_workers"),
        ({"min_workers": -1, "max_workers": 3}, r"^min_workers: must be greater than or equal to 1 \(got -1\)"),
        ({"min_workers": 4, "max_workers": 3}, r"^max_workers: must be at least min_workers \(4\) \(got 3\)"),
        ({}, r"^workers: must be greater than or equal to 1 \(got 0\)"),
    ],
)
def test_a_bad_range_is_refused_naming_the_problem(workers: dict[str, int], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        validate_submission(submission(**workers))


def test_the_limits_cap_max_workers_and_admission_counts_the_minimum() -> None:
    config = Config()
    config.limits.max_workers, config.limits.max_workers_in_progress = 4, 10
    with pytest.raises(InvalidRequest, match=r"^max_workers: must be at most 4 \(got 5\)$"):
        check_limits(submission(min_workers=1, max_workers=5), config)
    check_room(submission(min_workers=2, max_workers=4), 0, 8, config)
    with pytest.raises(LimitExceeded, match="jobs in progress have 9 workers and this one asks for 2"):
        check_room(submission(min_workers=2, max_workers=4), 0, 9, config)


def test_a_retry_of_few_batches_asks_for_no_more_workers_than_batches() -> None:
    failed = [jobs_pb2.FailedBatch(batch_id="b", items_json=b"[1]")]
    retry = retry_submission("j", submission(min_workers=2, max_workers=5), failed)
    assert (retry.workers, retry.min_workers, retry.max_workers) == (0, 1, 1)
    validate_submission(retry)


def test_workers_are_added_while_the_backlog_would_take_longer_than_the_target() -> None:
    # 40 batches of 1 s over 2 workers: 20 s > 10 s; 4 workers drain them in 10 s.
    up = decide(1, 8, TARGET_S, load(asked=2, backlog=40))
    assert (up.desired, up.action) == (4, SCALE_UP)
    assert up.reason == "backlog too slow: 40 batches x 1 s / 2 workers = 20 s > target_drain_s 10: 4 workers"
    hold = decide(1, 8, TARGET_S, load(asked=4, backlog=40))
    assert (hold.desired, hold.action) == (4, HOLD)
    assert hold.reason.startswith("backlog drains in time: 40 batches x 1 s / 4 workers = 10 s <= target_drain_s 10")


def test_scaling_up_stops_at_max_workers_and_at_the_room_the_limits_leave() -> None:
    capped = decide(1, 5, TARGET_S, load(asked=2, backlog=400))
    assert (capped.desired, capped.action) == (5, SCALE_UP) and capped.reason.endswith("5 workers (max_workers 5)")
    roomless = decide(1, 50, TARGET_S, load(asked=2, backlog=400, room=3))
    assert roomless.desired == 3 and roomless.reason.endswith("(limits.max_workers_in_progress)")
    assert decide(1, 50, TARGET_S, load(asked=4, backlog=400, room=3)).desired == 4, "never below what runs"


def test_nothing_is_decided_from_no_timing_or_an_empty_queue() -> None:
    first = decide(1, 8, TARGET_S, load(asked=2, backlog=400, seconds=None))
    assert (first.desired, first.action, first.reason) == (2, HOLD, "no batch timing yet: holding 2 workers")
    empty = decide(1, 8, TARGET_S, load(asked=3))
    assert (empty.desired, empty.action) == (3, HOLD) and empty.reason.startswith("no batch waiting")


def test_workers_that_exit_idle_are_taken_off_the_count_even_below_min_workers_while_no_batch_waits() -> None:
    down = decide(1, 8, TARGET_S, load(asked=4, idle_exits=2))
    assert (down.desired, down.action, down.reason) == (2, SCALE_DOWN, "2 workers exited idle, not replaced")
    none = decide(2, 8, TARGET_S, load(asked=3, idle_exits=3))
    assert (none.desired, none.action) == (0, SCALE_DOWN), "an empty queue pays for no worker"
    back = decide(2, 8, TARGET_S, load(asked=0, backlog=1))
    assert (back.desired, back.action) == (2, SCALE_UP)
    assert back.reason == "batches waiting: back to min_workers 2"
    again = decide(1, 8, TARGET_S, load(asked=4, idle_exits=2, backlog=100))
    assert (again.desired, again.action) == (8, SCALE_UP), "a backlog wins over idle exits"


def test_an_idle_exit_is_a_stopped_worker_on_kubernetes_not_a_crash() -> None:
    pod = {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Failed",
            "containerStatuses": [{"name": "dequeuer", "state": {"terminated": {"exitCode": EXIT_IDLE}}}],
        },
    }
    state = worker_state(pod, deleted=False, now=0.0, stalled_after_s=60.0, unschedulable_since=None)
    assert (state.phase, state.idled, state.crashed, state.disrupted) == (WorkerPhase.STOPPED, True, False, False)


def test_before_any_batch_succeeded_the_oldest_attempt_in_progress_is_the_time_per_batch() -> None:
    progress = monitor_pb2.JobProgress()
    assert seconds_per_batch(None) is None and seconds_per_batch(progress) is None
    progress.pace.oldest_in_flight_s = 4.0  # a batch takes at least that long
    assert seconds_per_batch(progress) == 4.0
    progress.batches.average_time_per_batch_s = 0.5
    assert seconds_per_batch(progress) == 0.5, "once known, the mean of successful attempts"
