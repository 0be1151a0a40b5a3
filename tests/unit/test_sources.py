"""The input sources and their rules (thresher/core/sources.py): one list, one source a submission, one wording each."""

from __future__ import annotations

import re

import pytest

from thresher.core.errors import ConflictingFields, InvalidRequest, SpecifyExactlyOneKey
from thresher.core.sources import (
    BATCHES,
    FILE_SOURCES,
    SOURCES,
    batch_size_of,
    check_batch_size,
    file_query,
    given_sources,
    source_of,
)
from thresher.v1 import jobs_pb2


def with_sources(*names: str) -> jobs_pb2.JobSubmission:
    """A submission giving each of `names` (an empty source is still given: present is what counts)."""
    submission = jobs_pb2.JobSubmission(api_name="sum", workers=1)
    for name in names:
        if name == BATCHES:
            submission.batches.append(b"[1]")
        else:
            getattr(submission, name).SetInParent()
    return submission


def test_the_sources_are_every_input_field_of_the_contract() -> None:
    # A new source field in jobs.proto must be added to SOURCES, else no service would see it.
    inputs = {jobs_pb2.ItemList.DESCRIPTOR, jobs_pb2.FileSource.DESCRIPTOR}
    fields = jobs_pb2.JobSubmission.DESCRIPTOR.fields
    assert set(SOURCES) == {f.name for f in fields if f.message_type in inputs} | {BATCHES}


@pytest.mark.parametrize("name", SOURCES)
def test_a_submission_with_one_source_is_of_that_source(name: str) -> None:
    submission = with_sources(name)
    assert (given_sources(submission), source_of(submission)) == ([name], name)


def test_a_submission_without_a_source_is_refused_naming_cortexs_keys() -> None:
    message = "specify exactly one of the following keys: item_list, file_path_lister, or delimited_files"
    with pytest.raises(SpecifyExactlyOneKey, match=f"^{re.escape(message)}$"):
        source_of(with_sources())


@pytest.mark.parametrize(
    ("names", "listed"),
    [
        (("item_list", "delimited_files"), "item_list or delimited_files"),
        (("file_path_lister", BATCHES), "file_path_lister or batches"),
        (SOURCES, "item_list, file_path_lister, delimited_files, or batches"),
    ],
)
def test_a_submission_with_two_sources_is_refused_naming_them_as_cortex(names, listed: str) -> None:
    message = f"please specify either the {listed} field (but not more than one at the same time)"
    with pytest.raises(ConflictingFields, match=f"^{re.escape(message)}$"):
        source_of(with_sources(*names))


def test_batch_size_is_the_sources_own_and_pre_cut_batches_have_none() -> None:
    submission = with_sources("delimited_files")
    submission.delimited_files.batch_size = 7
    assert batch_size_of(submission, "delimited_files") == 7
    assert batch_size_of(with_sources(BATCHES), BATCHES) is None


@pytest.mark.parametrize(
    ("batch_size", "maximum", "message"),
    [
        (0, None, "item_list: batch_size: must be greater than or equal to 1 (got 0)"),
        (-3, 10, "item_list: batch_size: must be greater than or equal to 1 (got -3)"),
        (11, 10, "item_list: batch_size: must be at most 10 (got 11)"),
    ],
)
def test_a_batch_size_out_of_bounds_is_refused_in_one_wording(batch_size: int, maximum, message: str) -> None:
    with pytest.raises(InvalidRequest, match=f"^{re.escape(message)}$"):
        check_batch_size("item_list", batch_size, maximum)


def test_a_batch_size_within_bounds_passes() -> None:
    check_batch_size("item_list", 1)
    check_batch_size("delimited_files", 10, maximum=10)
    check_batch_size("file_path_lister", 10**9)  # no maximum given: only the lower bound


@pytest.mark.parametrize("source", FILE_SOURCES)
def test_a_file_sources_query_is_parsed_and_its_batch_size_checked(source: str) -> None:
    submission = with_sources(source)
    files = getattr(submission, source)
    files.paths.append("s3://bucket/data/")
    files.includes.append("**.json")
    files.batch_size = 2
    assert file_query(submission, source).paths == ("s3://bucket/data/",)
    files.batch_size = 0
    with pytest.raises(InvalidRequest, match=re.escape(f"{source}: batch_size: must be greater than or equal to 1")):
        file_query(submission, source)
