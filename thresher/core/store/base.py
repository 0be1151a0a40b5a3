"""The object-store seam: list the files under a prefix and read byte ranges of one, whatever stores them.

Paths are the user's own spelling, kept as given: `s3://bucket/key`, `file:///dir/file` or `/dir/file`.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass

from thresher.core.errors import InvalidS3Path

S3_SCHEME = "s3://"
# The bucket names that botocore sends at all (older buckets may have upper case and "_"); others are refused here,
# as a bad request, rather than by botocore as a failed call.
_BUCKET = re.compile(r"[A-Za-z0-9._-]{1,255}")


@dataclass(frozen=True)
class ObjectInfo:
    path: str  # the full path, in the same style as the prefix it was listed under
    size: int  # bytes


class ObjectStore(ABC):
    """Files (objects) addressed by path. Errors: InvalidRequest for a bad or unreadable path, Unavailable when
    the store cannot be reached."""

    @abstractmethod
    def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Every file whose path starts with `prefix` (a string prefix, as S3's), in a stable order."""

    @abstractmethod
    async def read_range(self, path: str, start: int, length: int) -> bytes:
        """Up to `length` bytes from offset `start` (fewer only at the end of the file)."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""


def split_s3_path(path: str) -> tuple[str, str]:
    """(bucket, key) of `s3://bucket[/key]`; InvalidS3Path when there is no proper bucket."""
    if not path.startswith(S3_SCHEME):
        raise InvalidS3Path(f"{path}: an S3 path must start with s3://")
    bucket, _, key = path[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise InvalidS3Path(f"{path}: an S3 path must be s3://bucket[/key], with a bucket")
    if not _BUCKET.fullmatch(bucket):
        raise InvalidS3Path(f"{path}: {bucket!r} is not an S3 bucket name (letters, digits, '.', '-' and '_')")
    return bucket, key
