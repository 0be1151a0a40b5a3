"""Results as files under `<data_dir>/results/<job_id>/`, each written to a temporary file and renamed into place.

Files are not fsync'ed: a result written before its batch's ack survives a process crash (the page cache keeps it);
a power loss could lose recent ones, as it could the SQLite queue's last transactions (synchronous=NORMAL).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

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


class LocalResultStore(ResultStore):
    def __init__(self, root: Path) -> None:
        self._root = root

    def _dir(self, job_id: str) -> Path:
        return self._root / job_id

    async def put(self, job_id: str, batch_id: str, result: bytes, items: bytes) -> None:
        await self.put_many(job_id, [(batch_id, result, items)])

    async def put_many(self, job_id: str, results: Sequence[tuple[str, bytes, bytes]]) -> None:
        files = [
            (object_name(batch_index(batch_id)), encode(batch_id, result, items)) for batch_id, result, items in results
        ]
        await asyncio.to_thread(_write_all, str(self._dir(job_id)), files)  # one thread hop for them all

    async def read(self, job_id: str, after: int = -1) -> AsyncIterator[list[StoredResult]]:
        folder = self._dir(job_id)
        indexes = await asyncio.to_thread(self._indexes, folder, after)
        while indexes:
            page, read = await asyncio.to_thread(self._read_page, folder, indexes[:PAGE])
            indexes = indexes[read:]
            if page:
                yield page

    @staticmethod
    def _indexes(folder: Path, after: int) -> list[int]:
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        return sorted(i for i in map(name_index, names) if i is not None and i > after)

    @staticmethod
    def _read_page(folder: Path, indexes: list[int]) -> tuple[list[StoredResult], int]:
        """The results of `indexes`, up to PAGE_BYTES of them (at least one), and how many indexes were read."""
        page, size, read = [], 0, 0
        for index in indexes:
            if size >= PAGE_BYTES:
                break
            read += 1
            try:
                data = (folder / object_name(index)).read_bytes()
            except FileNotFoundError:  # deleted meanwhile
                continue
            page.append(decode(index, data))
            size += len(data)
        return page, read

    async def size(self, job_id: str) -> ResultsSize:
        return await asyncio.to_thread(self._size, self._dir(job_id))

    @staticmethod
    def _size(folder: Path) -> ResultsSize:
        count = total = 0
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return ResultsSize()
        for entry in entries:
            if name_index(entry.name) is not None:
                try:
                    total += entry.stat().st_size
                except FileNotFoundError:
                    continue
                count += 1
        return ResultsSize(count, total)

    async def delete(self, job_id: str) -> ResultsSize:
        folder = self._dir(job_id)
        size = await asyncio.to_thread(self._size, folder)
        await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
        return size

    async def close(self) -> None:
        pass  # no connections


def _write_all(folder: str, files: list[tuple[str, bytes]]) -> None:
    """Each file written to a temporary one, then renamed into place: a reader sees the old file or the new one,
    never a part. The temporary name is this thread's (it writes one file at a time): no random name to make."""
    temp = f"{folder}/.{os.getpid()}-{threading.get_ident()}.tmp"
    for name, data in files:
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        except FileNotFoundError:  # the job's first result
            os.makedirs(folder, exist_ok=True)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(temp, f"{folder}/{name}")
