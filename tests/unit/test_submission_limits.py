"""The scheduler's limits on a submission: what the settings cap, and batches that one queue message cannot hold."""

from __future__ import annotations

import pytest

from services.scheduler.validation import check_limits
from thresher.core.config import Config
from thresher.core.errors import InvalidRequest
from thresher.core.itemlists import MAX_BATCH_BYTES
from thresher.v1 import jobs_pb2


def items(count: int, size: int, batch_size: int, first: int = 0) -> jobs_pb2.JobSubmission:
    """`first` one-byte items, then `count` JSON strings of `size` bytes each."""
    submission = jobs_pb2.JobSubmission(api_name="a", workers=1)
    submission.item_list.items.extend([b"1"] * first + [b'"' + b"x" * (size - 2) + b'"'] * count)
    submission.item_list.batch_size = batch_size
    return submission


def test_on_sqs_a_batch_over_one_message_is_refused_naming_its_items() -> None:
    config = Config()
    config.queue.backend = "sqs"
    check_limits(items(5, 100 * 1024, batch_size=2), config)  # 200 KiB a batch: fits
    with pytest.raises(InvalidRequest, match=r"^item_list: the batch of items 3 to 5 is 307204 bytes, over the queue"):
        check_limits(items(3, 100 * 1024, batch_size=3, first=3), config)
    assert MAX_BATCH_BYTES["sqs"] < 256 * 1024


def test_sqlite_messages_have_no_limit_but_the_settings_caps_apply() -> None:
    config = Config()
    config.limits.max_workers, config.limits.max_batch_size = 2, 3
    check_limits(items(3, 100 * 1024, batch_size=3), config)
    with pytest.raises(InvalidRequest, match=r"^item_list: batch_size: must be at most 3 \(got 4\)$"):
        check_limits(items(4, 1, batch_size=4), config)
    too_many = items(1, 1, batch_size=1)
    too_many.workers = 3
    with pytest.raises(InvalidRequest, match=r"^workers: must be at most 2 \(got 3\)$"):
        check_limits(too_many, config)


def test_a_job_s_own_s3_path_for_results_is_taken_only_where_the_settings_allow_it() -> None:
    # The dequeuers of a stack that does not allow it have no S3 credentials to write there
    config = Config()
    submission = items(1, 1, batch_size=1)
    submission.results.s3_path = "s3://bucket/out"
    with pytest.raises(InvalidRequest, match=r"^results: s3_path: this stack keeps every job's results in one place"):
        check_limits(submission, config)
    config.results.job_s3_paths = True
    check_limits(submission, config)


def test_a_staged_list_must_name_a_file_of_this_stacks_staging_place(tmp_path) -> None:
    config = Config(data_dir=tmp_path)
    submission = jobs_pb2.JobSubmission(api_name="a", workers=1)
    submission.item_list.batch_size = 1
    staged = f"{tmp_path.resolve()}/staged/{'ab' * 16}.jsonl"
    submission.item_list.staged.CopyFrom(jobs_pb2.StagedItems(path=staged, count=3, bytes=6))
    check_limits(submission, config)

    for forged in ("/etc/passwd", f"{tmp_path.resolve()}/staged/../api_keys", f"{tmp_path.resolve()}/x.jsonl"):
        submission.item_list.staged.path = forged
        with pytest.raises(InvalidRequest, match="item_list: staged: not a file this stack staged"):
            check_limits(submission, config)
