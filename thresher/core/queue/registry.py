"""The queue backends, by the name `queue.backend` gives: what each one is, for those who choose or serve one.

A new backend is one module (a `QueueBackend`, and a factory from the settings) and one entry here. Its module is
imported only when it is opened (`open_queue_backend`): a dequeuer on SQLite never imports boto3.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from thresher.core.config import Config
from thresher.core.errors import InvalidRequest
from thresher.core.queue.base import QueueBackend
from thresher.core.queue.sqs_messages import MAX_MESSAGE_BYTES as SQS_MAX_MESSAGE_BYTES


@dataclass(frozen=True)
class QueueBackendEntry:
    module: str  # imported only when the backend is chosen
    factory: str  # a function of `module`: (Config) -> QueueBackend
    max_message_bytes: int | None  # the largest message (a batch and its attributes); None: no limit
    reachable_from_other_hosts: bool  # False: its dequeuers must run on the scheduler's host (not on Kubernetes)
    dequeuer_env_prefixes: tuple[str, ...] = ()  # the environment variables its dequeuers inherit (credentials)


QUEUE_BACKENDS = {
    "sqlite": QueueBackendEntry("thresher.core.queue.sqlite", "open_sqlite_backend", None, False),
    "sqs": QueueBackendEntry("thresher.core.queue.sqs", "open_sqs_backend", SQS_MAX_MESSAGE_BYTES, True, ("AWS_",)),
}


def queue_backend_entry(name: str) -> QueueBackendEntry:
    try:
        return QUEUE_BACKENDS[name]
    except KeyError:
        raise InvalidRequest(f"unknown queue backend {name!r} (known: {', '.join(QUEUE_BACKENDS)})") from None


def backend_factory(entry: QueueBackendEntry) -> Callable[[Config], QueueBackend]:
    """The entry's factory; imports its module (and what the module needs, e.g. boto3)."""
    factory: Callable[[Config], QueueBackend] = getattr(importlib.import_module(entry.module), entry.factory)
    return factory


def open_queue_backend(config: Config) -> QueueBackend:
    return backend_factory(queue_backend_entry(config.queue.backend))(config)
