"""Results as files under `<data_dir>/results/<job_id>/`, one per group (groups.py), written to a temporary file and
renamed into place: a reader sees a whole group or none of it.

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

from thresher.core.results import groups
from thresher.core.results.base import PAGE_BYTES, ResultsSize, ResultStore, StoredResult
from thresher.core.results.groups import GroupName

READS_AT_ONCE = 256  # groups read at once, at most (and INLINE_BYTES of them on the loop, PAGE_BYTES on a thread)
# A group this small is written on the event loop, and groups are read on it while they add up to no more: through
# the page cache, it takes less time than a hop to a thread and back, which a busy machine makes longer still (bench
# scenario 6). Larger ones are written and read on a thread, not to hold the loop up.
INLINE_BYTES = 256 * 1024


class LocalResultStore(ResultStore):
    def __init__(self, root: Path) -> None:
        self._root = root

    def _dir(self, job_id: str) -> Path:
        return self._root / job_id

    async def put_many(self, job_id: str, results: Sequence[tuple[str, int, bytes, bytes]]) -> None:
        name, data = groups.encode(results)
        if len(data) <= INLINE_BYTES:
            _write(str(self._dir(job_id)), str(name), data)
        else:
            await asyncio.to_thread(_write, str(self._dir(job_id)), str(name), data)

    async def read(self, job_id: str, after: int = -1) -> AsyncIterator[list[StoredResult]]:
        folder = self._dir(job_id)
        names = await asyncio.to_thread(_names, folder)

        async def load(names: list[GroupName]) -> list[bytes]:
            small = _read_all(folder, names, INLINE_BYTES, at_least_one=False)
            return small or await asyncio.to_thread(_read_all, folder, names, PAGE_BYTES, at_least_one=True)

        async for page in groups.merged(names, after, load, READS_AT_ONCE):
            yield page

    async def size(self, job_id: str) -> ResultsSize:
        return await asyncio.to_thread(_size, self._dir(job_id))

    async def delete(self, job_id: str) -> ResultsSize:
        folder = self._dir(job_id)
        size = await asyncio.to_thread(_size, folder)
        await asyncio.to_thread(shutil.rmtree, folder, ignore_errors=True)
        return size

    async def close(self) -> None:
        pass  # no connections


def _names(folder: Path) -> list[GroupName]:
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return [name for name in map(GroupName.parse, names) if name is not None]


def _read_all(folder: Path, names: list[GroupName], budget: int, at_least_one: bool) -> list[bytes]:
    """The contents of the first of `names` that fit in `budget` bytes together (and of the first whatever its size,
    `at_least_one`)."""
    contents: list[bytes] = []
    for name in names:
        data = _read(f"{folder}/{name}", budget if contents or not at_least_one else None)
        if data is None:
            break
        contents.append(data)
        budget -= len(data)
    return contents


def _read(path: str, at_most: int | None) -> bytes | None:
    """The file's bytes (None: more than `at_most`), with os calls: fewer system calls than Path.read_bytes."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # deleted meanwhile: read as an empty group
        return b""
    try:
        chunks, left = [], os.fstat(fd).st_size
        if at_most is not None and left > at_most:
            return None
        while left > 0 and (chunk := os.read(fd, left)):  # one read, but for a file over 2 GiB
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _size(folder: Path) -> ResultsSize:
    heads, total = [], 0
    for name in _names(folder):
        try:
            with open(folder / str(name), "rb") as file:
                heads.append(file.read(name.head_bytes))
                total += os.fstat(file.fileno()).st_size
        except FileNotFoundError:  # deleted meanwhile
            continue
    return ResultsSize(groups.distinct_indexes(heads), total)


def _write(folder: str, name: str, data: bytes) -> None:
    """Written to a temporary file, then renamed into place. The temporary name is this thread's (it writes one file
    at a time): no random name to make."""
    temp = f"{folder}/.{os.getpid()}-{threading.get_ident()}.tmp"
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
