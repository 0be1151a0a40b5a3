"""Staged item lists: a large item list written once as a file, which the enqueuer reads as a stream, rather than
passed whole in gRPC messages from the gateway to the scheduler to the enqueuer.

The file is JSON Lines: each item as the client wrote it (compacted, as rawitems.py keeps it), one a line. It lives
under <data_dir>/staged (an embedded stack, whose services share the data dir) or under inputs.staging_s3_prefix,
named at random; the gateway writes it (ItemSpool) and deletes it when the submission is refused, the scheduler's
clean-up deletes it once the job has ended.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import tempfile
import uuid
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING

from thresher.core.config import Config
from thresher.core.itemlists import ItemSizes
from thresher.core.store import ObjectInfo, ObjectStore, ObjectStores
from thresher.core.store.base import S3_SCHEME
from thresher.v1 import jobs_pb2

if TYPE_CHECKING:
    from thresher.core.store.s3 import S3Store

STAGED_DIR = "staged"
PART_SUFFIX = ".part"  # a staged file still being written
_NAME = re.compile(r"[0-9a-f]{32}\.jsonl")


class Staging:
    """Where this stack stages item lists, and the stores that write, read and delete them."""

    def __init__(self, config: Config) -> None:
        prefix = config.inputs.staging_s3_prefix.rstrip("/")
        self.location = prefix or os.path.join(os.path.abspath(config.data_dir), STAGED_DIR)
        # Whether every service can read what is staged: S3, or a data dir they share.
        self.available = bool(prefix) or config.inputs.stage_in_data_dir
        self._stores = ObjectStores(dataclasses.replace(config.inputs, local_roots=self.location))

    @property
    def in_s3(self) -> bool:
        return self.location.startswith(S3_SCHEME)

    def holds(self, path: str) -> bool:
        """Whether `path` names a file staged here (only those are read or deleted: a path comes in a submission)."""
        folder, _, name = path.rpartition("/")
        return self.available and folder == self.location and _NAME.fullmatch(name) is not None

    def reader(self, staged: jobs_pb2.StagedItems) -> tuple[ObjectStore, ObjectInfo]:
        return self._stores.for_path(staged.path), ObjectInfo(staged.path, staged.bytes)

    def spool(self, sizes: ItemSizes, hold_bytes: int) -> ItemSpool:
        return ItemSpool(self, sizes, hold_bytes)

    async def delete(self, staged: jobs_pb2.StagedItems) -> None:
        """Delete a staged file (gone already: nothing to do)."""
        if not self.holds(staged.path):
            return
        if self.in_s3:
            await self.s3_store().delete([staged.path])
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged.path)

    def remove_partial_files(self) -> None:
        """Delete the local files of uploads cut short by a crash (call it where no upload runs: at the start of the
        gateway, the one writer of the data dir's staging place)."""
        if not self.in_s3 and os.path.isdir(self.location):
            for name in os.listdir(self.location):
                if name.endswith(PART_SUFFIX):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(self.location, name))

    async def close(self) -> None:
        await self._stores.close()

    def new_path(self) -> str:
        return f"{self.location}/{uuid.uuid4().hex}.jsonl"

    def s3_store(self) -> S3Store:
        from thresher.core.store.s3 import S3Store  # boto3 only where S3 is used

        store = self._stores.for_path(self.location)
        assert isinstance(store, S3Store)
        return store


class ItemSpool:
    """An item list as it arrives: held while its items take at most `hold_bytes` (or always, where nothing can be
    staged), then written to a local file, a line each; `finish` fills in the ItemList (its items, or the staged
    file, moved to its place). Every item's size goes through `sizes`. Not thread-safe: one writer at a time."""

    def __init__(self, staging: Staging, sizes: ItemSizes, hold_bytes: int) -> None:
        self._staging = staging
        self._sizes = sizes
        self._hold_bytes = hold_bytes
        self._held: list[bytes] = []
        self._bytes = 0
        self._file: IO[bytes] | None = None
        self._file_path = ""

    @property
    def count(self) -> int:
        return self._sizes.count

    def add(self, items: Iterable[bytes]) -> None:
        """More items, each one compact JSON value (no newline in it). Blocking: call it off the event loop."""
        for item in items:
            self._sizes.add(len(item))
            self._bytes += len(item) + 1
            self._held.append(item)
        if self._bytes > self._hold_bytes and self._staging.available:
            file = self._file or self._open()
            file.write(b"\n".join(self._held) + b"\n")
            self._held.clear()

    async def finish(self, target: jobs_pb2.ItemList) -> None:
        """The items into `target`: inline, or as a staged file once moved to its place. Raises (after discarding
        the file) when a batch is over the queue's message limit."""
        try:
            self._sizes.end()
            if self._file is None:
                target.items.extend(self._held)
                return
            self._file.close()
            staged = jobs_pb2.StagedItems(path=self._staging.new_path(), count=self.count, bytes=self._bytes)
            if self._staging.in_s3:
                await self._staging.s3_store().upload(staged.path, self._file_path)
            else:
                os.replace(self._file_path, staged.path)
            target.staged.CopyFrom(staged)
        finally:
            self.discard()

    def discard(self) -> None:
        """Drop what is held and the local file (if not moved to its place already)."""
        self._held = []
        if self._file is not None:
            self._file.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._file_path)
            self._file = None

    def _open(self) -> IO[bytes]:
        folder = None if self._staging.in_s3 else self._staging.location
        if folder is not None:
            os.makedirs(folder, mode=0o700, exist_ok=True)
        fd, self._file_path = tempfile.mkstemp(suffix=PART_SUFFIX, dir=folder)
        self._file = os.fdopen(fd, "wb")
        return self._file
