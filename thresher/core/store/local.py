"""LocalStore: files on this machine, as plain absolute paths or file:// URLs (taken literally, no %-decoding).

A prefix is a string prefix, as on S3: `/data/in` lists `/data/in/a.json` and `/data/input.json`. Directories are
walked in name order, one level after another, without following symlinked directories. Only files inside `roots`
can be listed or read: none without roots (the default: a submit key must not read the host's files), any with "/".
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from itertools import islice

from thresher.core.errors import InvalidRequest
from thresher.core.store.base import ObjectInfo, ObjectStore

FILE_SCHEME = "file://"
LIST_PAGE = 1000  # entries read per hop to a thread while listing


def local_path(path: str) -> str:
    """The filesystem path of `path` (a plain absolute path or a file:// URL); InvalidRequest if it is neither."""
    if "\0" in path:
        raise InvalidRequest(f"{path!r}: a path cannot hold a NUL character")
    if path.startswith(FILE_SCHEME):
        host, slash, rest = path[len(FILE_SCHEME) :].partition("/")
        if host not in ("", "localhost") or not slash:
            raise InvalidRequest(f"{path}: a file:// path must be file:///absolute/path")
        return "/" + rest
    if not os.path.isabs(path):
        raise InvalidRequest(f"{path}: a local path must be absolute (or file:///absolute/path)")
    return path


class LocalStore(ObjectStore):
    def __init__(self, roots: list[str] | None = None) -> None:
        self._roots = [os.path.realpath(root) for root in roots or []]

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        fs_prefix = local_path(prefix)
        self._check_allowed(prefix, fs_prefix.rstrip("/") or "/", directory=True)
        style = FILE_SCHEME if prefix.startswith(FILE_SCHEME) else ""
        files = self._walk_prefix(prefix, fs_prefix)
        while page := await asyncio.to_thread(lambda: list(islice(files, LIST_PAGE))):
            for path, size in page:
                yield ObjectInfo(style + path, size)

    async def read_range(self, path: str, start: int, length: int) -> bytes:
        fs_path = local_path(path)
        self._check_allowed(path, fs_path)

        def read() -> bytes:
            with open(fs_path, "rb") as f:
                f.seek(start)
                return f.read(length)

        try:
            return await asyncio.to_thread(read)
        except OSError as e:
            raise InvalidRequest(f"{path}: cannot read: {e.strerror or e}") from e

    async def close(self) -> None:
        pass

    def _walk_prefix(self, prefix: str, fs_prefix: str) -> Iterator[tuple[str, int]]:
        if fs_prefix.endswith("/"):
            base, stem = fs_prefix, ""
        else:
            base, stem = os.path.dirname(fs_prefix), os.path.basename(fs_prefix)
        if not os.path.isdir(base):
            return
        for entry in self._entries(prefix, base):
            if entry.name.startswith(stem):
                yield from self._walk_entry(prefix, entry)

    def _walk_entry(self, prefix: str, entry: os.DirEntry[str]) -> Iterator[tuple[str, int]]:
        if entry.is_dir(follow_symlinks=False):
            if not self._allowed(entry.path, directory=True):
                return  # neither inside a root nor above one: not even its names are read
            for child in self._entries(prefix, entry.path):
                yield from self._walk_entry(prefix, child)
        elif entry.is_file() and self._allowed(entry.path):
            yield entry.path, entry.stat().st_size

    def _entries(self, prefix: str, directory: str) -> Sequence[os.DirEntry[str]]:
        try:
            with os.scandir(directory) as entries:
                return sorted(entries, key=lambda e: e.name)
        except OSError as e:
            raise InvalidRequest(f"{prefix}: cannot list {directory}: {e.strerror or e}") from e

    def _allowed(self, fs_path: str, directory: bool = False) -> bool:
        real = os.path.realpath(fs_path)
        # A prefix may name a directory above a root (listing "/data" with the root "/data/in" is fine: only
        # what lies inside the root is listed); a file must lie inside one.
        return any(_inside(real, root) or (directory and _inside(root, real)) for root in self._roots)

    def _check_allowed(self, path: str, fs_path: str, directory: bool = False) -> None:
        if not self._roots:
            raise InvalidRequest(
                f"{path}: local paths are not read here: inputs.local_roots names no directory"
                " (set it, or start thresher up with --local-roots DIR)"
            )
        if not self._allowed(fs_path, directory):
            raise InvalidRequest(f"{path}: outside the directories that inputs may read ({':'.join(self._roots)})")


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")
