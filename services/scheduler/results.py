"""The jobs' results, as the Jobs service shows them: read back in batch order (following a running job), their
size in each job's status, deleted on request or once `results.ttl_s` has passed since the job ended.

Dequeuers write results (services/dequeuer/successes.py) before they report a batch succeeded, so once a job is
final every result it will have is stored: a follow ends after one last read past the final status, which sends
whatever is stored, in order. Before that, a follow sends a result only once every batch before it is settled: with
several workers, batch 1's result may be stored after batch 4's was read, and a follow resumes after the last index
it sent. Where a result is missing before a stored one (a gap), the follow asks the monitor which batches from the
gap on are settled (a call for up to SETTLED_ASKED of them, or one per id width past 999,999: see _first_ids; before
the next read: a batch settled by then has its result, if it has one, in that read); a settled batch without a result
(dead-lettered, or its worker answered none) is passed over, and the follow waits for the others. A batch split in
two (on_failure bisect) has its halves' results under its index, sent together once the monitor has every half
settled. A follow reads the store every FOLLOW_POLL_S (a directory listing locally, a ListObjectsV2 call on S3).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from prometheus_client import Gauge

from services.scheduler.store import JobStore
from thresher.core.bisect import HALF_SEPARATOR, root_batch_id
from thresher.core.errors import NotFound, Unavailable
from thresher.core.ids import MIN_INDEX_DIGITS, batch_id
from thresher.core.names import METRIC_PREFIX
from thresher.core.results import ResultsSize, ResultStore, StoredResult, batch_index
from thresher.core.rpc import Client
from thresher.v1 import jobs_pb2, monitor_pb2

log = logging.getLogger(__name__)
V = TypeVar("V")

FOLLOW_POLL_S = 0.25  # how often a follow looks for new results while it finds none
SETTLED_ASKED = 1000  # batches a follow asks the monitor about at once, at most
SETTLED_TIMEOUT_S = 2.0  # a follow does not wait longer than this for the monitor (it asks again at its next read)
MESSAGE_BYTES = 4 * 1024 * 1024  # of results per ReadResults message (gRPC's messages are 16 MiB at most here)
SIZE_CACHE_S = 2.0  # a running job's size is listed again after this long (job statuses are read often)
EXPIRY_INTERVAL_S = 60.0  # how often results past results.ttl_s are looked for (at most: a shorter ttl, that often)
JOBS_KEPT = 10_000  # jobs whose size and S3 path are kept, the most recently read (memory flat in finished jobs)

RESULTS_BYTES = Gauge(
    f"{METRIC_PREFIX}results_bytes",
    f"Bytes of batch results kept, by API (of the last {JOBS_KEPT} jobs read since start).",
    ["api_name"],
)
RESULTS_DELETED_BYTES = Gauge(
    f"{METRIC_PREFIX}results_deleted_bytes", "Bytes of batch results deleted (on request or expired) since start."
)


class JobResults:
    def __init__(
        self,
        store: JobStore,
        open_results: Callable[[str], ResultStore],
        ttl_s: float,
        monitor: Client,
        jobs_kept: int = JOBS_KEPT,
    ) -> None:
        """`open_results(s3_path)`: the store of results at a job's own S3 path ("": where the settings say)."""
        self._store = store
        self._monitor = monitor
        self._open_results = open_results
        self._ttl_s = ttl_s
        self._jobs_kept = jobs_kept
        self._result_stores: dict[str, ResultStore] = {}  # by S3 path, opened once
        # job id -> its submission's results.s3_path (submissions never change), the last `jobs_kept` read
        self._s3_paths: OrderedDict[str, str] = OrderedDict()
        # job id -> when it was listed (None: the job was final then, so it does not change), its API, its size; the
        # last `jobs_kept` read (one read again once forgotten is listed again)
        self._sizes: OrderedDict[str, tuple[float | None, str, ResultsSize]] = OrderedDict()
        self._bytes: Counter[str] = Counter()  # by API: the bytes of the jobs in _sizes (the gauge)

    @property
    def jobs_kept(self) -> int:
        """How many jobs' sizes are kept (JOBS_KEPT at most, however many jobs ended)."""
        return len(self._sizes)

    async def size(self, job: jobs_pb2.Job, final: bool) -> jobs_pb2.ResultsSize:
        """The job's results now (a final job's once listed, a running job's at most SIZE_CACHE_S old)."""
        cached = self._sizes.get(job.job_id)
        listed_at = None if cached is None else cached[0]
        if cached is None or (listed_at is not None and (final or time.monotonic() - listed_at > SIZE_CACHE_S)):
            # listed after `final` was known: final, it is the last size
            size = await (await self._results_of(job.job_id)).size(job.job_id)
            self._keep_size(job, None if final else time.monotonic(), size)
        else:
            self._sizes.move_to_end(job.job_id)
            size = cached[2]
        return jobs_pb2.ResultsSize(count=size.count, bytes=size.bytes)

    async def read(
        self, job_id: str, after: int, follow: bool, items: bool, is_final: Callable[[], Awaitable[bool]]
    ) -> AsyncIterator[list[jobs_pb2.BatchOutput]]:
        """Messages of results after index `after`, in order, each about MESSAGE_BYTES at most (one result alone may
        be larger: results.max_batch_bytes, and its items); following, each result once every batch before it is
        settled, until a read after the job is final."""
        results = await self._results_of(job_id)
        gap: StoredResult | None = None  # the last read stopped before this result: a batch before it was missing
        while True:
            final = follow and await is_final()  # looked at before the read: no result can come after it
            in_order = follow and not final
            settled = await self._settled(job_id, after, gap) if in_order and gap is not None else set()
            asked, gap = gap is not None, None
            message: list[jobs_pb2.BatchOutput] = []
            size = 0
            async for page in results.read(job_id, after):
                for r in page:
                    # A split batch's halves (ids with a ".") go once every one of them is settled: all together
                    if in_order and (_unsettled_between(after, r.index, settled) or _unsettled_half(r, settled)):
                        gap = r
                        break
                    if message and size + len(r.result) + len(r.items) * items > MESSAGE_BYTES:
                        yield message
                        message, size = [], 0
                    output = jobs_pb2.BatchOutput(batch_id=r.batch_id, index=r.index, result_json=r.result)
                    if items:
                        output.items_json = r.items
                    message.append(output)
                    size += len(r.result) + len(r.items) * items
                    after = r.index
                if gap is not None:
                    break
            if message:
                yield message
            if not follow or final:
                return
            if gap is None or asked:  # (a gap just found: read again at once, once the monitor is asked)
                await asyncio.sleep(FOLLOW_POLL_S)

    async def _settled(self, job_id: str, after: int, gap: StoredResult) -> set[int]:
        """The indexes from `after` + 1 on of batches the monitor has as settled (SETTLED_ASKED at most from each id
        asked from; none while it cannot be reached)."""
        settled: set[int] = set()
        for first_id in _first_ids(job_id, after + 1, gap):
            request = monitor_pb2.SettledBatchesRequest(job_id=job_id, from_batch_id=first_id, limit=SETTLED_ASKED)
            try:
                answer = await self._monitor.GetSettledBatches(request, timeout=SETTLED_TIMEOUT_S)
            except Unavailable:
                log.warning("monitor unavailable: a follow of job %s waits at index %d", job_id, after + 1)
                return set()
            settled.update(map(batch_index, answer.batch_ids))
        return settled

    async def delete(self, job: jobs_pb2.Job) -> jobs_pb2.DeletedResults:
        size = await (await self._results_of(job.job_id)).delete(job.job_id)
        self._keep_size(job, None, ResultsSize())
        RESULTS_DELETED_BYTES.inc(size.bytes)
        log.info(
            "deleted %d results (%d bytes) of job %s", size.count, size.bytes, job.job_id, extra={"job_id": job.job_id}
        )
        return jobs_pb2.DeletedResults(job_id=job.job_id, deleted_results=size.count, deleted_bytes=size.bytes)

    async def jobs_of(self, api_name: str) -> list[jobs_pb2.Job]:
        """The API's jobs (to call `delete_forgotten` with, once some may have been deleted)."""
        records = await self._store.list_jobs(api_name, limit=2**31 - 1)
        for record in records:
            await self._results_of(record.job_id)  # where its results are, known once the job is forgotten
        return [jobs_pb2.Job(job_id=r.job_id, api_name=r.api_name) for r in records]

    async def delete_forgotten(self, jobs: list[jobs_pb2.Job]) -> None:
        """Delete the results of those of `jobs` that the store has forgotten (a deleted API's jobs)."""
        for job in jobs:
            try:
                await self._store.get_job(job.job_id)
            except NotFound:
                await self.delete(job)

    async def expire(self) -> None:
        """Forever: delete the results of jobs that ended over `ttl_s` ago (each job once per process)."""
        expired: set[str] = set()
        while True:
            for job_id, api_name in await self._store.ended_before(time.time() - self._ttl_s):
                if job_id not in expired:
                    try:
                        await self.delete(jobs_pb2.Job(job_id=job_id, api_name=api_name))
                        expired.add(job_id)
                    except Exception:
                        log.exception("could not delete the expired results of job %s; trying again later", job_id)
            await asyncio.sleep(min(EXPIRY_INTERVAL_S, self._ttl_s))

    async def _results_of(self, job_id: str) -> ResultStore:
        """The store of the job's results: its submission's S3 path, or where the settings say."""
        s3_path = self._s3_paths.get(job_id)
        if s3_path is None:
            s3_path = (await self._store.get_submission(job_id)).results.s3_path
            _keep(self._s3_paths, job_id, s3_path, self._jobs_kept)
        else:
            self._s3_paths.move_to_end(job_id)
        if s3_path not in self._result_stores:
            self._result_stores[s3_path] = self._open_results(s3_path)
        return self._result_stores[s3_path]

    def _keep_size(self, job: jobs_pb2.Job, listed_at: float | None, size: ResultsSize) -> None:
        """Keep the job's size, forget the least recently read job's past `jobs_kept`, and move the gauge by the
        difference (a running total: no sum over the jobs)."""
        previous = self._sizes.pop(job.job_id, None)
        forgotten = _keep(self._sizes, job.job_id, (listed_at, job.api_name, size), self._jobs_kept)
        dropped = [entry for entry in (previous, forgotten) if entry is not None]
        for _, api_name, old in dropped:
            self._bytes[api_name] -= old.bytes
        self._bytes[job.api_name] += size.bytes
        for api_name in {job.api_name, *(entry[1] for entry in dropped)}:
            RESULTS_BYTES.labels(api_name).set(self._bytes[api_name])


