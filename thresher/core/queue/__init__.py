"""Queue backends, chosen by name (registry.py); each is imported only when chosen."""

from __future__ import annotations

from thresher.core.queue.base import (
    KIND_BATCH,
    KIND_JOB_COMPLETE,
    Batch,
    DeadLetter,
    Delivery,
    Depth,
    Queue,
    QueueBackend,
    calls_source,
)
from thresher.core.queue.registry import QUEUE_BACKENDS, QueueBackendEntry, open_queue_backend, queue_backend_entry

__all__ = [
    "KIND_BATCH",
    "KIND_JOB_COMPLETE",
    "Batch",
    "DeadLetter",
    "Delivery",
    "Depth",
    "QUEUE_BACKENDS",
    "Queue",
    "QueueBackend",
    "QueueBackendEntry",
    "calls_source",
    "open_queue_backend",
    "queue_backend_entry",
]
