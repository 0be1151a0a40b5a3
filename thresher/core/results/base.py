"""The results seam: each batch's result, kept once under the batch's index, read back in batch order.

Results are stored in groups (groups.py: one file or S3 object per group of batches, as a dequeuer flushes them),
each with its batch id, the attempt that made it, the worker's JSON answer and the batch's items (its JSON array, as
sent), so that a reader can join outputs to inputs. A batch stored twice reads back once: the latest attempt's.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from thresher.core.bisect import root_batch_id
from thresher.core.errors import InvalidRequest

PAGE = 100  # results read back per page, at most
PAGE_BYTES = 4 * 1024 * 1024  # a page ends once it holds this much (one result may be larger: max_batch_bytes)


class StoredResult(NamedTuple):  # a tuple: a read makes one per result, four times faster than a frozen dataclass
    index: int  # type: ignore[assignment]  # the batch's index; it hides tuple.index, which nothing calls on it
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
    """The index in a batch id (`<job_id>-<index>`, made by thresher.core.ids.batch_id); a split batch's halves have
    its index (`<job_id>-<index>.0.1`, thresher/core/bisect.py)."""
    _, _, index = root_batch_id(batch_id).rpartition("-")
    if not index.isdigit():
        raise InvalidRequest(f"{batch_id!r} is not a batch id (<job_id>-<index>)")
    return int(index)


class ResultStore(ABC):
    """Every job's results. Errors: Unavailable when the store cannot be reached."""

    async def put(self, job_id: str, batch_id: str, attempt: int, result: bytes, items: bytes) -> None:
        await self.put_many(job_id, [(batch_id, attempt, result, items)])

    @abstractmethod
    async def put_many(self, job_id: str, results: Sequence[tuple[str, int, bytes, bytes]]) -> None:
        """Keep each (batch id, attempt, result, items) together, atomically: a reader sees all of them or none.
        A batch's result replaces one of an earlier attempt (or of the same attempt, stored earlier)."""

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
