"""File sources at submission: the files a dry run lists, and the check that some file matches at all.

As Cortex's, the check stops at the first matching file. Store errors keep their kind: a missing bucket or an
unreadable path is `invalid` (400), a store that cannot be reached is `unavailable` (503).
"""

from __future__ import annotations

from thresher.core.config import InputSettings
from thresher.core.sources import FILE_SOURCES, file_query, no_files_found, source_of
from thresher.core.store import ObjectStores
from thresher.core.store.base import S3_SCHEME
from thresher.core.store.select import FileQuery, matching_files
from thresher.v1 import jobs_pb2

MAX_DRY_RUN_PATHS = 10_000  # a dry run lists at most this many files (the reply must fit in one gRPC message)


async def check_files_exist(submission: jobs_pb2.JobSubmission, settings: InputSettings) -> None:
    """InvalidRequest when the submission's file source matches no file, or names a local path outside
    `inputs.local_roots` (any of its paths, not only the first that matches); other sources pass."""
    await _list(submission, settings, limit=1)


async def dry_run_paths(submission: jobs_pb2.JobSubmission, settings: InputSettings) -> list[str]:
    """Every file the submission's file source matches, in the order the job would read them; [] for others.

    Past MAX_DRY_RUN_PATHS the list ends with a line saying that it stops there.
    """
    paths = await _list(submission, settings, limit=MAX_DRY_RUN_PATHS + 1)
    if len(paths) > MAX_DRY_RUN_PATHS:
        paths[MAX_DRY_RUN_PATHS:] = [f"... (a dry run lists the first {MAX_DRY_RUN_PATHS} files only)"]
    return paths


async def _list(submission: jobs_pb2.JobSubmission, settings: InputSettings, limit: int) -> list[str]:
    source = source_of(submission)
    if source not in FILE_SOURCES:
        return []
    query = file_query(submission, source)
    stores = ObjectStores(settings)
    try:
        await _check_local_roots(stores, query)
        paths = await _first(stores, query, limit)
    finally:
        await stores.close()
    if not paths:
        raise no_files_found(source, query.paths)
    return paths


async def _check_local_roots(stores: ObjectStores, query: FileQuery) -> None:
    """The local store refuses a path outside inputs.local_roots as soon as its listing starts."""
    for prefix in query.paths:
        if not prefix.startswith(S3_SCHEME):
            await anext(aiter(stores.for_path(prefix).list(prefix)), None)


async def _first(stores: ObjectStores, query: FileQuery, limit: int) -> list[str]:
    paths: list[str] = []
    async for info in matching_files(stores, query):
        paths.append(info.path)
        if len(paths) >= limit:
            break
    return paths
