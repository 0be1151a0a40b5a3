"""S3Store: objects in S3 (or any S3-compatible server) as `s3://bucket/key`, through boto3 off the event loop.

A prefix lists every key that starts with it (ListObjectsV2, in S3's key order); keys ending in "/" are folder
markers and left out, as Cortex does. A bucket in another region than the client's is reached all the same:
botocore follows S3's redirect to the bucket's region and remembers it (on AWS; a custom endpoint has one region).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import boto3
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

from thresher.core.config import InputSettings
from thresher.core.errors import InvalidRequest, Unavailable
from thresher.core.store.base import S3_SCHEME, ObjectInfo, ObjectStore, split_s3_path

T = TypeVar("T")

MAX_THREADS = 8
LIST_PAGE = 1000  # keys per ListObjectsV2 call (S3's maximum)
CALL_ATTEMPTS = 5  # boto3's "standard" retries: throttling and transient errors, with backoff
_MISSING = frozenset({"NoSuchBucket", "NoSuchKey", "404", "NotFound"})
_DENIED = frozenset({"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "InvalidAccessKeyId"})


class S3Store(ObjectStore):
    def __init__(self, settings: InputSettings, list_page: int = LIST_PAGE) -> None:
        self._list_page = list_page
        session = boto3.session.Session(
            aws_access_key_id=settings.s3_access_key_id or None,
            aws_secret_access_key=settings.s3_secret_access_key or None,
            region_name=settings.s3_region or None,
        )
        endpoint = settings.s3_endpoint_url or None
        self._client = session.client(
            "s3",
            endpoint_url=endpoint,
            config=BotoConfig(
                retries={"mode": "standard", "total_max_attempts": CALL_ATTEMPTS},
                max_pool_connections=MAX_THREADS,
                # Buckets on a custom endpoint are rarely DNS names (127.0.0.1:port): address them in the path.
                s3={"addressing_style": "path"} if endpoint else None,
            ),
        )
        self._executor = ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix="s3")

    async def list(self, prefix: str, start_after: str = "") -> AsyncIterator[ObjectInfo]:
        """`start_after`: only the keys after this one (a path under `prefix`), as S3 lists them."""
        bucket, key_prefix = split_s3_path(prefix)
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Bucket": bucket, "Prefix": key_prefix, "MaxKeys": self._list_page}
            if start_after:
                params["StartAfter"] = split_s3_path(start_after)[1]
            if token:
                params["ContinuationToken"] = token
            reply = await self._call(prefix, self._client.list_objects_v2, **params)
            for item in reply.get("Contents", []):
                if not item["Key"].endswith("/"):
                    yield ObjectInfo(f"{S3_SCHEME}{bucket}/{item['Key']}", int(item["Size"]))
            token = reply.get("NextContinuationToken")
            if not reply.get("IsTruncated") or not token:
                return

    async def read_range(self, path: str, start: int, length: int) -> bytes:
        bucket, key = split_s3_path(path)
        if length <= 0:
            return b""

        def get() -> bytes:
            reply = self._client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{start + length - 1}")
            return bytes(reply["Body"].read())

        try:
            return await self._call(path, get)
        except InvalidRequest as e:
            if "InvalidRange" in str(e):  # at or past the end: nothing more to read
                return b""
            raise

    async def read(self, path: str) -> bytes:
        bucket, key = split_s3_path(path)
        return await self._call(path, lambda: bytes(self._client.get_object(Bucket=bucket, Key=key)["Body"].read()))

    async def write(self, path: str, data: bytes) -> None:
        """One PutObject: S3 makes it visible whole, replacing any object of that key."""
        bucket, key = split_s3_path(path)
        await self._call(path, self._client.put_object, Bucket=bucket, Key=key, Body=data)

    async def upload(self, path: str, filename: str) -> None:
        """A local file as one object, sent in parts when large (boto3's managed transfer), never read whole."""
        bucket, key = split_s3_path(path)
        try:
            await self._call(path, self._client.upload_file, Filename=filename, Bucket=bucket, Key=key)
        except S3UploadFailedError as e:  # what upload_file makes of a ClientError
            raise Unavailable(f"{path}: upload to S3 failed: {e}") from e

    async def delete(self, paths: Sequence[str]) -> None:
        """Delete objects of one bucket, 1000 per DeleteObjects call (S3's maximum)."""
        for start in range(0, len(paths), LIST_PAGE):
            chunk = paths[start : start + LIST_PAGE]
            bucket = split_s3_path(chunk[0])[0]
            keys = [{"Key": split_s3_path(path)[1]} for path in chunk]
            await self._call(
                chunk[0], self._client.delete_objects, Bucket=bucket, Delete={"Objects": keys, "Quiet": True}
            )

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._client.close()

    async def _call(self, path: str, fn: Callable[..., T], **params: Any) -> T:
        """`fn(**params)` on a thread, its errors translated: bad or denied paths are InvalidRequest."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, functools.partial(fn, **params))
        except ClientError as e:
            error = e.response.get("Error", {})
            code, message = str(error.get("Code", "")), error.get("Message") or ""
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code in _MISSING:
                raise InvalidRequest(f"{path}: not found in S3 ({code})") from e
            if code in _DENIED:
                raise InvalidRequest(f"{path}: access denied by S3 ({code}: {message})") from e
            if status >= 500 or code in ("SlowDown", "Throttling", "RequestTimeout"):
                raise Unavailable(f"{path}: S3 is unavailable ({code}: {message})") from e
            raise InvalidRequest(f"{path}: S3 refused the request ({code}: {message})") from e
        except (NoCredentialsError, PartialCredentialsError) as e:
            raise Unavailable(
                "no AWS credentials for S3: set inputs.s3_access_key_id and inputs.s3_secret_access_key, "
                "or the usual AWS_* variables"
            ) from e
        except BotoCoreError as e:
            raise Unavailable(f"{path}: S3 cannot be reached: {e}") from e
