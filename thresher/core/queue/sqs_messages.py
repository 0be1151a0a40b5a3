"""SQS messages of the queue backend: a batch as a message and back, and the limits a message must keep.

A batch's MessageGroupId and MessageDeduplicationId come from its id: each batch is its own group, and sending
a batch again within SQS's deduplication window is a no-op. Its id and kind travel as message attributes.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from thresher.core.errors import InvalidRequest, TooLarge
from thresher.core.queue.base import KIND_BATCH, Batch, DeadLetter, Delivery

# Provider limits (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html).
MAX_BATCH_ENTRIES = 10  # entries of one SendMessageBatch / DeleteMessageBatch / ChangeMessageVisibilityBatch
# One message, and all messages of one SendMessageBatch, bodies and attributes included. AWS raised its own limit
# to 1 MiB in 2025; 256 KiB keeps Cortex's item limit and works on every SQS-compatible server.
MAX_MESSAGE_BYTES = 256 * 1024
MAX_MESSAGE_ID = 128  # MessageGroupId / MessageDeduplicationId: printable ASCII without spaces

REDRIVE_MAX_RECEIVES = 1000  # safety net only: the monitor dead-letters after max_receive_count attempts
ATTRIBUTES = ["kind", "batch_id", "error", "receive_count", "queue"]  # message attributes Thresher sets
_MESSAGE_ID_OK = re.compile(rf"[\x21-\x7e]{{1,{MAX_MESSAGE_ID}}}")
# What SQS refuses in a message's text: all but #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD | #x10000-#x10FFFF.
_REFUSED_CHARACTER = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def attribute_text(text: str) -> str:
    """`text` with each character SQS refuses written as a Python escape (ESC as \\x1b, NUL as \\x00)."""
    return _REFUSED_CHARACTER.sub(lambda m: ascii(m[0])[1:-1], text)


def message_id(batch_id: str) -> str:
    """The batch's MessageGroupId and MessageDeduplicationId: the id itself when SQS allows it, else its hash."""
    if _MESSAGE_ID_OK.fullmatch(batch_id):
        return batch_id
    return hashlib.sha256(batch_id.encode()).hexdigest()


def entry(batch: Batch, extra: dict[str, str] | None = None) -> dict[str, Any]:
    """The SendMessage(Batch) fields of a batch; TooLarge when it cannot be one SQS message."""
    try:
        body = batch.body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidRequest(f"batch {batch.batch_id} is not UTF-8 text, which an SQS message must be") from e
    values = {"kind": batch.kind, "batch_id": batch.batch_id, **(extra or {})}
    group = message_id(batch.batch_id)
    fields = {
        "MessageBody": body,
        "MessageGroupId": group,
        "MessageDeduplicationId": group,
        "MessageAttributes": {k: {"DataType": "String", "StringValue": v} for k, v in values.items()},
    }
    if extra is None and size(fields) > MAX_MESSAGE_BYTES:
        raise TooLarge(
            f"batch {batch.batch_id} is {size(fields)} bytes, over SQS's message limit of {MAX_MESSAGE_BYTES} bytes;"
            " use a smaller batch_size or smaller items"
        )
    return fields


def size(fields: dict[str, Any]) -> int:
    """What SQS counts toward the message size: the body plus each attribute's name, type and value."""
    attributes = fields["MessageAttributes"].items()
    return len(fields["MessageBody"].encode()) + sum(
        len(k) + len(v["DataType"]) + len(v["StringValue"].encode()) for k, v in attributes
    )


def groups(entries: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Consecutive entries in groups of at most MAX_BATCH_ENTRIES and MAX_MESSAGE_BYTES in all."""
    grouped: list[list[dict[str, Any]]] = []
    group_bytes = 0
    for fields in entries:
        fields_bytes = size(fields)
        if not grouped or len(grouped[-1]) == MAX_BATCH_ENTRIES or group_bytes + fields_bytes > MAX_MESSAGE_BYTES:
            grouped.append([])
            group_bytes = 0
        grouped[-1].append(fields)
        group_bytes += fields_bytes
    return grouped


def _attribute(message: dict[str, Any], name: str) -> str | None:
    value = message.get("MessageAttributes", {}).get(name)
    return None if value is None else str(value["StringValue"])


def delivery_of(message: dict[str, Any], held_until: float = 0.0) -> Delivery:
    batch = Batch(
        _attribute(message, "batch_id") or message["MessageId"],
        message["Body"].encode(),
        _attribute(message, "kind") or KIND_BATCH,
    )
    receive_count = int(message["Attributes"]["ApproximateReceiveCount"])
    return Delivery(batch, message["ReceiptHandle"], receive_count, held_until)


def dead_letter_of(message: dict[str, Any]) -> DeadLetter:
    delivery = delivery_of(message)
    error = _attribute(message, "error")
    if error is None:  # moved by the redrive policy, not by dead_letter()
        return DeadLetter(delivery.batch, REDRIVE_MAX_RECEIVES, f"received {REDRIVE_MAX_RECEIVES} times (redrive)")
    return DeadLetter(delivery.batch, int(_attribute(message, "receive_count") or 0), error)


def letter_queue(message: dict[str, Any]) -> str | None:
    """The Thresher queue a dead letter came from; None if the redrive policy moved it there."""
    return _attribute(message, "queue")


def failure_message(operation: str, failure: dict[str, Any], entries: dict[str, dict[str, Any]]) -> str:
    fields = entries.get(str(failure.get("Id")), {})
    batch = (fields.get("MessageAttributes", {}).get("batch_id") or {}).get("StringValue")
    what = f"batch {batch}" if batch else f"entry {failure.get('Id')}"
    return f"SQS {operation} refused {what}: {failure.get('Code')}: {failure.get('Message')}"
