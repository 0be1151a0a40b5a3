"""The external runtime: it starts nothing, hands each worker its id and token in a file, and forgets a job's
workers once they are stopped."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from tests.helpers import TEST_TRUST, write_test_secret
from thresher.core import trust
from thresher.core.config import Addresses, Config
from thresher.core.runtime import WorkerLaunch, WorkerPhase, open_runtime
from thresher.core.runtime.external import ExternalRuntime
from thresher.v1 import jobs_pb2


def launch(job_id: str = "job-1") -> WorkerLaunch:
    return WorkerLaunch(job_id, jobs_pb2.ApiSpec(name="resize"), "q-1", {}, max_receive_count=3, batch_timeout_s=60)


def runtime(tmp_path: Path) -> ExternalRuntime:
    config = Config(data_dir=tmp_path, addresses=Addresses(monitor="127.0.0.1:5123"))
    config.runtime.backend = "external"
    write_test_secret(config)
    chosen = open_runtime(config)
    assert isinstance(chosen, ExternalRuntime)
    return chosen


async def test_each_worker_is_handed_out_with_a_token_for_itself_only(tmp_path: Path) -> None:
    external = runtime(tmp_path)

    await external.ensure_workers(launch(), 2)

    path = external.launch_file("job-1")
    handed = json.loads(path.read_text(encoding="utf-8"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # the tokens are for the workers' runner only
    assert (handed["queue_name"], handed["api_name"]) == ("q-1", "resize")
    assert any(value == "127.0.0.1:5123" for value in handed["env"].values())  # where to report
    for worker in handed["workers"]:
        peer = TEST_TRUST.peer(worker["token"])
        assert (peer.role, peer.job_id, peer.worker_id) == (trust.DEQUEUER, "job-1", worker["worker_id"])
    assert [w.phase for w in await external.workers("job-1")] == [WorkerPhase.RUNNING] * 2


async def test_ensuring_the_same_count_again_starts_no_more(tmp_path: Path) -> None:
    external = runtime(tmp_path)

    await external.ensure_workers(launch(), 2)
    await external.ensure_workers(launch(), 2)

    assert len(await external.workers("job-1")) == 2
    assert len(json.loads(external.launch_file("job-1").read_text(encoding="utf-8"))["workers"]) == 2


async def test_a_stopped_job_is_forgotten(tmp_path: Path) -> None:
    external = runtime(tmp_path)
    await external.ensure_workers(launch("job-1"), 3)
    await external.ensure_workers(launch("job-2"), 1)

    await external.stop_workers("job-1", grace_s=1.0)

    assert await external.workers("job-1") == []  # nothing kept for a finished job: memory stays flat
    assert len(await external.workers("job-2")) == 1
