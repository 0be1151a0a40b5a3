"""The Python client's test worker: its result is a list with each item's square (the shape `Client.map` spreads
over the items). Config keys (all optional): `slow_s`, seconds each batch takes (only those with one of the
`slow_items`, when given); `fail_items`, items whose batch fails; `max_batch_items`, a batch of more items fails
(so that on_failure bisect splits it until its halves are small enough); `per_batch`: return the batch's sum
instead, one number (not the shape map takes)."""

from __future__ import annotations

import time
from typing import Any

from thresher.worker import serve


def handle_batch(items: list[int], ctx: Any) -> list[int] | int:
    config = ctx.config
    if not config.get("slow_items") or set(items) & set(config["slow_items"]):
        time.sleep(config.get("slow_s", 0))
    if set(items) & set(config.get("fail_items", [])):
        raise RuntimeError(f"poison item in {items}")
    if len(items) > config.get("max_batch_items", len(items)):
        raise RuntimeError(f"a batch of {len(items)} items is too large")
    return sum(items) if config.get("per_batch") else [item * item for item in items]


if __name__ == "__main__":
    serve(handle_batch)
