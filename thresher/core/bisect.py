"""Poison items isolated by bisection (a job's `on_failure: bisect`): a batch's items, and its two halves. Standard
library only: the Python client reads the halves' ids too.

A batch whose last attempt failed is split (thresher/core/retries.py): its halves are new batches of the same job,
`<batch id>.0` with the first ceil(n/2) items and `<batch id>.1` with the rest, each item's bytes as they were. A
half's id sorts right after its batch's and before the next batch's, so a job's batch ids still sort in input order.
"""

from __future__ import annotations

import json
import re
from json.scanner import make_scanner
from typing import Any, cast

HALF_SEPARATOR = "."  # `<batch id>.0`: sorts before any digit, so right after the batch's own id

# (value, end) of the JSON value at an index: the decoder's own scanner (C), which keeps no copy of the value's text.
_SCAN = make_scanner(cast(Any, json.JSONDecoder()))
_SPACE = re.compile(r"[ \t\n\r]*")


def count_items(body: bytes) -> int:
    """The items of a batch (a JSON array); 0 for a body that is no array."""
    try:
        items = json.loads(body)
    except ValueError:
        return 0
    return len(items) if isinstance(items, list) else 0


def split_items(body: bytes) -> list[bytes]:
    """Each item of a batch (a JSON array), byte for byte as written."""
    text = body.decode("utf-8")
    items: list[str] = []
    pos = _skip(text, _skip(text, 0) + 1)  # past "["
    while text[pos] != "]":
        end = _SCAN(text, pos)[1]
        items.append(text[pos:end])
        pos = _skip(text, end)
        if text[pos] == ",":
            pos = _skip(text, pos + 1)
    return [item.encode("utf-8") for item in items]


def halves(batch_id: str, body: bytes) -> list[tuple[str, bytes]]:
    """The (id, body) of the batch's two halves (none for a batch of fewer than two items: it cannot be split)."""
    items = split_items(body)
    if len(items) < 2:
        return []
    middle = (len(items) + 1) // 2
    return [
        (f"{batch_id}{HALF_SEPARATOR}{half}", b"[" + b",".join(part) + b"]")
        for half, part in enumerate((items[:middle], items[middle:]))
    ]


def item_range(batch_id: str, root_items: int) -> tuple[int, int]:
    """(first item, items) of a batch within the batch it was split from at the top, of `root_items` items."""
    first, items = 0, root_items
    for half in batch_id.split(HALF_SEPARATOR)[1:]:
        middle = (items + 1) // 2
        first, items = (first, middle) if half == "0" else (first + middle, items - middle)
    return first, items


def root_batch_id(batch_id: str) -> str:
    """The id of the batch a half was split from, at the top: `<job>-000042` for `<job>-000042.0.1`."""
    return batch_id.partition(HALF_SEPARATOR)[0]


def _skip(text: str, pos: int) -> int:
    return _SPACE.match(text, pos).end()  # type: ignore[union-attr]  # matches everywhere, if only ""
