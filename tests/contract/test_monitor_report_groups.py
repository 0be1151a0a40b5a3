"""The monitor records a group of reports (every report waiting for the ledger) with a few statements for the group:
each report must still see those before it in the group, and repeats must count nothing."""

from __future__ import annotations

from services.monitor.ledger_attempts import IDS_PER_QUERY
from tests.contract.test_monitor import (
    FAILED,
    STARTED,
    SUCCEEDED,
    RunningMonitor,
    attempt,
    batch,
    counts,
    monitor,
    scheduler,
)

__all__ = ["monitor", "scheduler"]  # the fixtures


async def test_a_group_larger_than_one_read_with_repeats_and_retries_counts_each_attempt_once(
    monitor: RunningMonitor,
) -> None:
    ids = [f"b{i:04d}" for i in range(IDS_PER_QUERY + 100)]
    first = [*attempt(ids[0], 1, FAILED), *attempt(ids[0], 2, SUCCEEDED, 2.0)]
    group = [
        *first,
        *first,  # repeated in the same group (a stream sent again)
        batch(ids[0], 3, FAILED, error="late"),  # an attempt reported after the batch succeeded
        *(report for batch_id in ids[1:] for report in attempt(batch_id, 1, SUCCEEDED, 2.0)),
        batch(ids[-1], 1, SUCCEEDED, 9.0),  # a repeat, with another duration
        batch(ids[-1], 2, STARTED),
    ]

    acks = await monitor.report(group)

    assert sorted(acks) == sorted(r.seq for r in group)
    progress = await monitor.progress()
    assert counts(progress) == (len(ids), 2, 0, 0)
    assert progress.batches.average_time_per_batch_s == 2.0
    await monitor.report(group)  # all of it again, in a later group
    assert counts(await monitor.progress()) == (len(ids), 2, 0, 0)
