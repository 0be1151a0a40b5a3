"""Queue backends, chosen by name; each is imported only when chosen."""

from __future__ import annotations

from pathlib import Path

from thresher.config import Config
from thresher.errors import InvalidRequest
from thresher.queue.base import (
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

__all__ = [
    "KIND_BATCH",
    "KIND_JOB_COMPLETE",
    "Batch",
    "DeadLetter",
    "Delivery",
    "Depth",
    "Queue",
    "QueueBackend",
    "calls_source",
    "open_queue_backend",
]


def _sqlite(config: Config) -> QueueBackend:
    from thresher.queue.sqlite import SqliteQueueBackend

    return SqliteQueueBackend(Path(config.data_dir) / "queue" / "queues.db")


def _sqs(config: Config) -> QueueBackend:
    from thresher.queue.sqs import SqsQueueBackend

    return SqsQueueBackend(config.queue)


_BACKENDS = {"sqlite": _sqlite, "sqs": _sqs}


def open_queue_backend(config: Config) -> QueueBackend:
    try:
        factory = _BACKENDS[config.queue.backend]
    except KeyError:
        raise InvalidRequest(
            f"unknown queue backend {config.queue.backend!r} (known: {', '.join(_BACKENDS)})"
        ) from None
    return factory(config)
