"""The scheduler's look at a file source before a job exists: the dry-run listing and the "some file matches" check,
against local files and S3 on moto's server."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.scheduler.inputs import MAX_DRY_RUN_PATHS, check_files_exist, dry_run_paths
from tests.contract.test_object_store import local_tree, s3_settings, s3_tree
from thresher.core.config import InputSettings
from thresher.core.errors import InvalidRequest, NoFilesFound, Unavailable
from thresher.v1 import jobs_pb2


def file_source(source: str, paths: list[str], **globs: list[str]) -> jobs_pb2.JobSubmission:
    submission = jobs_pb2.JobSubmission(api_name="files", workers=1)
    getattr(submission, source).CopyFrom(jobs_pb2.FileSource(paths=paths, batch_size=1, **globs))
    return submission


async def test_a_dry_run_lists_every_matching_local_file_in_reading_order(tmp_path: Path) -> None:
    tree = local_tree(tmp_path / "in")
    for name in ("b/2.json", "a/1.json", "a/skip.txt", "c.json"):
        tree.put(name, b"1")
    submission = file_source("file_path_lister", [tree.path("b"), f"file://{tree.root}/a"], includes=["**.json"])

    assert await dry_run_paths(submission, InputSettings(local_roots="/")) == [
        tree.path("b/2.json"),
        f"file://{tree.path('a/1.json')}",
    ]


async def test_a_dry_run_lists_every_matching_s3_object(aws_endpoint: str) -> None:
    tree = s3_tree(aws_endpoint, "data")
    for i in range(3):
        tree.put(f"in/part-{i}.jsonl", b"1\n")
    tree.put("in/_SUCCESS", b"")
    submission = file_source("delimited_files", ["s3://data/in/part-"])

    assert await dry_run_paths(submission, s3_settings(aws_endpoint)) == [
        f"s3://data/in/part-{i}.jsonl" for i in range(3)
    ]
    await check_files_exist(submission, s3_settings(aws_endpoint))


async def test_a_long_dry_run_listing_says_where_it_stops(tmp_path: Path) -> None:
    tree = local_tree(tmp_path / "in")
    for i in range(MAX_DRY_RUN_PATHS + 5):
        tree.put(f"{i:05d}", b"")

    paths = await dry_run_paths(file_source("file_path_lister", [tree.root + "/"]), InputSettings(local_roots="/"))

    assert len(paths) == MAX_DRY_RUN_PATHS + 1
    assert paths[-2] == tree.path(f"{MAX_DRY_RUN_PATHS - 1:05d}")
    assert paths[-1] == f"... (a dry run lists the first {MAX_DRY_RUN_PATHS} files only)"


async def test_no_matching_file_is_invalid(tmp_path: Path, aws_endpoint: str) -> None:
    tree = local_tree(tmp_path / "in")
    tree.put("a.txt", b"")
    s3_tree(aws_endpoint, "empty")

    for submission, settings in [
        (file_source("delimited_files", [tree.root], includes=["**.json"]), InputSettings(local_roots="/")),
        (file_source("delimited_files", [str(tmp_path / "nothing")]), InputSettings(local_roots="/")),
        (file_source("file_path_lister", ["s3://empty/"]), s3_settings(aws_endpoint)),
    ]:
        source = "delimited_files" if submission.HasField("delimited_files") else "file_path_lister"
        files = "s3 files" if source == "file_path_lister" else "files"  # Cortex's words for S3 paths
        with pytest.raises(NoFilesFound, match=f"^{source}: no {files} match search criteria$"):
            await check_files_exist(submission, settings)


async def test_store_errors_keep_their_kind(aws_endpoint: str) -> None:
    with pytest.raises(InvalidRequest, match="s3://missing/in: not found in S3"):
        await dry_run_paths(file_source("delimited_files", ["s3://missing/in"]), s3_settings(aws_endpoint))
    unreachable = s3_settings("http://127.0.0.1:9")
    with pytest.raises(Unavailable, match="S3 cannot be reached"):
        await dry_run_paths(file_source("delimited_files", ["s3://b/in"]), unreachable)


async def test_other_sources_list_nothing() -> None:
    submission = jobs_pb2.JobSubmission(
        api_name="x", workers=1, item_list=jobs_pb2.ItemList(items=[b"1"], batch_size=1)
    )
    assert await dry_run_paths(submission, InputSettings(local_roots="/")) == []
