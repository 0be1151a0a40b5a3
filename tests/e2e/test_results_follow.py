"""Following a running job's results through the embedded stack: every result once, in batch order, whichever worker
stores it when; batches that settle without a result (dead-lettered, or answered with none) do not hold it up."""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack
from tests.helpers import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

FOLLOW_TIMEOUT_S = 90.0


class Follow:
    """`GET /v1/jobs/<id>/results?follow=true[&after=]`, read on a thread: the indexes of the lines it sends, as they
    come. The thread ends with the stream (the job final, or the stack stopped)."""

    def __init__(self, stack: Stack, job_id: str, after: int | None = None) -> None:
        self._lines: queue.Queue[int | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stack, job_id, after), daemon=True)
        self._thread.start()

    def _read(self, stack: Stack, job_id: str, after: int | None) -> None:
        try:
            for line in stack.client.results(job_id, after=after, follow=True):
                self._lines.put(json.loads(line)["index"])
        finally:
            self._lines.put(None)

    def take(self, count: int) -> list[int]:
        """The next `count` indexes sent (fewer if the stream ends first)."""
        taken: list[int] = []
        while len(taken) < count and (index := self._lines.get(timeout=FOLLOW_TIMEOUT_S)) is not None:
            taken.append(index)
        return taken

    def rest(self) -> list[int]:
        """Every index sent until the stream ends."""
        return self.take(2**31)


def test_a_follow_sends_a_lower_batch_stored_after_higher_ones_were_read(stack: Stack, tmp_path: Path) -> None:
    # Given 8 batches on 2 workers, the first held until the test lets it go
    hold = tmp_path / "hold"
    hold.touch()
    config = {"out_dir": str(tmp_path / "out"), "results": True, "hold_items": [0], "hold_while": str(hold)}
    submission = {"workers": 2, "item_list": {"items": list(range(8)), "batch_size": 1}, "config": config}
    job_id = stack.client.submit("recorder", submission)["job_id"]
    # And a follow of its results from the start
    follow = Follow(stack, job_id)

    # When most other batches' results are stored (one may wait behind the held batch, on its worker)
    wait_until(lambda: len(list(stack.client.results(job_id))) >= 6, 90, "6 results stored")
    time.sleep(1.0)  # several of the follow's reads (FOLLOW_POLL_S): one found them while batch 0 had none
    # And only then is the held batch's result stored
    hold.unlink()

    # Then the follow sends every result, once, in batch order, and ends with the job
    assert follow.rest() == list(range(8))
    assert stack.client.job(job_id)["job_status"]["status"] == "succeeded"


def test_a_follow_passes_batches_settled_without_a_result_while_the_job_runs(stack: Stack, tmp_path: Path) -> None:
    # Given 6 batches on one worker, in turn: batch 1 answers no result, batch 2 fails and is dead-lettered (one
    # attempt allowed), and the last is held (the job runs on) until the test lets it go
    hold = tmp_path / "hold"
    hold.touch()
    config = {"out_dir": str(tmp_path / "out"), "results": True, "no_result_items": [1], "fail_items": [2],
              "hold_items": [5], "hold_while": str(hold)}  # fmt: skip
    submission = {"workers": 1, "item_list": {"items": list(range(6)), "batch_size": 1}, "config": config,
                  "sqs_dead_letter_queue": {"arn": "", "max_receive_count": 1}}  # fmt: skip
    job_id = stack.client.submit("recorder", submission)["job_id"]

    # When its results are followed
    follow = Follow(stack, job_id)
    # Then the results after the two batches come while the job still runs: they do not wait for its end
    assert follow.take(3) == [0, 3, 4]
    assert stack.client.job(job_id)["job_status"]["status"] == "running"
    # And a follow resumed after batch 0 passes them too
    resumed = Follow(stack, job_id, after=0)
    assert resumed.take(2) == [3, 4]
    # And once the held batch is let go, its result comes, and the follows end with the job
    hold.unlink()
    assert follow.rest() == [5]
    assert resumed.rest() == [5]
    assert stack.client.job(job_id)["job_status"]["status"] == "completed_with_failures"
