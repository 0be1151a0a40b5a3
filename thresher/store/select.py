"""Which files a file source (Cortex's file_path_lister / delimited_files) names: paths, then globs.

Each path is a prefix, listed in the order given; a file is kept when its full path matches any include (or there
are none) and no exclude. Overlapping prefixes list a file twice, as in Cortex.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from thresher.errors import InvalidRequest
from thresher.store import ObjectStores
from thresher.store.base import S3_SCHEME, ObjectInfo, split_s3_path
from thresher.store.globs import compile_glob
from thresher.store.local import FILE_SCHEME, local_path


@dataclass(frozen=True)
class FileQuery:
    paths: tuple[str, ...]
    includes: tuple[re.Pattern[str], ...]
    excludes: tuple[re.Pattern[str], ...]

    @classmethod
    def parse(cls, paths: Sequence[str], includes: Sequence[str], excludes: Sequence[str], where: str) -> FileQuery:
        """Check every path and glob; InvalidRequest names the field (`where`: s3_paths ...) and the problem."""
        if not paths:
            raise InvalidRequest(f"{where}: s3_paths: must contain at least 1 elements")
        for path in paths:
            try:
                check_path(path)
            except InvalidRequest as e:
                raise InvalidRequest(f"{where}: s3_paths: {e}") from e
        return cls(tuple(paths), _globs(includes, f"{where}: includes"), _globs(excludes, f"{where}: excludes"))

    def keeps(self, path: str) -> bool:
        included = not self.includes or any(g.fullmatch(path) for g in self.includes)
        return included and not any(g.fullmatch(path) for g in self.excludes)


def check_path(path: str) -> None:
    """InvalidRequest unless `path` is s3://bucket[/key], file:///absolute/path or an absolute local path."""
    if path.startswith(S3_SCHEME):
        split_s3_path(path)
    elif path.startswith(FILE_SCHEME) or "://" not in path:
        local_path(path)
    else:
        raise InvalidRequest(f"{path}: expected s3://bucket[/key], file:///path or an absolute local path")


async def matching_files(stores: ObjectStores, query: FileQuery) -> AsyncIterator[ObjectInfo]:
    """Every file the query keeps, prefix after prefix, each prefix in its store's order."""
    for prefix in query.paths:
        async for info in stores.for_path(prefix).list(prefix):
            if query.keeps(info.path):
                yield info


def _globs(patterns: Sequence[str], where: str) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(compile_glob(pattern))
        except ValueError as e:
            raise InvalidRequest(f"{where}: {pattern!r} is not a valid glob: {e}") from e
    return tuple(compiled)
