"""Results as S3 objects, one per batch, under `<prefix>/<job_id>/`.

Costs, in S3 requests: one PutObject per batch that has a result (a redelivered batch puts its object again), one
ListObjectsV2 per 1000 results and one GetObject per result to read them back (a follow polls with a ListObjectsV2
every FOLLOW_POLL_S while the job runs), one DeleteObjects per 1000 to delete them. One object per batch is what
keeps a result exactly once without coordination between workers: a group of batches in one object would need one
writer per group.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from thresher.core.config import InputSettings, ResultSettings
from thresher.core.results.base import (
    PAGE,
    PAGE_BYTES,
    ResultsSize,
    ResultStore,
    StoredResult,
    batch_index,
    decode,
    encode,
    name_index,
    object_name,
)
from thresher.core.store.s3 import MAX_THREADS, S3Store

READS_AT_ONCE = MAX_THREADS


class S3ResultStore(ResultStore):
    def __init__(self, settings: ResultSettings) -> None:
        self._prefix = settings.s3_prefix.rstrip("/")
        # Credentials come from the usual AWS_* variables (or the pod's role): never in Thresher's settings.
        self._s3 = S3Store(InputSettings(s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region))

    def _folder(self, job_id: str) -> str:
        return f"{self._prefix}/{job_id}/"

    async def put(self, job_id: str, batch_id: str, result: bytes, items: bytes) -> None:
        path = self._folder(job_id) + object_name(batch_index(batch_id))
        await self._s3.write(path, encode(batch_id, result, items))

    async def read(self, job_id: str, after: int = -1) -> AsyncIterator[list[StoredResult]]:
        folder = self._folder(job_id)
        start_after = folder + object_name(after) if after >= 0 else ""
        page: list[StoredResult] = []
        size = 0
        wanted: list[tuple[int, str]] = []
        listing = self._s3.list(folder, start_after=start_after)
        while True:
            info = await anext(listing, None)
            if info is not None and (index := name_index(info.path[len(folder) :])) is not None and index > after:
                wanted.append((index, info.path))
            if len(wanted) == READS_AT_ONCE or (info is None and wanted):
                # GetObject calls at once (as many as the client's threads): reading one after another would
                # wait a round trip each.
                datas = await asyncio.gather(*(self._s3.read(path) for _, path in wanted))
                page += [decode(index, data) for (index, _), data in zip(wanted, datas, strict=True)]
                size += sum(map(len, datas))
                wanted = []
            if page and (info is None or len(page) >= PAGE or size >= PAGE_BYTES):
                yield page
                page, size = [], 0
            if info is None:
                return

    async def size(self, job_id: str) -> ResultsSize:
        count = total = 0
        folder = self._folder(job_id)
        async for info in self._s3.list(folder):
            if name_index(info.path[len(folder) :]) is not None:
                count, total = count + 1, total + info.size
        return ResultsSize(count, total)

    async def delete(self, job_id: str) -> ResultsSize:
        folder = self._folder(job_id)
        infos = [info async for info in self._s3.list(folder)]
        if infos:
            await self._s3.delete([info.path for info in infos])
        return ResultsSize(len(infos), sum(info.size for info in infos))

    async def close(self) -> None:
        await self._s3.close()
