"""The size rules of an inline item list, checked an item at a time as the items arrive, wherever they are held.

Each item is at most MAX_ITEM_BYTES (Cortex's limit), and each batch (a JSON array of `batch_size` items) fits in one
message of the configured queue. The scheduler checks a list given in a message; the gateway a list it stages as a
file (thresher/core/staging.py), as it writes it.
"""

from __future__ import annotations

from thresher.core.errors import InvalidRequest, ItemSizeExceedsLimit
from thresher.core.queue.registry import QUEUE_BACKENDS

MAX_ITEM_BYTES = 250 * 1024  # SQS's 256 KiB message limit less room for attributes (Cortex's limit)
# The largest batch (a JSON array) that one message of each queue backend takes: the message limit less room for
# the attributes that travel with it (kind, batch id). A backend without a message limit has none.
MAX_BATCH_BYTES = {
    name: entry.max_message_bytes - 1024 for name, entry in QUEUE_BACKENDS.items() if entry.max_message_bytes
}


class ItemSizes:
    """Feed each item's size to `add` (an item too large raises at once), then call `end`: it raises for the first
    batch over `max_batch_bytes` (None: no limit; nor when batch_size is below 1, which is refused elsewhere), so
    that an item too large is always the error named first."""

    def __init__(self, batch_size: int, max_batch_bytes: int | None) -> None:
        self._batch_size = batch_size if max_batch_bytes is not None else 0
        self._limit = max_batch_bytes or 0
        self.count = 0
        self._batch_bytes = 0
        self._too_large: str | None = None

    def add(self, size: int) -> None:
        if size > MAX_ITEM_BYTES:
            raise ItemSizeExceedsLimit(
                f"item {self.count} has size {size} bytes which exceeds the limit ({MAX_ITEM_BYTES} bytes)"
            )
        self.count += 1
        if self._batch_size >= 1:
            self._batch_bytes += size + 1  # and its comma, or the closing bracket
            if self.count % self._batch_size == 0:
                self._end_batch()

    def end(self) -> None:
        if self._batch_size >= 1 and self.count % self._batch_size:
            self._end_batch()
        if self._too_large is not None:
            raise InvalidRequest(self._too_large)

    def _end_batch(self) -> None:
        size, self._batch_bytes = self._batch_bytes + 1, 0  # "[" + items joined by "," + "]"
        if size > self._limit and self._too_large is None:
            last = self.count - 1
            first = last - (last % self._batch_size)
            self._too_large = (
                f"item_list: the batch of items {first} to {last} is {size} bytes, over the queue's"
                f" message limit of {self._limit} bytes; use a smaller batch_size"
            )
