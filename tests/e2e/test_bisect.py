"""`on_failure: bisect` against the real embedded stack: batches with poison items are split down to the poison items,
which alone are dead-lettered, each with its own error; counts, hook summary, failed list, retry, results and map."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import WORKERS_DIR, Stack
from tests.e2e.test_python_client_results import SQUARER
from thresher import Client, JobFailed

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

POISON = [7, 58, 133]


@pytest.fixture
def client(stack: Stack) -> Client:
    return Client(stack.url, api_key=stack.api_key)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_only_the_poison_items_are_dead_lettered_and_the_counts_add_up(
    client: Client, stack: Stack, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config = {"out_dir": str(out), "fail_items": POISON, "results": True}
    job = client.submit(
        "recorder", items=range(200), batch_size=20, workers=2, config=config, on_failure="bisect",
        sqs_dead_letter_queue={"max_receive_count": 2},
    )  # fmt: skip

    status = job.wait(progress=False)["job_status"]

    assert status["status"] == "completed_with_failures"
    counts = status["batch_counts"]
    assert (counts["items_succeeded"], counts["items_dead_lettered"], counts["dead_lettered"]) == (197, 3, 3)
    assert status["items_enqueued"] == counts["items_succeeded"] + counts["items_dead_lettered"]
    assert status["on_failure"] == "bisect"
    # 4 splits per poison item, each adding a batch: 7 is in 20 items, then 10 (0-9), 5 (5-9), 3 (5-7) and 1 (7);
    # 58 in 20, 10 (50-59), 5 (55-59), 2 (58-59) and 1; 133 in 20, 10 (130-139), 5 (130-134), 2 (133-134) and 1
    assert counts["split"] == 12 and counts["succeeded"] + counts["dead_lettered"] == 10 + 12
    succeeded = [item for path in out.glob("items-*.jsonl") for call in lines(path) for item in call["items"]]
    assert sorted(succeeded) == [i for i in range(200) if i not in POISON], "every other item succeeded, once"

    failed = job.failed()
    assert sorted(f["items"][0] for f in failed) == POISON and all(len(f["items"]) == 1 for f in failed)
    assert all(f"poison item in {f['items']}" in f["error"] for f in failed), "each with its own last error"
    assert sorted(f["batch_id"].removeprefix(job.id) for f in failed) == [
        "-000000.0.1.0.1", "-000002.1.1.1.0", "-000006.1.0.1.0",
    ], "the ids of split batches show their origin"  # fmt: skip

    [hook] = lines(out / "hooks.jsonl")
    assert (hook["items_succeeded"], hook["items_dead_lettered"]) == (197, 3)
    assert sorted(hook["dead_lettered_batch_ids"]) == sorted(f["batch_id"] for f in failed)

    results = list(job.results(items=True))
    assert [item for r in results for item in r["items"]] == [i for i in range(200) if i not in POISON]
    assert [square for r in results for square in r["result"]["squares"]] == [
        i * i for i in range(200) if i not in POISON
    ], "the halves' results in input order"

    cli = [sys.executable, "-m", "thresher.tools.cli", "--url", stack.url]
    listed = subprocess.run([*cli, "failed", job.id], capture_output=True, text=True, timeout=60, check=True).stdout
    assert all(f"items [{item}]" in listed for item in POISON) and listed.startswith("3 failed batches")
    shown = subprocess.run([*cli, "get", job.id], capture_output=True, text=True, timeout=60).stdout
    assert "items:      197 succeeded, 3 dead-lettered, 12 batches split" in shown
    retried = subprocess.run([*cli, "retry", job.id], capture_output=True, text=True, timeout=60, check=True).stdout
    retried_id = retried.split()[2]
    assert stack.wait_for_final("recorder", retried_id)["job_status"]["total_batch_count"] == 3, "the poison items"
    assert sorted(f["items"] for f in client.job(retried_id).failed()) == [[7], [58], [133]]


def test_map_yields_the_items_before_a_poison_item_in_order_then_raises(client: Client, stack: Stack) -> None:
    client.deploy([SQUARER | {"on_failure": "bisect"}], working_dir=WORKERS_DIR)  # the API's default
    squares = client.map("squarer", range(300), batch_size=50, workers=2, config={"fail_items": [175]})

    got = []
    with pytest.raises(JobFailed, match="batch 3 has no result from its item 25 on"):
        for square in squares:
            got.append(square)

    assert got == [i * i for i in range(175)]


def test_map_follows_the_halves_of_split_batches_and_yields_every_item_in_order(client: Client, tmp_path: Path) -> None:
    # Given batches of 50 that fail, and halves of 13 or fewer items that succeed: each batch is split three times
    client.deploy([SQUARER | {"on_failure": "bisect"}], working_dir=WORKERS_DIR)
    config = {"max_batch_items": 13, "slow_items": [3], "slow_s": 1.5}  # the first halves wait: later ones overtake
    squares = client.map(
        "squarer", range(200), batch_size=50, workers=3, config=config, sqs_dead_letter_queue={"max_receive_count": 1}
    )

    # Then map, following the results as they come, yields every item's result once, in input order
    assert list(squares) == [i * i for i in range(200)]
    # And the API's on_failure is its jobs' default, as their status shows; a job of an API without one has none
    squarer_job = client.submit("squarer", items=[1], batch_size=1, workers=1)
    recorder_job = client.submit("recorder", items=[1], batch_size=1, workers=1, config={"out_dir": str(tmp_path)})
    assert squarer_job.wait(progress=False)["job_status"]["on_failure"] == "bisect"
    assert recorder_job.wait(progress=False)["job_status"]["on_failure"] == "dead_letter"


@contextlib.contextmanager
def cutting_proxy(upstream: str) -> Iterator[str]:
    """An HTTP proxy on 127.0.0.1 to `upstream` (host:port) that cuts its first answer right after its first result
    line, as a gateway restarting would; later connections go through whole. Yields its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    connections = itertools.count()

    def pipe(source: socket.socket, target: socket.socket, cut: bool) -> None:
        seen = b""
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                seen += data
                if cut and (start := seen.find(b'"batch_id"')) >= 0 and (end := seen.find(b"\n", start)) >= 0:
                    target.sendall(data[: len(data) - (len(seen) - end - 1)])
                    break
                target.sendall(data)
        for side in (source, target):
            with contextlib.suppress(OSError):
                side.shutdown(socket.SHUT_RDWR)
            side.close()

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                client_side, _ = listener.accept()
                host, port = upstream.rsplit(":", 1)
                server_side = socket.create_connection((host, int(port)))
                cut = next(connections) == 0
                threading.Thread(target=pipe, args=(client_side, server_side, False), daemon=True).start()
                threading.Thread(target=pipe, args=(server_side, client_side, cut), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def test_results_read_again_after_a_broken_connection_keep_every_half(client: Client, stack: Stack) -> None:
    # Given a job whose batches of 4 fail, and whose halves of 2 succeed: two results under each batch's index
    client.deploy([SQUARER | {"on_failure": "bisect"}], working_dir=WORKERS_DIR)
    job = client.submit("squarer", items=range(8), batch_size=4, workers=1, config={"max_batch_items": 2},
                        sqs_dead_letter_queue={"max_receive_count": 1})  # fmt: skip
    assert job.wait(progress=False)["job_status"]["status"] == "succeeded"

    # When the answer breaks off after the first half's result
    with cutting_proxy(stack.url.removeprefix("http://")) as url:
        lines = list(Client(url, api_key=stack.api_key).job(job.id).results())

    # Then the connection opened again gives the second half of the same batch, and nothing twice
    assert [line["batch_id"].removeprefix(job.id) for line in lines] == [
        "-000000.0", "-000000.1", "-000001.0", "-000001.1",
    ]  # fmt: skip
