"""`thresher.Client`'s results and map against the real embedded stack: order, resume, follow, a 10,000-item map."""

from __future__ import annotations

import os
import signal
import tracemalloc

import pytest

from tests.e2e.conftest import WORKERS_DIR, Stack
from thresher import Client, JobFailed
from thresher.core.errors import InvalidRequest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SQUARER = {
    "name": "squarer",
    "kind": "BatchAPI",
    "pod": {
        "port": 8080,
        "containers": [{
            "name": "api",
            "image": "thresher-test-squarer",
            "command": ["python", "squaring_worker.py"],
            "readiness_probe": {"http_get": {"path": "/healthz", "port": 8080}},
        }],
    },
}  # fmt: skip


@pytest.fixture
def client(stack: Stack) -> Client:
    client = Client(stack.url, api_key=stack.api_key)
    [deployed] = client.deploy([SQUARER], working_dir=WORKERS_DIR)
    assert deployed["name"] == "squarer"
    return client


def test_map_yields_a_result_per_item_in_input_order(client: Client) -> None:
    items = (i for i in range(10_000))  # a generator: the client never holds the items as a list

    squares = client.map("squarer", items, batch_size=50, workers=3)

    assert list(squares) == [i * i for i in range(10_000)]


def test_map_holds_neither_the_items_nor_the_results(client: Client) -> None:
    count = 200_000  # as a list, the items or their squares alone would take over 7 MB
    tracemalloc.start()
    try:
        total = sum(client.map("squarer", (i for i in range(count)), batch_size=1000, workers=1))
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert total == sum(i * i for i in range(count))
    assert peak_bytes < 3 * 1024 * 1024, f"the client held {peak_bytes} bytes at most"


def test_results_come_in_batch_order_from_an_index_with_their_items_and_can_be_deleted(client: Client) -> None:
    job = client.submit("squarer", items=list(range(20)), batch_size=2, workers=2, config={"slow_s": 0.05})

    followed = list(job.results(follow=True))  # waits for the job

    assert [line["index"] for line in followed] == list(range(10))
    assert [line["result"] for line in followed] == [[4 * i * i, (2 * i + 1) ** 2] for i in range(10)]
    assert all(line["batch_id"].startswith(job.id) for line in followed)
    assert job.status()["job_status"]["status"] == "succeeded"
    after = list(job.results(after=6, items=True))
    assert [(line["index"], line["items"]) for line in after] == [(7, [14, 15]), (8, [16, 17]), (9, [18, 19])]
    assert job.status()["job_status"]["results"]["count"] == 10

    deleted = job.delete_results()

    assert (deleted["job_id"], deleted["deleted_results"]) == (job.id, 10) and deleted["deleted_bytes"] > 0
    assert list(job.results()) == []


def test_following_a_running_job_gives_a_result_only_after_those_before_it(client: Client) -> None:
    # The first worker holds batch 0 (and one waiting) for 4 s; the others store the later batches' results first.
    config = {"slow_s": 4, "slow_items": [0]}
    job = client.submit("squarer", items=list(range(6)), batch_size=1, workers=3, config=config)

    followed = [line["index"] for line in job.results(follow=True)]

    assert followed == list(range(6)), "no result skipped for being stored after a later one"


def test_following_results_goes_on_after_the_gateway_is_killed(stack: Stack, client: Client) -> None:
    job = client.submit("squarer", items=list(range(30)), batch_size=1, workers=1, config={"slow_s": 0.1})
    seen = []
    for line in job.results(follow=True):
        if not seen:
            os.kill(stack.service_pid("gateway"), signal.SIGKILL)  # the stream breaks; the stack restarts it
        seen.append(line["index"])

    assert seen == list(range(30)), "each result once, in order, across the broken connection"


def test_map_says_which_batch_failed_and_which_result_is_not_a_list_per_item(client: Client) -> None:
    with pytest.raises(JobFailed, match="batch 2 has no result") as failed:
        list(client.map("squarer", range(10), batch_size=2, workers=1, config={"fail_items": [5]}))
    assert [batch["items"] for batch in failed.value.job.failed()] == [[4, 5]]

    with pytest.raises(InvalidRequest, match=r"batch 0 .* has 3 items but its result is int"):
        list(client.map("squarer", range(6), batch_size=3, workers=1, config={"per_batch": True}))
