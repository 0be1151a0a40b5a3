"""Results as S3 objects, one per batch, under `<prefix>/<job_id>/`.

Costs, in S3 requests: one PutObject per batch that has a result (a redelivered batch puts its object again), one
ListObjectsV2 per 1000 results and one GetObject per result to read them back (a follow polls with a ListObjectsV2
every FOLLOW_POLL_S while the job runs), one DeleteObjects per 1000 to delete them. One object per batch is what
keeps a result exactly once without coordination between workers: a group of batches in one object would need one
writer per group.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from thresher.core.config import InputSettings, ResultSettings
from thresher.core.results.base import (
    PAGE,
    ResultsSize,
    ResultStore,
    StoredResult,
    batch_index,
    decode,
    encode,
    name_index,
    object_name,
)
from thresher.core.store.s3 import S3Store


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
        paths: list[tuple[int, str]] = []
        async for info in self._s3.list(folder, start_after=start_after):
            index = name_index(info.path[len(folder) :])
            if index is not None and index > after:
                paths.append((index, info.path))
            if len(paths) == PAGE:
                yield [decode(index, await self._s3.read(path)) for index, path in paths]
                paths = []
        if paths:
            yield [decode(index, await self._s3.read(path)) for index, path in paths]

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
