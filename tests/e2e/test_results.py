"""Results through the whole embedded stack: real workers return them, dequeuers keep them, the gateway reads them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.e2e.conftest import WORKERS_DIR, Stack, stopped_after
from tests.helpers import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def lines(data: list[bytes]) -> list[dict]:
    return [json.loads(line) for line in data]


def test_results_read_back_in_batch_order_resumed_with_items_sized_and_deleted(stack: Stack, tmp_path: Path) -> None:
    # Given a job of 10 batches whose worker returns a result for each, on 2 workers
    config = {"out_dir": str(tmp_path / "out"), "results": True}
    submission = {"workers": 2, "item_list": {"items": list(range(50)), "batch_size": 5}, "config": config}
    job = stack.client.submit("recorder", submission)
    status = stack.wait_for_final("recorder", job["job_id"])
    assert status["job_status"]["status"] == "succeeded", status

    # When its results are read
    results = lines(list(stack.client.results(job["job_id"])))
    # Then there is one per batch, in batch order, each the worker's answer
    assert [(r["index"], r["batch_id"]) for r in results] == [(i, f"{job['job_id']}-{i:06d}") for i in range(10)]
    assert [r["result"]["squares"] for r in results] == [[n * n for n in range(i * 5, i * 5 + 5)] for i in range(10)]
    assert all("items" not in r for r in results)
    # And a read after index 6 resumes there; with items, each line has its batch's items
    assert [r["index"] for r in lines(list(stack.client.results(job["job_id"], after=6)))] == [7, 8, 9]
    with_items = lines(list(stack.client.results(job["job_id"], items=True)))
    assert [r["items"] for r in with_items] == [list(range(i * 5, i * 5 + 5)) for i in range(10)]
    # And the status shows their count and size
    size = stack.client.job(job["job_id"])["job_status"]["results"]
    assert size["count"] == 10 and size["bytes"] > 0

    # When they are deleted, they are gone, and the status says so
    deleted = stack.client.delete_results(job["job_id"])
    assert deleted == {"job_id": job["job_id"], "deleted_results": 10, "deleted_bytes": size["bytes"]}
    assert list(stack.client.results(job["job_id"])) == []
    assert stack.client.job(job["job_id"])["job_status"]["results"] == {"count": 0, "bytes": 0}


def test_the_cli_follows_a_running_jobs_results_into_a_file_until_it_ends(stack: Stack, tmp_path: Path) -> None:
    # Given a job of 8 slow batches on one worker, and no result for the batches that fail for good
    config = {"out_dir": str(tmp_path / "out"), "results": True, "slow_s": 0.1, "fail_items": [12]}
    submission = {"workers": 1, "item_list": {"items": list(range(16)), "batch_size": 2}, "config": config}
    job = stack.client.submit("recorder", submission)
    out = tmp_path / "results.jsonl"
    # When `thresher results --follow -o FILE` starts while it runs
    follow = subprocess.Popen(
        [sys.executable, "-m", "thresher.tools.cli", "--url", stack.url, "results", job["job_id"], "-o", str(out),
         "--follow"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    timer = threading.Timer(120, follow.kill)
    timer.start()
    try:
        _, err = follow.communicate()
    finally:
        timer.cancel()
    # Then it ends by itself once the job is final, having written every result in order, the dead letter's excepted
    assert follow.returncode == 0, err
    assert stack.client.job(job["job_id"])["job_status"]["status"] == "completed_with_failures"
    assert [r["index"] for r in lines(out.read_bytes().splitlines())] == [0, 1, 2, 3, 4, 5, 7]
    assert "wrote 7 results" in err


def test_results_larger_than_a_grpc_message_together_are_read_back_whole(stack: Stack, tmp_path: Path) -> None:
    # Given 3 batches whose results are 7 MB each: more together than one gRPC message holds (16 MiB)
    config = {"out_dir": str(tmp_path / "out"), "results": True, "result_pad": 7_000_000}
    job = stack.client.submit("recorder", {"workers": 1, "item_list": {"items": [1, 2, 3], "batch_size": 1},
                                           "config": config})  # fmt: skip
    assert stack.wait_for_final("recorder", job["job_id"])["job_status"]["status"] == "succeeded"
    # Then each comes back whole, in order
    results = lines(list(stack.client.results(job["job_id"])))
    assert [(r["index"], r["result"]["squares"], len(r["result"]["pad"])) for r in results] == [
        (i, [(i + 1) ** 2], 7_000_000) for i in range(3)
    ]


def test_deleting_an_api_with_its_jobs_deletes_their_results(stack: Stack, tmp_path: Path) -> None:
    config = {"out_dir": str(tmp_path / "out"), "results": True}
    job = stack.client.submit("recorder", {"workers": 1, "item_list": {"items": [1, 2], "batch_size": 1},
                                           "config": config})  # fmt: skip
    assert stack.wait_for_final("recorder", job["job_id"])["job_status"]["status"] == "succeeded"
    folder = stack.data_dir / "results" / job["job_id"]
    assert list(folder.iterdir())  # the results of the two batches, in one group or two

    stack.client.delete_api("recorder", delete_jobs=True)

    assert not folder.exists()


def test_results_older_than_their_ttl_are_deleted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a stack that keeps results 4 s after their job ended
    settings = tmp_path / "thresher.yaml"
    settings.write_text("results:\n  ttl_s: 4\n")
    monkeypatch.setenv("THRESHER_CONFIG", str(settings))
    with stopped_after(Stack(tmp_path / "data", WORKERS_DIR / "apis.yaml")) as stack:
        config = {"out_dir": str(tmp_path / "out"), "results": True}
        job = stack.client.submit("recorder", {"workers": 1, "item_list": {"items": [1, 2], "batch_size": 1},
                                               "config": config})  # fmt: skip
        assert stack.wait_for_final("recorder", job["job_id"])["job_status"]["status"] == "succeeded"
        assert len(list(stack.client.results(job["job_id"]))) == 2, "kept when the job has just ended"
        # Then its results are gone a few seconds later
        eventually(lambda: _no_results(stack, job["job_id"]), timeout_s=20, interval_s=0.2)


def _no_results(stack: Stack, job_id: str) -> None:
    assert list(stack.client.results(job_id)) == []
    assert not (stack.data_dir / "results" / job_id).exists()
