"""The SQS names of a Thresher queue and its dead letter queue, and what a queue ARN looks like."""

from __future__ import annotations

import hashlib
import re

MAX_QUEUE_NAME = 80  # characters, ".fifo" included: letters, digits, "-" and "_"
DLQ_SUFFIX = "-dlq"
FIFO = ".fifo"
QUEUE_ARN = re.compile(
    r"arn:aws[a-z-]*:sqs:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12}):(?P<name>[A-Za-z0-9_.-]{1,80})"
)
_QUEUE_NAME_OK = re.compile(r"[A-Za-z0-9_-]+")


def sqs_names(name: str) -> tuple[str, str]:
    """The SQS names of a Thresher queue and of its dead letter queue (deterministic, within 80 characters)."""
    longest = MAX_QUEUE_NAME - len(DLQ_SUFFIX + FIFO)
    base = name
    if not _QUEUE_NAME_OK.fullmatch(name) or len(name) > longest:
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        base = re.sub(r"[^A-Za-z0-9_-]", "_", name)[: longest - len(digest) - 1] + "-" + digest
    return base + FIFO, base + DLQ_SUFFIX + FIFO
