"""boto3 calls for the SQS backend: off the event loop, counted, retried with backoff, errors translated.

Callers never see botocore's exceptions: a missing queue is QueueNotFound, SQS staying unreachable or throttled
past the retries is Unavailable, as is a call without credentials (the operator's misconfiguration: 503, saying what
to set), and any other refusal is SqsError with the provider's code.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore import xform_name
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential

from thresher.core.config import QueueSettings
from thresher.core.errors import InvalidRequest, QueueNotFound, ThresherError, Unavailable

MAX_THREADS = 16  # concurrent calls per backend; also the size of boto3's connection pool
CALL_ATTEMPTS = 8  # tries of one call on throttling and transient errors ...
CALL_DEADLINE_S = 30.0  # ... within this long, then Unavailable
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 40.0  # above the longest long poll (20 s)

QUEUE_GONE_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
# Throttling and server-side failures: trying again later may work.
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "KMS.ThrottlingException",
        "AWS.SimpleQueueService.InternalError",
    }
)


class SqsError(ThresherError):
    """SQS refused a call for a reason other than a missing queue or a transient failure."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def is_transient(error: BaseException) -> bool:
    if isinstance(error, ClientError):
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        return error_code(error) in TRANSIENT_CODES or status >= 500
    return isinstance(error, ConnectionError | HTTPClientError)


class SqsClient:
    """One boto3 client and its threads; counts every call (retries included) by operation and by queue."""

    def __init__(self, settings: QueueSettings) -> None:
        if bool(settings.sqs_access_key_id) != bool(settings.sqs_secret_access_key):  # boto3 would fail each call
            raise InvalidRequest(
                "queue.sqs_access_key_id and queue.sqs_secret_access_key go together: set both, or neither to use"
                " the usual AWS_* variables"
            )
        session = boto3.session.Session(
            aws_access_key_id=settings.sqs_access_key_id or None,
            aws_secret_access_key=settings.sqs_secret_access_key or None,
            region_name=settings.sqs_region or None,
        )
        try:
            self._client = session.client(
                "sqs",
                endpoint_url=settings.sqs_endpoint_url or None,
                config=BotoConfig(
                    retries={"total_max_attempts": 1},  # retries are ours (tenacity), so each one is counted
                    max_pool_connections=MAX_THREADS,
                    connect_timeout=CONNECT_TIMEOUT_S,
                    read_timeout=READ_TIMEOUT_S,
                ),
            )
        except NoRegionError as e:
            raise ThresherError("SQS needs a region: set queue.sqs_region or AWS_DEFAULT_REGION") from e
        self._executor = ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix="sqs")
        self.calls: Counter[str] = Counter()  # operation -> calls made
        self.calls_by_queue: defaultdict[str, Counter[str]] = defaultdict(Counter)

    @property
    def region(self) -> str:
        return str(self._client.meta.region_name)

    async def call(self, operation: str, queue: str, **params: Any) -> dict[str, Any]:
        """Run `operation` (e.g. "SendMessageBatch") for Thresher queue `queue`, retrying transient failures."""
        method = functools.partial(getattr(self._client, xform_name(operation)), **params)
        loop = asyncio.get_running_loop()
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(is_transient),
                wait=wait_exponential(multiplier=0.1, max=5.0),
                stop=stop_after_attempt(CALL_ATTEMPTS) | stop_after_delay(CALL_DEADLINE_S),
                reraise=True,
            ):
                with attempt:
                    self.calls[operation] += 1
                    self.calls_by_queue[queue][operation] += 1
                    reply: dict[str, Any] = await loop.run_in_executor(self._executor, method)
                    return reply
        except ClientError as e:
            code = error_code(e)
            if code in QUEUE_GONE_CODES:
                raise QueueNotFound(f"queue {queue} does not exist") from e
            message = f"SQS {operation} on queue {queue} failed: {code}: {e.response.get('Error', {}).get('Message')}"
            if is_transient(e):
                raise Unavailable(message) from e
            raise SqsError(code, message) from e
        except (NoCredentialsError, PartialCredentialsError) as e:  # the operator's to fix, not the caller's
            raise Unavailable(
                "no AWS credentials for SQS: set queue.sqs_access_key_id and queue.sqs_secret_access_key, "
                "or the usual AWS_* variables"
            ) from e
        except BotoCoreError as e:
            raise Unavailable(f"SQS {operation} on queue {queue} failed: {e}") from e
        raise AssertionError("unreachable: tenacity either returns or raises")

    def close(self) -> None:
        # Do not wait: a long poll may be in flight for up to 20 s, and nobody needs its answer any more.
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._client.close()
