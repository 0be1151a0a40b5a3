"""SqsQueue: one SQS FIFO queue per job, plus its own FIFO dead letter queue (boto3, off the event loop).

- A submission may name a dead letter queue instead (`sqs_dead_letter_queue.arn`), which jobs may share: dead
  letters carry their job queue's name, so each job lists only its own, and a named queue is never deleted.
  Another process finds a queue's dead letter queue from its redrive policy (one call, then cached).

- Every batch is its own message group (no head-of-line blocking: any worker can take any batch) and its
  deduplication id is derived from the batch id, so a batch sent again within SQS's 5-minute deduplication
  window is dropped by SQS. After that window a resent batch is delivered again: resuming an enqueue is safe
  for 5 minutes after the first send (the ledger still counts such a batch once).
- Policy stays above the seam: the monitor decides when a batch is dead-lettered, and the dequeuer then calls
  dead_letter(), which sends it to the dead letter queue with its error, then deletes it. The redrive policy is
  only a safety net (REDRIVE_MAX_RECEIVES), because crashed workers must not consume a batch's attempts.
- depth() comes from queue attributes, which SQS documents as approximate. It leaves out the control
  messages (job_complete) sent through this backend; one sent by another process counts as a batch. The
  scheduler sends job_complete, and reads depth, through one backend, only once every batch is terminal.
- A stale receipt (a delivery received again by someone else since) may still work on SQS (moto's server
  accepts it), unlike SQLite and ElasticMQ (ReceiptHandleIsInvalid, taken as stale, as on SQLite): there extend()
  keeps the batch hidden, and release() makes it visible.
- Cost: extend, ack and release take groups, sent as batch calls of up to 10 entries, and the dequeuer settles
  its batches in groups: a receive and a delete per 10 batches, plus a visibility change per 10 batches held
  longer than a third of the visibility timeout, idle long polls and depth reads. `backend.calls` counts every
  call by operation, retries included; `queue.calls` a job queue's (its dead letter queue's included).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Sequence
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from thresher.core.config import Config, QueueSettings
from thresher.core.errors import InvalidRequest, QueueNotFound, Unavailable
from thresher.core.queue.base import KIND_JOB_COMPLETE, Batch, DeadLetter, Delivery, Depth, Queue, QueueBackend
from thresher.core.queue.sqs_client import CALL_ATTEMPTS, SqsClient, SqsError
from thresher.core.queue.sqs_messages import (
    ATTRIBUTES,
    MAX_BATCH_ENTRIES,
    MAX_MESSAGE_BYTES,
    REDRIVE_MAX_RECEIVES,
    attribute_text,
    dead_letter_of,
    delivery_of,
    entry,
    failure_message,
    groups,
    letter_queue,
    size,
)
from thresher.core.queue.sqs_names import FIFO, QUEUE_ARN, sqs_names

log = logging.getLogger(__name__)

# Provider limits (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-queues.html);
# those of messages are in sqs_messages.py, those of names in sqs_names.py.
MAX_RECEIVE = 10  # messages per ReceiveMessage
MAX_WAIT_S = 20  # longest long poll of one ReceiveMessage
MAX_VISIBILITY_S = 12 * 3600  # VisibilityTimeout is whole seconds, at most 12 hours
RETENTION_S = 14 * 24 * 3600  # the longest SQS keeps a message: jobs and dead letters outlive the 4-day default

MAX_ERROR_BYTES = 4096  # of a dead letter's error: message attributes count toward the message size
LIST_HIDE_S = 30  # dead_letters() hides what it has read this long, then makes it visible again at once

# Error codes as botocore reports them: SQS's older ("query") codes where it sends them, else the JSON ones.
_STALE_RECEIPT = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "MessageNotInflight",
        "AWS.SimpleQueueService.MessageNotInflight",
        "InvalidParameterValue",
    }
)
_ALREADY_EXISTS = frozenset({"QueueAlreadyExists", "QueueNameExists"})


class _EntriesFailed(Unavailable):
    """Some entries of a batch call failed for a reason that may pass; they are sent again."""


def open_sqs_backend(config: Config) -> SqsQueueBackend:
    return SqsQueueBackend(config.queue)


class SqsQueueBackend(QueueBackend):
    def __init__(self, settings: QueueSettings) -> None:
        self.client = SqsClient(settings)
        self.calls: Counter[str] = self.client.calls  # SQS calls by operation, retries included
        self._urls: dict[str, str] = {}  # SQS queue name -> URL
        self._control_sent: defaultdict[str, set[str]] = defaultdict(set)  # queue -> control messages sent
        self._dead_letter_urls: dict[str, str] = {}  # Thresher queue -> URL of its dead letter queue

    async def create(self, name: str, visibility_s: float, dead_letter_arn: str = "") -> str:
        main, dlq = sqs_names(name)
        if dead_letter_arn:
            self._dead_letter_urls[name] = await self._named_dead_letter_url(dead_letter_arn, name)
        else:
            self._dead_letter_urls[name] = await self._create(name, dlq, {"MessageRetentionPeriod": str(RETENTION_S)})
            reply = await self.client.call(
                "GetQueueAttributes", name, QueueUrl=self._dead_letter_urls[name], AttributeNames=["QueueArn"]
            )
            dead_letter_arn = reply["Attributes"]["QueueArn"]
        redrive = {"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": str(REDRIVE_MAX_RECEIVES)}
        attributes = {
            "VisibilityTimeout": str(_whole_seconds(visibility_s)),
            "MessageRetentionPeriod": str(RETENTION_S),
            "RedrivePolicy": json.dumps(redrive),
        }
        return await self._create(name, main, attributes)

    async def check_dead_letter_target(self, target: str) -> None:
        await self._named_dead_letter_url(target, target.rpartition(":")[2])  # no job yet: counted under its own name

    async def _named_dead_letter_url(self, arn: str, name: str) -> str:
        """The URL of a user's dead letter queue: FIFO, in this backend's region, and existing (InvalidRequest).
        Its calls count as Thresher queue `name`'s."""
        match = QUEUE_ARN.fullmatch(arn)
        if match is None:
            raise InvalidRequest(
                f"sqs_dead_letter_queue: arn: {arn!r} is not an SQS queue ARN (arn:aws:sqs:<region>:<account>:<name>)"
            )
        region, account, sqs_name = match.group("region", "account", "name")
        if not sqs_name.endswith(FIFO):
            raise InvalidRequest(f"sqs_dead_letter_queue: {arn}: must be a FIFO queue (.fifo), as job queues are")
        if region != self.client.region:
            region_is = f"the job queues' region, {self.client.region}"
            raise InvalidRequest(f"sqs_dead_letter_queue: {arn}: must be in {region_is}")
        try:
            return await self._url_of_arn(arn, name)
        except QueueNotFound as e:
            raise InvalidRequest(f"sqs_dead_letter_queue: {arn}: no such queue (create it first)") from e

    async def _url_of_arn(self, arn: str, name: str) -> str:
        """The URL of the queue of `arn`, as it is: an ARN the server hands back is not checked again (ElasticMQ
        writes its own region name into the ARNs it returns, whatever region the queue was named with)."""
        account, sqs_name = arn.split(":")[4:6]
        reply = await self.client.call("GetQueueUrl", name, QueueName=sqs_name, QueueOwnerAWSAccountId=account)
        return str(reply["QueueUrl"])

    async def _create(self, name: str, sqs_name: str, attributes: dict[str, str]) -> str:
        try:
            reply = await self.client.call(
                "CreateQueue", name, QueueName=sqs_name, Attributes={"FifoQueue": "true", **attributes}
            )
        except SqsError as e:
            if e.code not in _ALREADY_EXISTS:
                raise
            # It exists with other attributes (settings changed since): use it as it is.
            log.warning("queue %s exists with other attributes than asked for; keeping them", sqs_name)
            reply = await self.client.call("GetQueueUrl", name, QueueName=sqs_name)
        self._urls[sqs_name] = reply["QueueUrl"]
        return str(reply["QueueUrl"])

    async def delete(self, name: str) -> None:
        for sqs_name in sqs_names(name):
            try:
                url = await self.url(name, sqs_name)
                await self.client.call("DeleteQueue", name, QueueUrl=url)
            except QueueNotFound:
                pass
        self._control_sent.pop(name, None)
        self._dead_letter_urls.pop(name, None)
        for sqs_name in sqs_names(name):  # a long-lived scheduler deletes many queues: keep nothing of them
            self._urls.pop(sqs_name, None)
        self.client.calls_by_queue.pop(name, None)

    def open(self, name: str) -> SqsQueue:
        return SqsQueue(self, name)

    async def close(self) -> None:
        self.client.close()

    async def url(self, name: str, sqs_name: str) -> str:
        """The URL of SQS queue `sqs_name` (of Thresher queue `name`): cached, looked up once."""
        if sqs_name not in self._urls:
            main = sqs_names(name)[0]
            if sqs_name != main and self._urls.get(main, "").endswith("/" + main):
                # A queue's URL is its account's URL plus its name, so the dead letter queue's needs no call.
                self._urls[sqs_name] = self._urls[main][: -len(main)] + sqs_name
            else:
                reply = await self.client.call("GetQueueUrl", name, QueueName=sqs_name)
                self._urls[sqs_name] = reply["QueueUrl"]
        return self._urls[sqs_name]

    async def dead_letter_url(self, name: str) -> str:
        """The URL of queue `name`'s dead letter queue, its own or a named one: read from its redrive policy once."""
        if name not in self._dead_letter_urls:
            main = sqs_names(name)[0]
            reply = await self.client.call(
                "GetQueueAttributes", name, QueueUrl=await self.url(name, main), AttributeNames=["RedrivePolicy"]
            )
            arn = json.loads(reply["Attributes"]["RedrivePolicy"])["deadLetterTargetArn"]
            own = sqs_names(name)[1]
            if arn.endswith(":" + own):
                self._dead_letter_urls[name] = await self.url(name, own)
            else:
                self._dead_letter_urls[name] = await self._url_of_arn(arn, name)
        return self._dead_letter_urls[name]