def _keep(entries: OrderedDict[str, V], key: str, value: V, limit: int) -> V | None:
    """Put `value` last; returns the first entry's value if that put `entries` past `limit` (it is removed)."""
    entries[key] = value
    return entries.popitem(last=False)[1] if len(entries) > limit else None


def _first_ids(job_id: str, first: int, gap: StoredResult) -> list[str]:
    """The batch ids to ask the monitor from (it answers ids in string order) to cover the batches from `first` to the
    gap. A job's ids are zero-padded to one width (the gap's), or, when its batch count is not known up front (file
    sources), to 6 digits and longer past 999,999: `job-1000000` sorts before `job-999999`. Where the gap's id may be
    one of the latter, ask from `first` in 6 digits too, and from each power of ten from 10^6 up to the gap."""
    width = len(root_batch_id(gap.batch_id)) - len(job_id) - 1  # a split batch's half: its batch's width
    first_ids = [batch_id(job_id, first, width)]
    if width == max(MIN_INDEX_DIGITS, len(str(gap.index))):  # padded no further than needed: the ids may grow
        first_ids.append(batch_id(job_id, first))
        power = 10 ** max(MIN_INDEX_DIGITS, len(str(first)))
        while power < gap.index:
            first_ids.append(f"{job_id}-{power}")
            power *= 10
    return list(dict.fromkeys(first_ids))  # (an id once: below 10^6, growing ids are 6 digits, as the gap's)


def _unsettled_half(result: StoredResult, settled: set[int]) -> bool:
    """Whether the result is a split batch's half (thresher/core/bisect.py) whose index is not settled yet: whose
    other halves may not be stored yet (the monitor has a split batch settled once all its halves are)."""
    return HALF_SEPARATOR in result.batch_id and result.index not in settled


def _unsettled_between(after: int, index: int, settled: set[int]) -> bool:
    """Whether a batch after `after` and before `index` is not among the `settled` ones."""
    between = range(after + 1, index)
    return len(between) > len(settled) or not settled.issuperset(between)
