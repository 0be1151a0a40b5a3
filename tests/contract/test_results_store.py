"""The results seam, one suite for every store: local files, and S3 on moto's server over HTTP."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import AWS_ENV, moto_client
from thresher.core.config import Config
from thresher.core.errors import InvalidRequest
from thresher.core.results import ResultsSize, ResultStore, StoredResult, open_result_store

JOB = "job1"


@pytest.fixture(params=["local", "s3"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ResultStore]:
    config = Config(data_dir=tmp_path)
    if request.param == "s3":
        endpoint = request.getfixturevalue("aws_endpoint")
        moto_client("s3", endpoint).create_bucket(Bucket="results")
        for name, value in AWS_ENV.items():  # boto3's chain, as a dequeuer's environment gives it
            monkeypatch.setenv(name, value)
        config.results.s3_prefix = "s3://results/kept/"
        config.results.s3_endpoint_url = endpoint
        config.results.s3_region = AWS_ENV["AWS_DEFAULT_REGION"]
    results = open_result_store(config)
    try:
        yield results
    finally:
        await results.close()


async def read_all(store: ResultStore, job_id: str = JOB, after: int = -1) -> list[StoredResult]:
    return [result async for page in store.read(job_id, after) for result in page]


async def test_results_come_back_in_index_order_whatever_the_order_they_were_written(store: ResultStore) -> None:
    # Given 230 results (more than two pages) written in a random order
    indexes = list(range(230))
    random.Random(7).shuffle(indexes)
    for index in indexes:
        await store.put(JOB, f"{JOB}-{index:06d}", 1, b'{"n": %d}' % index, b"[%d]" % index)

    # Then they are read back in index order, each with its batch id, result and items
    assert await read_all(store) == [
        StoredResult(i, f"{JOB}-{i:06d}", b'{"n": %d}' % i, b"[%d]" % i) for i in range(230)
    ]
    # And a read after an index resumes after it
    assert [r.index for r in await read_all(store, after=199)] == list(range(200, 230))


async def test_a_batch_written_twice_has_one_result_the_last(store: ResultStore) -> None:
    await store.put(JOB, f"{JOB}-000003", 1, b'{"attempt": 1}', b"[3]")
    await store.put(JOB, f"{JOB}-000003", 2, b'{"attempt": 2}', b"[3]")

    assert await read_all(store) == [StoredResult(3, f"{JOB}-000003", b'{"attempt": 2}', b"[3]")]


async def test_groups_of_a_flush_overlap_and_a_batch_in_two_groups_reads_once_the_latest_attempts(
    store: ResultStore,
) -> None:
    # Given two dequeuers' groups, interleaved (even and odd batches), with batch 4 in both: its second attempt in
    # the group written first (the first attempt's dequeuer was slow to store it), and batch 6 stored twice by the
    # same attempt (the later group wins)
    def group(indexes: list[int], attempt: int, tag: str) -> list[tuple[str, int, bytes, bytes]]:
        return [(f"{JOB}-{i:06d}", attempt, b'"%s%d"' % (tag.encode(), i), b"[%d]" % i) for i in indexes]

    await store.put_many(JOB, group([0, 2, 4, 6], 1, "a") + group([8], 2, "a"))
    await store.put_many(JOB, group([1, 3, 5, 7, 9], 1, "b") + group([4], 2, "b"))
    await store.put_many(JOB, group([4], 1, "c") + group([6], 1, "c"))

    # Then each batch reads back once, in order, the highest attempt's (then the latest group's) result
    results = await read_all(store)
    assert [r.index for r in results] == list(range(10))
    assert (results[4].result, results[6].result, results[8].result) == (b'"b4"', b'"c6"', b'"a8"')
    assert [r.index for r in await read_all(store, after=4)] == [5, 6, 7, 8, 9]
    assert (await store.size(JOB)).count == 10


async def test_sizes_and_delete_count_every_result_of_the_job_and_no_other(store: ResultStore) -> None:
    # Given two results of the job and one of another job
    for index in range(2):
        await store.put(JOB, f"{JOB}-{index:06d}", 1, b"[1, 2]", b"[0]")
    await store.put("job2", "job2-000000", 1, b"true", b"[0]")

    size = await store.size(JOB)
    assert size.count == 2 and size.bytes > 2 * len(b"[1, 2][0]")

    # When the job's are deleted, they are gone, and the other job's stay
    assert await store.delete(JOB) == size
    assert (await read_all(store), await store.size(JOB)) == ([], ResultsSize())
    assert [r.batch_id for r in await read_all(store, "job2")] == ["job2-000000"]
    assert await store.delete(JOB) == ResultsSize()  # again: nothing left, no error


async def test_a_job_without_results_reads_empty_and_a_bad_batch_id_is_refused(store: ResultStore) -> None:
    assert (await read_all(store, "nothing"), await store.size("nothing")) == ([], ResultsSize())
    with pytest.raises(InvalidRequest, match="not a batch id"):
        await store.put(JOB, "no-index-here", 1, b"1", b"[]")


def test_a_json_line_is_built_from_the_stored_bytes_with_or_without_items() -> None:
    result = StoredResult(42, "job1-000042", b'{"a": [1]}', b'["x"]')
    assert result.json_line(False) == b'{"batch_id": "job1-000042", "index": 42, "result": {"a": [1]}}\n'
    assert result.json_line(True) == b'{"batch_id": "job1-000042", "index": 42, "result": {"a": [1]}, "items": ["x"]}\n'


async def test_pages_hold_a_few_mib_not_every_result_of_a_large_job(store: ResultStore) -> None:
    # Given 10 results of 1 MiB each
    big = b'"' + b"x" * (1024 * 1024) + b'"'
    for index in range(10):
        await store.put(JOB, f"{JOB}-{index:06d}", 1, big, b"[]")

    pages = [[r.index for r in page] async for page in store.read(JOB)]

    # Then they come in order over several pages (a page ends past 4 MiB; on S3, after a group of parallel reads)
    assert len(pages) > 1 and [index for page in pages for index in page] == list(range(10))
    assert max(map(len, pages)) <= 8


async def test_indexes_past_999999_read_back_in_index_order_whatever_the_width_of_their_ids(store: ResultStore) -> None:
    # Given results around batch 1,000,000 whose ids gain a digit there (`-999999`, `-1000000`: as strings, they do
    # not sort in batch order), in groups written out of order, one of them across the boundary
    def group(indexes: list[int]) -> list[tuple[str, int, bytes, bytes]]:
        return [(f"{JOB}-{i:06d}", 1, b"%d" % i, b"[%d]" % i) for i in indexes]

    await store.put_many(JOB, group([1_000_003, 1_000_001]))
    await store.put_many(JOB, group([999_999, 1_000_000, 999_997]))
    await store.put_many(JOB, group([999_998, 1_000_002]))

    # Then they read back in index order, and resume after any index, either side of the boundary
    indexes = list(range(999_997, 1_000_004))
    assert [(r.index, r.batch_id) for r in await read_all(store)] == [(i, f"{JOB}-{i:06d}") for i in indexes]
    for after in (999_998, 999_999, 1_000_000):
        assert [r.index for r in await read_all(store, after=after)] == [i for i in indexes if i > after]


async def test_indexes_past_the_digits_of_a_group_name_read_back_in_order(store: ResultStore) -> None:
    # Given results of batches 10^12 - 1 and 10^12 + 1 (a group's name pads its indexes to 12 digits), and 10^12
    last_padded, longer = 10**12 - 1, 10**12 + 1
    await store.put_many(JOB, [(f"{JOB}-{longer}", 1, b"2", b"[]"), (f"{JOB}-{last_padded}", 1, b"0", b"[]")])
    await store.put(JOB, f"{JOB}-{10**12}", 1, b"1", b"[]")

    # Then they read back in index order, and resume after any of them
    assert [r.result for r in await read_all(store)] == [b"0", b"1", b"2"]
    assert [r.index for r in await read_all(store, after=10**12)] == [longer]
