"""Tokens made from the stack secret, the roles' methods, and the secret file (thresher/core/trust.py)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from thresher.core import trust
from thresher.core.config import Config
from thresher.core.errors import Forbidden, InvalidRequest, Unauthenticated
from thresher.v1 import enqueuer_pb2, jobs_pb2, monitor_pb2, scheduler_pb2

STACK = trust.Trust(b"s" * 64)
SERVICES = [
    s for f in (jobs_pb2, scheduler_pb2, monitor_pb2, enqueuer_pb2) for s in f.DESCRIPTOR.services_by_name.values()
]


@pytest.fixture
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def test_a_token_names_its_holder_and_only_this_secret_made_it() -> None:
    token = STACK.token(trust.DEQUEUER, "job-a", "job-a-w0")

    assert STACK.peer(token) == trust.Peer(trust.DEQUEUER, "job-a", "job-a-w0")
    with pytest.raises(Unauthenticated):
        trust.Trust(b"t" * 64).peer(token)


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        "scheduler",
        STACK.token(trust.DEQUEUER, "job-a", "w0").replace("dequeuer:", "monitor:"),  # a claim made greater
        STACK.token(trust.DEQUEUER, "job-a", "w0").replace(":w0:", ":*:"),  # a scope made wider
        STACK.token(trust.DEQUEUER, "job-a", "w0").replace("job-a", "job-b"),  # another job
        STACK.token(trust.MONITOR) + "0",
        "monitor::" + ":" * 3 + STACK.token(trust.MONITOR).rsplit(":", 1)[1],
    ],
)
def test_a_missing_or_altered_token_is_unauthenticated(token: str | None) -> None:
    with pytest.raises(Unauthenticated):
        STACK.peer(token)


def test_each_role_may_call_only_its_methods() -> None:
    every = [f"/{service.full_name}/{method.name}" for service in SERVICES for method in service.methods]
    allowed = {role: {m for m in every if trust.Peer(role).may_call(m)} for role in trust.ROLE_METHODS}

    jobs = {m for m in every if m.startswith("/thresher.v1.Jobs/")}
    assert allowed[trust.GATEWAY] == jobs and len(jobs) > 10
    assert allowed[trust.SCHEDULER] == {
        "/thresher.v1.Enqueuer/Enqueue",
        "/thresher.v1.Monitor/TrackJob",
        "/thresher.v1.Monitor/GetJobProgress",
        "/thresher.v1.Monitor/RecordQueueCalls",
        "/thresher.v1.Monitor/GetSettledBatches",
    }
    assert allowed[trust.MONITOR] == {"/thresher.v1.Scheduler/JobSettled", "/thresher.v1.Scheduler/HookFinished"}
    assert allowed[trust.DEQUEUER] == {"/thresher.v1.Monitor/Report"}
    assert not trust.Peer("intruder").may_call("/thresher.v1.Monitor/Report")


def test_every_method_in_the_roles_table_exists() -> None:
    services = {service.full_name: service for service in SERVICES}
    for methods in trust.ROLE_METHODS.values():
        for entry in methods:
            service, _, method = entry.partition("/")
            assert service in services and (not method or method in services[service].methods_by_name), entry


def test_a_dequeuer_speaks_for_its_own_job_and_worker_or_with_a_job_token_for_any_worker_of_its_job() -> None:
    worker, job = trust.Peer(trust.DEQUEUER, "job-a", "w0"), trust.Peer(trust.DEQUEUER, "job-a", trust.ANY_WORKER)

    worker.check_speaks_for("job-a", "w0")
    job.check_speaks_for("job-a", "w7")
    for peer, job_id, worker_id in ((worker, "job-a", "w1"), (worker, "job-b", "w0"), (job, "job-b", "w0")):
        with pytest.raises(Forbidden):
            peer.check_speaks_for(job_id, worker_id)


def test_tokens_are_refused_for_unknown_roles_ambiguous_ids_and_short_secrets() -> None:
    with pytest.raises(InvalidRequest, match="unknown role"):
        STACK.token("root")
    for role, job_id in ((trust.DEQUEUER, ""), (trust.MONITOR, "job-a")):
        with pytest.raises(InvalidRequest, match="only a dequeuer's"):
            STACK.token(role, job_id, "w0")
    with pytest.raises(InvalidRequest, match="':'"):
        STACK.token(trust.DEQUEUER, "job:a", "w0")
    with pytest.raises(InvalidRequest, match="at least 32"):
        trust.Trust(b"short")


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277], indirect=True)
def test_the_secret_is_made_once_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    config = Config(data_dir=tmp_path / "data")

    path = trust.ensure_secret(config)
    first = path.read_bytes()
    trust.ensure_secret(config)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == first and len(first.strip()) == 64
    assert [p.name for p in path.parent.iterdir()] == [trust.SECRET_FILE]  # no draft left behind
    assert trust.load(config).peer(trust.load(config).token(trust.MONITOR)) == trust.Peer(trust.MONITOR)


def test_a_missing_secret_names_its_path_and_who_makes_it(tmp_path: Path) -> None:
    config = Config(data_dir=tmp_path)
    config.auth.internal_secret_file = str(tmp_path / "nowhere")

    with pytest.raises(InvalidRequest, match=r"nowhere.*thresher up.*thresher-internal"):
        trust.load(config)
