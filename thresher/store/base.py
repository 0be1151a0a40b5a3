"""The object-store seam: list the files under a prefix and read byte ranges of one, whatever stores them.

Paths are the user's own spelling, kept as given: `s3://bucket/key`, `file:///dir/file` or `/dir/file`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass

from thresher.errors import InvalidRequest

S3_SCHEME = "s3://"


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
    """(bucket, key) of `s3://bucket[/key]`; InvalidRequest when there is no bucket."""
    if not path.startswith(S3_SCHEME):
        raise InvalidRequest(f"{path}: an S3 path must start with s3://")
    bucket, _, key = path[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise InvalidRequest(f"{path}: an S3 path must be s3://bucket[/key], with a bucket")
    return bucket, key
