"""on_failure bisect's pure parts: the retry policy's split, the accounting of a split batch, a batch's halves and the
items each covers, and a split batch's halves' results read back in input order."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from services.monitor.accounting import Batch, BatchEvent, BatchState, Result, advance, decide, is_settled
from services.monitor.ledger_schema import ADDED_COLUMNS, SCHEMA
from thresher.core.bisect import count_items, halves, item_range, root_batch_id, split_items
from thresher.core.results import batch_index
from thresher.core.results.groups import GroupName, encode, merged
from thresher.core.retries import RetryPolicy, Verdict
from thresher.core.sqlite import SqliteFile
from thresher.tools.progress import progress_line


@pytest.mark.parametrize(
    ("bisect", "failed_before", "items", "verdict"),
    [
        (True, 2, 100, Verdict.SPLIT),  # the last attempt of several items: split
        (True, 2, 2, Verdict.SPLIT),
        (True, 2, 1, Verdict.DEAD_LETTER),  # a single item failing alone: a poison item
        (True, 1, 100, Verdict.RETRY),  # attempts left: retried as before
        (False, 2, 100, Verdict.DEAD_LETTER),  # not bisecting: dead-lettered whole
    ],
)
def test_a_bisecting_batch_is_split_after_its_last_attempt_unless_it_is_one_item(
    bisect: bool, failed_before: int, items: int, verdict: Verdict
) -> None:
    assert RetryPolicy(3, bisect).after_failure(failed_before, items) is verdict


def recorded(reports: list[tuple[int, Result]]) -> tuple[list[Result], Batch]:
    batch: Batch | None = None
    results = []
    for attempt, result in reports:
        report = BatchEvent("j1", "b1", attempt, result, error=f"error {attempt}", max_attempts=2, bisect=True, items=8)
        event = decide(batch, report)
        results.append(event.result)
        batch = advance(batch, event)
    assert batch is not None
    return results, batch


def test_a_split_batch_stays_split_whatever_a_later_report_says() -> None:
    results, batch = recorded([(1, Result.FAILED), (2, Result.FAILED), (3, Result.SUCCEEDED), (4, Result.FAILED)])
    # the late success is not counted (its halves are), and a delivery again before its ack is split again
    assert results == [Result.FAILED, Result.SPLIT, Result.SUCCEEDED, Result.SPLIT]
    assert (batch.state, batch.items, batch.failed_attempts) == (BatchState.SPLIT, 8, 3)


def test_a_batch_that_succeeded_is_never_split() -> None:
    results, batch = recorded([(3, Result.SUCCEEDED), (1, Result.FAILED), (2, Result.FAILED)])  # late failures
    assert results[-1] is Result.DEAD_LETTERED and batch.state is BatchState.SUCCEEDED


def test_each_split_adds_one_batch_to_the_job() -> None:
    assert not is_settled(10, 10, splits=1) and is_settled(10, 11, splits=1)


def test_the_halves_keep_every_item_byte_for_byte_and_their_ids_show_their_origin() -> None:
    body = b'[1.50, "a,]b" ,{"k": [1, 2]},\n1e2,null]'
    assert split_items(body) == [b"1.50", b'"a,]b"', b'{"k": [1, 2]}', b"1e2", b"null"]
    assert halves("job-000042", body) == [
        ("job-000042.0", b'[1.50,"a,]b",{"k": [1, 2]}]'), ("job-000042.1", b"[1e2,null]"),
    ]  # fmt: skip
    assert halves("job-000042.1.0", b"[7]") == [], "a single item is not split"
    assert count_items(body) == 5 and count_items(b"[]") == 0 and count_items(b"{}") == 0


def test_a_halfs_items_and_index_are_found_from_its_id() -> None:
    assert item_range("job-000003", 25) == (0, 25)
    assert item_range("job-000003.1", 25) == (13, 12)
    assert item_range("job-000003.1.0.1", 25) == (16, 3)  # 25 -> 13-24 (12) -> 13-18 (6) -> 16-18 (3)
    assert root_batch_id("job-000003.1.0.1") == "job-000003" and batch_index("job-000003.1.0.1") == 3
    ids = ["j-000002", "j-000001.1", "j-000001.0.1", "j-000001.0.0", "j-000010", "j-000001"]
    assert sorted(ids) == ["j-000001", "j-000001.0.0", "j-000001.0.1", "j-000001.1", "j-000002", "j-000010"]


def test_the_halves_results_read_back_in_input_order_without_the_split_batchs_own() -> None:
    groups = [
        encode([("j-000001.1", 1, b'"c"', b"[3]"), ("j-000000", 1, b'"a"', b"[0]")]),
        encode([("j-000001", 2, b'"late"', b"[1,2,3]"), ("j-000001.0", 1, b'"b"', b"[1,2]")]),
        encode([("j-000002", 1, b'"d"', b"[4]")]),
    ]
    contents = {name: data for name, data in groups}

    async def load(names: list[GroupName]) -> list[bytes]:
        return [contents[names[0]]]

    async def read() -> list[str]:
        return [r.batch_id async for page in merged(contents, -1, load, 1) for r in page]

    assert asyncio.run(read()) == ["j-000000", "j-000001.0", "j-000001.1", "j-000002"]


def test_the_progress_line_counts_the_halves_of_split_batches() -> None:
    job_status = {"total_batch_count": 10, "batch_counts": {"split": 3}, "status": "completed_with_failures"}
    status = {"job_status": job_status, "metrics": {"succeeded": 12, "dead_lettered": 1}}
    assert "13/13 batches" in progress_line(status, elapsed_s=1.0)


def test_a_ledger_made_before_the_item_counts_gets_their_columns(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    old = sqlite3.connect(path)
    old.executescript(
        SCHEMA.replace("    splits INTEGER NOT NULL DEFAULT 0,", "").replace(
            "    items INTEGER NOT NULL DEFAULT 0,", ""
        )
    )
    old.execute("INSERT INTO jobs (job_id, updated) VALUES ('j1', 0)")
    old.commit()
    old.close()

    ledger = SqliteFile(path, SCHEMA, added=ADDED_COLUMNS)

    async def columns() -> tuple[int, list[str]]:
        (splits,) = await ledger.run(lambda db: db.execute("SELECT splits FROM jobs").fetchone())
        names = await ledger.run(lambda db: [row[1] for row in db.execute("PRAGMA table_info(batches)")])
        await ledger.close()
        return splits, names

    splits, names = asyncio.run(columns())
    assert splits == 0 and "items" in names
