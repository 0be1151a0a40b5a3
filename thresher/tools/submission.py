"""A job submission's JSON, written as it is sent: a million items are encoded a chunk at a time, never held twice.

The gateway takes a job's items in one request body (there is no "append to a job"), so the client streams that
body (HTTP chunked encoding) from the items as they come, an iterator or a generator included.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from thresher.core.errors import InvalidRequest

CHUNK_BYTES = 64 * 1024
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class SubmissionBody:
    """The submission `fields` with `item_list.items` taken from `items`; `count` is the number of items sent."""

    def __init__(self, fields: dict[str, Any], items: Iterable[Any], batch_size: int | None) -> None:
        self._fields = fields
        self._items = items
        self._batch_size = batch_size
        self.count = 0

    def chunks(self) -> Iterator[bytes]:
        head = _encode(self._fields, "submission")
        list_head = '"item_list":{' + (f'"batch_size":{self._batch_size},' if self._batch_size is not None else "")
        yield (head[:-1] + ("," if self._fields else "") + list_head + '"items":[').encode()
        parts: list[str] = []
        size = 0
        separator = ""  # before each chunk of items but the first
        for item in self._items:
            text = _encode(item, f"items[{self.count}]")
            parts.append(text)
            size += len(text) + 1  # and its comma
            self.count += 1
            if size >= CHUNK_BYTES:
                yield (separator + ",".join(parts)).encode()
                parts, size, separator = [], 0, ","
        yield (separator + ",".join(parts) + "]}}").encode() if parts else b"]}}"


def _encode(value: Any, where: str) -> str:
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError) as e:  # not JSON (a set, an object), NaN or Infinity
        raise InvalidRequest(f"{where}: not JSON: {e}") from None
