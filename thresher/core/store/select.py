"""Which files a file source (Cortex's file_path_lister / delimited_files) names: paths, then globs.

Each path is a prefix, listed in the order given; a file is kept when its full path matches any include (or there
are none) and no exclude. Overlapping prefixes list a file twice, as in Cortex. Globs are matched in a thread, a
page of files at a time, so that a long listing never holds the event loop (each match is linear in the path).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from thresher.core.errors import InvalidRequest, InvalidS3Path, TooFewElements
from thresher.core.store import ObjectStores
from thresher.core.store.base import S3_SCHEME, ObjectInfo, split_s3_path
from thresher.core.store.globs import Glob, compile_glob
from thresher.core.store.local import FILE_SCHEME, local_path

MAX_GLOBS = 100  # includes, and excludes, of one file source: each file is matched against every one
MATCH_PAGE = 1000  # files matched per hop to a thread


@dataclass(frozen=True)
class FileQuery:
    paths: tuple[str, ...]
    includes: tuple[Glob, ...]
    excludes: tuple[Glob, ...]

    @classmethod
    def parse(cls, paths: Sequence[str], includes: Sequence[str], excludes: Sequence[str], where: str) -> FileQuery:
        """Check every path and glob; InvalidRequest names the field (`where`: s3_paths ...) and the problem."""
        if not paths:
            raise TooFewElements(f"{where}: s3_paths: must contain at least 1 elements")
        for path in paths:
            try:
                check_path(path)
            except InvalidRequest as e:
                raise e.within(f"{where}: s3_paths") from e
        return cls(tuple(paths), _globs(includes, f"{where}: includes"), _globs(excludes, f"{where}: excludes"))

    def keeps(self, path: str) -> bool:
        included = not self.includes or any(g.fullmatch(path) for g in self.includes)
        return included and not any(g.fullmatch(path) for g in self.excludes)

    def kept(self, files: list[ObjectInfo]) -> list[ObjectInfo]:
        return [info for info in files if self.keeps(info.path)]


def check_path(path: str) -> None:
    """InvalidRequest unless `path` is s3://bucket[/key], file:///absolute/path or an absolute local path (Cortex's
    InvalidS3Path when it is none of these, or an S3 path without a proper bucket)."""
    if path.startswith(S3_SCHEME):
        split_s3_path(path)
    elif path.startswith(FILE_SCHEME) or "://" not in path:
        local_path(path)
    else:
        raise InvalidS3Path(f"{path}: expected s3://bucket[/key], file:///path or an absolute local path")


async def matching_files(stores: ObjectStores, query: FileQuery) -> AsyncIterator[ObjectInfo]:
    """Every file the query keeps, prefix after prefix, each prefix in its store's order."""
    for prefix in query.paths:
        listing = aiter(stores.for_path(prefix).list(prefix))
        if not (query.includes or query.excludes):
            async for info in listing:
                yield info
            continue
        while page := [info async for info in _first_of(listing, MATCH_PAGE)]:
            for info in await asyncio.to_thread(query.kept, page):
                yield info


async def _first_of(files: AsyncIterator[ObjectInfo], count: int) -> AsyncIterator[ObjectInfo]:
    async for info in files:
        yield info
        count -= 1
        if count == 0:
            return


def _globs(patterns: Sequence[str], where: str) -> tuple[Glob, ...]:
    if len(patterns) > MAX_GLOBS:
        raise InvalidRequest(f"{where}: at most {MAX_GLOBS} globs (got {len(patterns)})")
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(compile_glob(pattern))
        except ValueError as e:
            raise InvalidRequest(f"{where}: {pattern!r} is not a valid glob: {e}") from e
    return tuple(compiled)
