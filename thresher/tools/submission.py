"""A job of items as the gateway's JSON Lines route takes it (POST /v1/apis/<api>/jobs), written as it is sent:
the submission on the first line, then each item on a line of its own, encoded a chunk at a time, never held.

The client streams that body (HTTP chunked encoding) from the items as they come, an iterator or a generator
included; the gateway stages the items as they arrive, so a job of millions of them holds no process's memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from thresher.core.errors import InvalidRequest

CHUNK_BYTES = 64 * 1024
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class SubmissionBody:
    """The submission `fields` with the items of `items`; `count` is the number of items sent."""

    def __init__(self, fields: dict[str, Any], items: Iterable[Any], batch_size: int | None) -> None:
        self._fields = fields
        self._items = items
        self._batch_size = batch_size
        self.count = 0

    def chunks(self) -> Iterator[bytes]:
        item_list = {} if self._batch_size is None else {"item_list": {"batch_size": self._batch_size}}
        yield (_encode(self._fields | item_list, "submission") + "\n").encode()
        lines: list[str] = []
        size = 0
        for item in self._items:
            text = _encode(item, f"items[{self.count}]")  # one line: JSON escapes a newline in a string
            lines.append(text)
            size += len(text) + 1  # and its newline
            self.count += 1
            if size >= CHUNK_BYTES:
                yield ("\n".join(lines) + "\n").encode()
                lines, size = [], 0
        if lines:
            yield ("\n".join(lines) + "\n").encode()


def _encode(value: Any, where: str) -> str:
    try:
        return _ENCODER.encode(value)
    except (TypeError, ValueError) as e:  # not JSON (a set, an object), NaN or Infinity
        raise InvalidRequest(f"{where}: not JSON: {e}") from None
