"""The results seam: each batch's result, kept once under the batch's index, read back in batch order.

A stored result is one file (or S3 object) per batch, named by its index zero-padded (`000000000042.result`), so that
names sort in batch order and a batch delivered twice overwrites its own result: exactly one per batch, the last
successful attempt's. The file holds a header line (`<batch_id> <result bytes>`), the result (the worker's JSON
answer) and the batch's items (its JSON array, as sent), so that a reader can join outputs to inputs.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from thresher.core.errors import InvalidRequest

SUFFIX = ".result"
INDEX_DIGITS = 12  # enough for any job (a batch index is below 10^12)
PAGE = 100  # results read back per page, at most
PAGE_BYTES = 4 * 1024 * 1024  # a page ends once it holds this much (one result may be larger: max_batch_bytes)


@dataclass(frozen=True)
class StoredResult:
    index: int
    batch_id: str
    result: bytes  # the worker's answer: one JSON value
    items: bytes  # the batch as sent: a JSON array

    def json_line(self, with_items: bool) -> bytes:
        """`{"batch_id": ..., "index": ..., "result": ...[, "items": [...]]}` and a newline, without parsing JSON."""
        line = b'{"batch_id": "%s", "index": %d, "result": %s' % (self.batch_id.encode(), self.index, self.result)
        if with_items:
            line += b', "items": ' + self.items
        return line + b"}\n"


@dataclass(frozen=True)
class ResultsSize:
    count: int = 0  # batches with a result
    bytes: int = 0  # bytes stored for them (results, items and headers)


def batch_index(batch_id: str) -> int:
    """The index in a batch id (`<job_id>-<index>`, services/enqueuer/batching.py)."""
    _, _, index = batch_id.rpartition("-")
    if not index.isdigit():
        raise InvalidRequest(f"{batch_id!r} is not a batch id (<job_id>-<index>)")
    return int(index)


def object_name(index: int) -> str:
    return f"{index:0{INDEX_DIGITS}d}{SUFFIX}"


def name_index(name: str) -> int | None:
    """The index an object's name holds; None for anything else (a temporary file)."""
    stem = name.removesuffix(SUFFIX)
    return int(stem) if name.endswith(SUFFIX) and stem.isdigit() else None


def encode(batch_id: str, result: bytes, items: bytes) -> bytes:
    return b"%s %d\n" % (batch_id.encode(), len(result)) + result + items


def decode(index: int, data: bytes) -> StoredResult:
    header, _, rest = data.partition(b"\n")
    batch_id, _, length = header.decode().partition(" ")
    size = int(length)
    return StoredResult(index, batch_id, rest[:size], rest[size:])


class ResultStore(ABC):
    """Every job's results. Errors: Unavailable when the store cannot be reached."""

    @abstractmethod
    async def put(self, job_id: str, batch_id: str, result: bytes, items: bytes) -> None:
        """Keep the batch's result (replacing an earlier attempt's), atomically: a reader sees all of it or none."""

    async def put_many(self, job_id: str, results: Sequence[tuple[str, bytes, bytes]]) -> None:
        """`put` each (batch id, result, items); all are kept when it returns (a failure may have kept some)."""
        await asyncio.gather(*(self.put(job_id, *result) for result in results))

    @abstractmethod
    def read(self, job_id: str, after: int = -1) -> AsyncIterator[list[StoredResult]]:
        """The job's results after index `after`, in index order, a page at a time."""

    @abstractmethod
    async def size(self, job_id: str) -> ResultsSize: ...

    @abstractmethod
    async def delete(self, job_id: str) -> ResultsSize:
        """Delete every result of the job; returns what was deleted."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""