class SqsQueue(Queue):
    def __init__(self, backend: SqsQueueBackend, name: str) -> None:
        self._backend = backend
        self._client = backend.client
        self.name = name
        self._main = sqs_names(name)[0]
        self._visibility_s: int | None = None  # the queue's, read once

    @property
    def calls(self) -> Counter[str]:
        """SQS calls made for this queue by this backend, by operation, retries included."""
        return self._client.calls_by_queue[self.name]

    async def send(self, batches: Sequence[Batch]) -> None:
        entries = [entry(batch) for batch in batches]
        url = await self._url()
        # The calls go together (as many at a time as the client has threads): each batch is its own message group,
        # so the order they land in does not matter, and a job's batches are on the queue sooner.
        await asyncio.gather(*(self._batch_call("SendMessageBatch", url, group) for group in groups(entries)))
        for batch in batches:
            if batch.kind == KIND_JOB_COMPLETE:
                self._backend._control_sent[self.name].add(batch.batch_id)

    async def receive(self, max_batches: int, wait_s: float) -> list[Delivery]:
        url = await self._url()
        visibility_s = await self._queue_visibility_s()
        deadline = time.monotonic() + wait_s
        attempt_id = uuid.uuid4().hex  # a retried receive gets the same messages back, not new ones
        while True:
            asked_at = time.monotonic()
            # Whole seconds, the nearest: 0.9999 s left must not become a short poll (that would make a busy loop).
            wait = min(MAX_WAIT_S, max(0, round(deadline - asked_at)))
            call = self._client.call(
                "ReceiveMessage",
                self.name,
                QueueUrl=url,
                MaxNumberOfMessages=max(1, min(max_batches, MAX_RECEIVE)),
                WaitTimeSeconds=wait,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
                MessageAttributeNames=ATTRIBUTES,
                ReceiveRequestAttemptId=attempt_id,
            )
            deliveries = await self._received(self._deliveries(call, asked_at + visibility_s))
            if deliveries or deadline - time.monotonic() < 1:
                return deliveries
            attempt_id = uuid.uuid4().hex

    async def _deliveries(self, call: Awaitable[dict[str, Any]], held_until: float) -> list[Delivery]:
        return [delivery_of(m, held_until) for m in (await call).get("Messages", [])]

    async def extend(self, deliveries: Sequence[Delivery], visibility_s: float) -> list[Delivery]:
        timeout = _whole_seconds(visibility_s)
        entries = [{"ReceiptHandle": d.receipt, "VisibilityTimeout": timeout} for d in deliveries]
        stale = await self._entries_call("ChangeMessageVisibilityBatch", entries)
        return [deliveries[i] for i in stale]

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self._entries_call("DeleteMessageBatch", [{"ReceiptHandle": d.receipt} for d in deliveries])
        for delivery in deliveries:
            self._backend._control_sent[self.name].discard(delivery.batch.batch_id)

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        await self._release([d.receipt for d in deliveries])

    async def dead_letter(self, delivery: Delivery, error: str) -> None:
        """Send the batch to the dead letter queue with its error, then delete it: never lost in between."""
        error = attribute_text(error)  # SQS refuses some characters in attributes: a coloured traceback's ESC, NUL
        # "queue" tells this job's dead letters from other jobs' in a dead letter queue that jobs share.
        attributes = {"error": error, "receive_count": str(delivery.receive_count), "queue": self.name}
        message = entry(delivery.batch, attributes)
        overflow = size(message) - MAX_MESSAGE_BYTES
        if overflow > 0 or len(error.encode()) > MAX_ERROR_BYTES:
            keep = max(0, min(MAX_ERROR_BYTES, len(error.encode()) - overflow))
            attributes["error"] = error.encode()[:keep].decode(errors="ignore") or "(error too long to keep)"
            message = entry(delivery.batch, attributes)
        await self._client.call("SendMessage", self.name, QueueUrl=await self._dead_letter_url(), **message)
        await self.ack([delivery])

    async def depth(self) -> Depth:
        urls = await self._url(), await self._dead_letter_url()
        main, dead = await asyncio.gather(*map(self._counts, urls))
        visible, in_flight = main
        control = len(self._backend._control_sent.get(self.name, ()))
        hidden_in_visible = min(control, visible)
        visible -= hidden_in_visible
        in_flight = max(0, in_flight - (control - hidden_in_visible))
        return Depth(visible=visible, in_flight=in_flight, dead=sum(dead))

    async def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter, read without removing any: each is hidden while listing, then made visible again.

        Two listings at the same time see part of the dead letters each.
        """
        url = await self._dead_letter_url()
        letters: dict[str, DeadLetter] = {}
        receipts: list[str] = []
        while True:
            reply = await self._client.call(
                "ReceiveMessage",
                self.name,
                QueueUrl=url,
                MaxNumberOfMessages=MAX_RECEIVE,
                WaitTimeSeconds=0,
                VisibilityTimeout=LIST_HIDE_S,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
                MessageAttributeNames=ATTRIBUTES,
            )
            messages = reply.get("Messages", [])
            if not messages:
                break
            for message in messages:
                receipts.append(message["ReceiptHandle"])
                letter = dead_letter_of(message)
                if letter_queue(message) in (self.name, None):  # None: moved by the redrive safety net
                    letters.setdefault(letter.batch.batch_id, letter)
        await self._release(receipts, url)
        return list(letters.values())

    # --- mechanics ---------------------------------------------------------------------------

    async def _url(self) -> str:
        return await self._backend.url(self.name, self._main)

    async def _dead_letter_url(self) -> str:
        return await self._backend.dead_letter_url(self.name)

    async def _queue_visibility_s(self) -> int:
        if self._visibility_s is None:
            reply = await self._client.call(
                "GetQueueAttributes", self.name, QueueUrl=await self._url(), AttributeNames=["VisibilityTimeout"]
            )
            self._visibility_s = int(reply["Attributes"]["VisibilityTimeout"])
        return self._visibility_s

    async def _counts(self, url: str) -> tuple[int, int]:
        reply = await self._client.call(
            "GetQueueAttributes",
            self.name,
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        attributes = reply["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])

    async def _release(self, receipts: list[str], url: str | None = None) -> None:
        entries = [{"ReceiptHandle": receipt, "VisibilityTimeout": 0} for receipt in receipts]
        await self._entries_call("ChangeMessageVisibilityBatch", entries, url)

    async def _entries_call(self, operation: str, entries: list[dict[str, Any]], url: str | None = None) -> set[int]:
        """`operation` on receipt entries, 10 per call, the calls made together; returns the indexes of the entries
        whose receipt is stale (the batch is someone else's now, or gone), which is not an error."""
        if not entries:
            return set()
        url = url or await self._url()
        chunks = [entries[i : i + MAX_BATCH_ENTRIES] for i in range(0, len(entries), MAX_BATCH_ENTRIES)]
        stale = await asyncio.gather(*(self._batch_call(operation, url, c, ignore=_STALE_RECEIPT) for c in chunks))
        return {n * MAX_BATCH_ENTRIES + i for n, indexes in enumerate(stale) for i in indexes}

    async def _batch_call(
        self, operation: str, url: str, entries: list[dict[str, Any]], ignore: frozenset[str] = frozenset()
    ) -> list[int]:
        """One batch call; entries that fail for a passing reason are sent again (with backoff), the rest raise.

        Failures listed in `ignore` are not errors: returns the indexes of those entries.
        """
        pending = {f"e{i}": fields for i, fields in enumerate(entries)}
        ignored: list[int] = []
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(_EntriesFailed),
            wait=wait_exponential(multiplier=0.1, max=5.0),
            stop=stop_after_attempt(CALL_ATTEMPTS),
            reraise=True,
        ):
            with attempt:
                given = [{"Id": key, **fields} for key, fields in pending.items()]
                reply = await self._client.call(operation, self.name, QueueUrl=url, Entries=given)
                ignored += [int(f["Id"][1:]) for f in reply.get("Failed", []) if f.get("Code") in ignore]
                failed = [f for f in reply.get("Failed", []) if f.get("Code") not in ignore]
                for failure in failed:
                    if failure.get("SenderFault"):
                        raise SqsError(str(failure.get("Code")), failure_message(operation, failure, pending))
                pending = {f["Id"]: pending[f["Id"]] for f in failed}
                if pending:
                    first = failure_message(operation, failed[0], pending)
                    raise _EntriesFailed(f"{len(pending)} entries kept failing; the first: {first}")
        return ignored


def _whole_seconds(seconds: float) -> int:
    """SQS takes whole seconds: round up, so that a batch is never hidden for less than asked."""
    return min(MAX_VISIBILITY_S, max(0, math.ceil(seconds)))
