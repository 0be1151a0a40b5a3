"""Cutting a job's inline items into batches: pure, streaming and deterministic.

Batch ids are `<job_id>-<index>`, the index zero-padded to one width for the whole job (6 digits, more when
the job has more than a million batches), so a job's ids sort in batch order and cutting the same items
again gives the same ids: that is what makes a repeated Enqueue a resume rather than a duplicate.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import TypeVar

from thresher.core.errors import InvalidRequest
from thresher.core.ids import batch_id, index_width
from thresher.core.queue import Batch
from thresher.core.sources import ITEM_LIST, check_batch_size

T = TypeVar("T")


def batch_count(item_count: int, batch_size: int) -> int:
    """How many batches `item_count` items make: the last one may be partial."""
    check_batch_size(ITEM_LIST, batch_size)
    return -(-item_count // batch_size)


def cut_batches(job_id: str, items: Sequence[bytes], batch_size: int) -> Iterator[Batch]:
    """Yield batch i = items[i*bs:(i+1)*bs] as a JSON array of the items' bytes, unchanged, one at a time."""
    count = batch_count(len(items), batch_size)
    width = index_width(count)
    for index in range(count):
        chunk = items[index * batch_size : (index + 1) * batch_size]
        yield Batch(batch_id(job_id, index, width), b"[" + b",".join(chunk) + b"]")


def check_items(items: Iterable[bytes]) -> None:
    """Reject empty items up front: each must be one JSON value, and nothing should be half-enqueued."""
    for index, item in enumerate(items):
        if not item.strip():
            raise InvalidRequest(f"item_list: items[{index}] is empty; each item must be one JSON value")


def chunked(iterable: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` elements (the last may be shorter), drawn lazily."""
    iterator = iter(iterable)
    while chunk := list(islice(iterator, size)):
        yield chunk
