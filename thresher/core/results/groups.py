"""Results kept in groups: one file (or S3 object) per group of batches, read back merged into batch order.

A dequeuer stores the results of a flush together, as one group (one write, one rename or PutObject, for up to
MAX_HELD batches). Its name, `<first index>-<last index>-<stamp>-<head bytes>.results`, tells a reader which batches
it may hold (a range: dequeuers take batches interleaved, so groups overlap) and how long its head is. The head lists
each result's `<index> <attempt> <batch id> <result bytes> <items bytes>`, one a line after a line with their count;
the results and items follow, in that order, without any re-encoding (the worker's JSON answer and the batch's JSON
array, as they came).

A batch split in two (on_failure bisect) has its halves' results under its own index (`<batch id>.0`, `.1`, ...:
thresher/core/bisect.py), read back in batch id order, which is input order; a result of a batch that was split
(stored by an attempt that succeeded too late) is passed over for its halves'.

Exactly one result per batch, whichever groups hold it (a batch delivered twice has its result stored twice, by the
same dequeuer or by two): the reader keeps the one with the highest attempt (the queue's receive count: a later
delivery always counts more), and between equal attempts (the same delivery stored twice) the one in the group with
the later stamp (nanoseconds since the epoch, then a per-process token and sequence).

Reading merges the groups in order of their first index: a result is final once every group that may hold its
index has been read, that is, once the next group unread starts after it. A reader holds the results of the groups
overlapping the index it is at, not the whole job's.
"""

from __future__ import annotations

import heapq
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from itertools import count
from typing import NamedTuple

from thresher.core.bisect import HALF_SEPARATOR
from thresher.core.results.base import PAGE, PAGE_BYTES, StoredResult, batch_index

SUFFIX = ".results"
INDEX_DIGITS = 12  # enough for any job (a batch index is below 10^12)
_TOKEN = os.urandom(4).hex()  # this process's, in its stamps: two processes never make the same stamp
_SEQUENCE = count()

NewResult = tuple[str, int, bytes, bytes]  # batch id, attempt, result, items


class GroupName(NamedTuple):  # a tuple: a job's names sort in C
    first: int
    last: int
    stamp: str
    head_bytes: int

    def __str__(self) -> str:
        return f"{self.first:0{INDEX_DIGITS}d}-{self.last:0{INDEX_DIGITS}d}-{self.stamp}-{self.head_bytes}{SUFFIX}"

    @staticmethod
    def parse(name: str) -> GroupName | None:
        """The group a file's name describes; None for anything else (a temporary file)."""
        parts = name.removesuffix(SUFFIX).split("-")
        if not name.endswith(SUFFIX) or len(parts) != 6 or not all(p.isdigit() for p in (*parts[:2], parts[5])):
            return None
        return GroupName(int(parts[0]), int(parts[1]), "-".join(parts[2:5]), int(parts[5]))


# One result of a group: (attempt, stamp), what decides between two results of the same batch, then the result.
# A tuple, not a class: a read makes one per result.
Kept = tuple[int, str, StoredResult]


def encode(results: Sequence[NewResult]) -> tuple[GroupName, bytes]:
    """A group of results (at least one), as its name and content."""
    ordered = sorted(((batch_index(batch_id), attempt, batch_id, r, i) for batch_id, attempt, r, i in results))
    head = b"%d\n" % len(ordered) + b"".join(
        b"%d %d %s %d %d\n" % (index, attempt, batch_id.encode(), len(r), len(i))
        for index, attempt, batch_id, r, i in ordered
    )
    body = b"".join(part for *_, r, i in ordered for part in (r, i))
    stamp = f"{time.time_ns():020d}-{_TOKEN}-{next(_SEQUENCE):08d}"
    return GroupName(ordered[0][0], ordered[-1][0], stamp, len(head)), head + body


def decode_head(head: bytes) -> list[tuple[int, int, str, int, int]]:
    """(index, attempt, batch id, result bytes, items bytes) of each result of a group's head."""
    words = head.split()  # the count, then five words per result; converted a column at a time (map runs in C)
    end = 1 + 5 * int(words[0])
    return list(
        zip(
            map(int, words[1:end:5]),
            map(int, words[2:end:5]),
            map(bytes.decode, words[3:end:5]),
            map(int, words[4:end:5]),
            map(int, words[5:end:5]),
            strict=True,
        )
    )


def decode(name: GroupName, data: bytes) -> list[Kept]:
    """The group's results (none when `data` is empty: a group deleted while it was read)."""
    if not data:
        return []
    kept: list[Kept] = []
    offset, stamp = name.head_bytes, name.stamp
    for index, attempt, batch_id, result_bytes, items_bytes in decode_head(data[: name.head_bytes]):
        result_end = offset + result_bytes
        offset = result_end + items_bytes
        kept.append((attempt, stamp, StoredResult(index, batch_id, data[result_end - result_bytes : result_end],
                                                  data[result_end:offset])))  # fmt: skip
    return kept


def distinct_indexes(heads: Iterable[bytes]) -> int:
    """The batches with a result (a split batch's halves each count)."""
    return len({(entry[0], entry[2]) for head in heads for entry in decode_head(head)})


async def merged(
    names: Iterable[GroupName], after: int, load: Callable[[list[GroupName]], Awaitable[list[bytes]]], at_once: int
) -> AsyncIterator[list[StoredResult]]:
    """The results after index `after` of the groups `names`, one per index, in index order, a page at a time;
    `load` reads the contents of the first of the groups it is given (at least one; S3 reads them in parallel, files
    are read a few hundred KiB at a time: local.py), `at_once` groups given at most."""
    unread = sorted(name for name in names if name.last > after)
    unread.reverse()  # the next group to read is the last: popped
    best: dict[tuple[int, str], Kept] = {}  # by (index, batch id): a split batch's halves share its index
    waiting: list[tuple[int, str]] = []  # a heap of best's keys
    page: list[StoredResult] = []
    size = 0
    while unread or waiting:
        bound = unread[-1].first if unread else None  # no index from here on is final before this group is read
        if bound is not None and (not waiting or waiting[0][0] >= bound):
            group = [unread.pop() for _ in range(min(at_once, len(unread)))]
            contents = await load(group)
            unread += reversed(group[len(contents) :])  # left for the next call
            for name, data in zip(group[: len(contents)], contents, strict=True):
                for kept in decode(name, data):
                    key = kept[2].index, kept[2].batch_id
                    if key[0] <= after:
                        continue
                    if key not in best:
                        heapq.heappush(waiting, key)
                    elif best[key][:2] > kept[:2]:
                        continue
                    best[key] = kept
            continue
        while waiting and (bound is None or waiting[0][0] < bound):
            result = best.pop(heapq.heappop(waiting))[2]
            if waiting and waiting[0][1].startswith(result.batch_id + HALF_SEPARATOR):
                continue  # it was split: its halves' results stand for it (every result of its index is in `best`)
            page.append(result)
            size += len(result.result) + len(result.items)
            if len(page) >= PAGE or size >= PAGE_BYTES:
                yield page
                page, size = [], 0
    if page:
        yield page
