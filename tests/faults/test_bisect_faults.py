"""Faults in on_failure bisect: a split batch's worker killed, and a dequeuer killed once the monitor has said to split
a batch (before or after it sent the halves, before it acked the batch). Each job still ends exact: every item but the
poison one succeeded, and only the poison item is dead-lettered."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.conftest import Stack
from tests.faults.conftest import LONG_VISIBILITY_S, Outputs, assert_nothing_left, submit

pytestmark = [pytest.mark.faults, pytest.mark.timeout(240)]

BISECT = {"on_failure": "bisect", "sqs_dead_letter_queue": {"max_receive_count": 1}}  # split at the first failure


def assert_exact(stack: Stack, outputs: Outputs, job_id: str, items: list[int], poison: int) -> dict[str, Any]:
    status = stack.wait_for_final("recorder", job_id, timeout_s=LONG_VISIBILITY_S - 90)
    js = status["job_status"]
    counts = js["batch_counts"]
    assert js["status"] == "completed_with_failures", status
    assert (counts["items_succeeded"], counts["items_dead_lettered"], counts["dead_lettered"]) == (
        len(items) - 1, 1, 1,
    ), status  # fmt: skip
    assert sorted(set(outputs.items())) == [i for i in items if i != poison], "every other item succeeded"
    [failed] = stack.client.failed(job_id)
    assert failed["items"] == [poison] and "poison item" in failed["error"]
    [hook] = outputs.hooks()
    assert (hook["items_succeeded"], hook["items_dead_lettered"]) == (len(items) - 1, 1)
    assert_nothing_left(job_id, outputs)
    return status


def test_a_split_batch_whose_worker_dies_still_ends_exact(stack: Stack, outputs: Outputs) -> None:
    # Given a batch of 10 with a poison item, whose first half (0-4) kills its worker the first time it runs
    items = list(range(20))
    config = {"fail_items": [3], "crash_once_batch_suffixes": ["-000000.0"], "results": True}
    job_id = submit(stack, outputs, items, batch_size=10, config=config, **BISECT)

    status = assert_exact(stack, outputs, job_id, items, poison=3)

    # Then the half was run again (the lost attempt used none), and each item has its result once, in order
    halves = [c["attempt"] for c in outputs.calls() if c["batch_id"] == f"{job_id}-000000.0"]
    assert sorted(halves) == [1, 2] and status["job_status"]["worker_restarts"] == 1
    results = [json.loads(line) for line in stack.client.results(job_id)]
    assert [s for r in results for s in r["result"]["squares"]] == [i * i for i in items if i != 3]


@pytest.mark.timeout(LONG_VISIBILITY_S - 60)  # only a batch released (or acked) at once lets the job end in time
def test_a_dequeuer_killed_once_told_to_split_its_batch_still_ends_exact(
    long_visibility_stack: Stack, outputs: Outputs
) -> None:
    # Given one worker whose batch holding item 5 fails, and which kills its own dequeuer 15 ms after it first answers
    # it: once the monitor has said to split the batch, before the halves are sent or the batch acked on the queue
    stack = long_visibility_stack
    config = {"fail_items": [5], "kill_dequeuer_items": [5], "kill_dequeuer_after_s": 0.015}
    job_id = submit(stack, outputs, list(range(8)), batch_size=8, workers=1, config=config, **BISECT)

    # Then the job ends long before the batch could come back by itself, exact
    status = assert_exact(stack, outputs, job_id, list(range(8)), poison=5)
    assert status["job_status"]["worker_restarts"] == 1
