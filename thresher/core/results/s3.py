"""Results as S3 objects, one per group of batches (groups.py), under `<prefix>/<job_id>/`.

Costs, in S3 requests: one PutObject per group a dequeuer stores (the results of one flush, up to MAX_HELD batches:
services/dequeuer/successes.py), one ListObjectsV2 per 1000 groups and one GetObject per group to read them back (a
follow polls with a ListObjectsV2 every FOLLOW_POLL_S while the job runs), one ranged GetObject per group for a
job's size (the group's head only), one DeleteObjects per 1000 groups to delete them. Groups need no coordination
between dequeuers: each writes its own, and readers keep one result per batch (groups.py says which).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from thresher.core.config import InputSettings, ResultSettings
from thresher.core.results import groups
from thresher.core.results.base import ResultsSize, ResultStore, StoredResult
from thresher.core.results.groups import GroupName
from thresher.core.store.base import ObjectInfo
from thresher.core.store.s3 import MAX_THREADS, S3Store

READS_AT_ONCE = MAX_THREADS  # GetObject calls at once: one after another would wait a round trip each


class S3ResultStore(ResultStore):
    def __init__(self, settings: ResultSettings, prefix: str) -> None:
        self._prefix = prefix.rstrip("/")
        # Credentials come from the usual AWS_* variables (or the pod's role): never in Thresher's settings.
        self._s3 = S3Store(InputSettings(s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region))

    def _folder(self, job_id: str) -> str:
        return f"{self._prefix}/{job_id}/"

    async def put_many(self, job_id: str, results: Sequence[tuple[str, int, bytes, bytes]]) -> None:
        name, data = groups.encode(results)
        await self._s3.write(f"{self._folder(job_id)}{name}", data)

    async def read(self, job_id: str, after: int = -1) -> AsyncIterator[list[StoredResult]]:
        folder = self._folder(job_id)
        names = [name for name, _ in await self._groups(folder)]

        async def load(names: list[GroupName]) -> list[bytes]:
            return await asyncio.gather(*(self._s3.read(f"{folder}{name}") for name in names))

        async for page in groups.merged(names, after, load, READS_AT_ONCE):
            yield page

    async def size(self, job_id: str) -> ResultsSize:
        folder = self._folder(job_id)
        found = await self._groups(folder)
        heads: list[bytes] = []
        for start in range(0, len(found), READS_AT_ONCE):
            chunk = found[start : start + READS_AT_ONCE]
            heads += await asyncio.gather(*(self._s3.read_range(info.path, 0, name.head_bytes) for name, info in chunk))
        return ResultsSize(groups.distinct_indexes(heads), sum(info.size for _, info in found))

    async def delete(self, job_id: str) -> ResultsSize:
        folder = self._folder(job_id)
        size = await self.size(job_id)
        paths = [info.path async for info in self._s3.list(folder)]
        if paths:
            await self._s3.delete(paths)
        return size

    async def _groups(self, folder: str) -> list[tuple[GroupName, ObjectInfo]]:
        found = []
        async for info in self._s3.list(folder):
            name = GroupName.parse(info.path[len(folder) :])
            if name is not None:
                found.append((name, info))
        return found

    async def close(self) -> None:
        await self._s3.close()
