"""Trust between services, attacked from outside (issue 16): a plain local process calls the internal gRPC services
of a real `thresher up`, with no credential, a forged one, or the token a dequeuer gets for its own job and worker."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.e2e.conftest import Stack
from thresher.core import trust
from thresher.core.config import Config
from thresher.core.names import GRPC_TOKEN_KEY
from thresher.v1 import (
    enqueuer_pb2,
    enqueuer_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    monitor_pb2,
    monitor_pb2_grpc,
    scheduler_pb2,
    scheduler_pb2_grpc,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

# A job of 20 batches whose worker takes 0.2 s a batch: it runs while the calls below are made.
SLOW_JOB = {"workers": 1, "item_list": {"items": list(range(20)), "batch_size": 1}}
OK = grpc.StatusCode.OK
Metadata = tuple[tuple[str, str], ...]
Attack = Callable[[Metadata], Awaitable[grpc.StatusCode]]
CLIENT_RACE_TRIES = 5


class Attacker:
    """A local process that dials the stack's gRPC services as endpoints.json lists them."""

    def __init__(self, stack: Stack) -> None:
        endpoints = json.loads((stack.data_dir / "endpoints.json").read_text())
        self._channels = [
            grpc.aio.insecure_channel(endpoints[name]["grpc"]) for name in ("scheduler", "monitor", "enqueuer")
        ]
        scheduler, monitor, enqueuer = self._channels
        self.scheduler = scheduler_pb2_grpc.SchedulerStub(scheduler)
        self.jobs = jobs_pb2_grpc.JobsStub(scheduler)
        self.monitor = monitor_pb2_grpc.MonitorStub(monitor)
        self.enqueuer = enqueuer_pb2_grpc.EnqueuerStub(enqueuer)

    def attacks(self, job_id: str, queue_name: str, worker_id: str = "w-forged") -> dict[str, Attack]:
        """Each harmful internal call on `job_id`, by name; each returns the status code it got."""
        forged = scheduler_pb2.JobSummary(total_batch_count=1, batches=jobs_pb2.BatchCounts(succeeded=1))
        succeeded = monitor_pb2.BatchReport(batch_id="b-forged", attempt=1, result=monitor_pb2.BATCH_RESULT_SUCCEEDED)
        report = monitor_pb2.Report(seq=1, job_id=job_id, worker_id=worker_id, batch=succeeded)
        submission = jobs_pb2.JobSubmission(api_name="recorder", workers=1)
        submission.item_list.items.append(b'"injected"')
        submission.item_list.batch_size = 1
        calls: dict[str, tuple[Any, Callable[[], Any]]] = {
            "Scheduler.JobSettled": (
                self.scheduler.JobSettled,
                lambda: scheduler_pb2.JobSettledRequest(job_id=job_id, summary=forged),
            ),
            "Scheduler.HookFinished": (
                self.scheduler.HookFinished,
                lambda: scheduler_pb2.HookFinishedRequest(job_id=job_id, outcome=jobs_pb2.HookOutcome(called=True)),
            ),
            "Monitor.Report": (self.monitor.Report, lambda: iter([monitor_pb2.Reports(reports=[report])])),
            "Monitor.TrackJob": (
                self.monitor.TrackJob,
                lambda: monitor_pb2.TrackJobRequest(job_id=job_id, total_batch_count=1),
            ),
            "Monitor.GetJobProgress": (self.monitor.GetJobProgress, lambda: jobs_pb2.JobRef(job_id=job_id)),
            "Enqueuer.Enqueue": (
                self.enqueuer.Enqueue,
                lambda: enqueuer_pb2.EnqueueRequest(job_id=job_id, queue_name=queue_name, submission=submission),
            ),
            "Jobs.GetJob": (self.jobs.GetJob, lambda: jobs_pb2.JobRef(job_id=job_id)),
        }
        return {name: functools.partial(_code, method, request) for name, (method, request) in calls.items()}

    async def open_calls(self) -> dict[str, grpc.StatusCode]:
        """A health check and a reflection listing of the scheduler's, without a token."""
        channel = self._channels[0]
        health = health_pb2_grpc.HealthStub(channel).Check
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo
        listing = reflection_pb2.ServerReflectionRequest(list_services="")
        return {
            "health": await _code(health, health_pb2.HealthCheckRequest, ()),
            "reflection": await _code(reflection, lambda: iter([listing]), ()),
        }

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


async def _code(method: Any, request: Callable[[], Any], metadata: Metadata) -> grpc.StatusCode:
    """The status a call of `method` with `request()` and `metadata` ends with.

    A gRPC Python client whose stream the server ends before it has half-closed may see INTERNAL "Internal error
    from Core" instead of the server's status (grpc/grpc#36066): such a call is made again."""
    for _ in range(CLIENT_RACE_TRIES):
        call = method(request(), metadata=metadata, timeout=10)
        try:
            if hasattr(call, "__aiter__"):
                [_ async for _ in call]
            else:
                await call
        except grpc.aio.AioRpcError as e:
            if (e.code(), e.details()) != (grpc.StatusCode.INTERNAL, "Internal error from Core"):
                return e.code()
            continue
        return OK
    raise AssertionError(f"{CLIENT_RACE_TRIES} calls of {method} lost their status to the client's race")


def token(role: str, secret: bytes = b"", job_id: str = "", worker_id: str = "") -> Metadata:
    return ((GRPC_TOKEN_KEY, trust.Trust(secret).token(role, job_id, worker_id)),)


def stack_secret(data_dir: Path) -> bytes:
    return trust.secret_path(Config(data_dir=data_dir)).read_bytes().strip()


def queue_name(job_id: str) -> str:
    return f"thresher_recorder_{job_id}"  # predictable, as every job's is


def assert_ended_with_its_true_counts(stack: Stack, job_id: str, out: Path) -> None:
    status = stack.wait_for_final("recorder", job_id)
    assert status["job_status"]["status"] == "succeeded", status
    assert status["job_status"]["total_batch_count"] == 20
    assert (status["metrics"]["succeeded"], status["metrics"]["failed"]) == (20, 0)
    items = [json.loads(line)["items"] for path in out.glob("items-*.jsonl") for line in path.read_text().splitlines()]
    assert sorted(item for batch in items for item in batch) == list(range(20)), "nothing injected"
    [hook] = [json.loads(line) for line in (out / "hooks.jsonl").read_text().splitlines()]
    assert (hook["total_batch_count"], hook["succeeded"]) == (20, 20)


async def test_a_local_process_without_the_stacks_secret_is_refused_every_internal_call(
    stack: Stack, tmp_path: Path
) -> None:
    # Given a job in progress, and a process that knows its id and queue, but not the stack's secret
    config = {"out_dir": str(tmp_path / "out"), "slow_s": 0.2}
    job_id = stack.client.submit("recorder", {**SLOW_JOB, "config": config})["job_id"]
    attacker = Attacker(stack)
    try:
        attacks = attacker.attacks(job_id, queue_name(job_id))
        secret = stack_secret(stack.data_dir)
        forged_secret = bytes(reversed(secret))

        # When it calls each internal method with no token, and with tokens of every role made with a guessed secret
        codes = {name: await attack(()) for name, attack in attacks.items()}
        for role in trust.ROLE_METHODS:
            forged = token(role, forged_secret, *((job_id, "w0") if role == trust.DEQUEUER else ()))
            codes |= {f"{name} as a forged {role}": await attack(forged) for name, attack in attacks.items()}

        # Then each one is refused as unauthenticated, while health checks and reflection stay open to it
        assert {name: code for name, code in codes.items() if code != grpc.StatusCode.UNAUTHENTICATED} == {}
        assert await attacker.open_calls() == {"health": OK, "reflection": OK}
    finally:
        await attacker.close()
    # And the job ends on its own, with its true counts: nothing was settled, reported or enqueued for it
    assert_ended_with_its_true_counts(stack, job_id, tmp_path / "out")


async def test_a_dequeuers_token_reports_only_for_its_own_job_and_worker_and_settles_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    # Given a job in progress, and the token a runtime gives worker w0 of another job
    config = {"out_dir": str(tmp_path / "out"), "slow_s": 0.2}
    job_id = stack.client.submit("recorder", {**SLOW_JOB, "config": config})["job_id"]
    own = token(trust.DEQUEUER, stack_secret(stack.data_dir), "job-a", "w0")
    attacker = Attacker(stack)
    try:
        # When it reports for its own job and worker, it is heard
        assert await attacker.attacks("job-a", "any", worker_id="w0")["Monitor.Report"](own) == OK
        # But for another worker of its job, or for the other job, or any other call, it is refused
        other_worker = attacker.attacks("job-a", "any", worker_id="w1")["Monitor.Report"]
        codes = {"Monitor.Report as w1": await other_worker(own)}
        codes |= {name: await attack(own) for name, attack in attacker.attacks(job_id, queue_name(job_id)).items()}

        assert codes == dict.fromkeys(codes, grpc.StatusCode.PERMISSION_DENIED)
    finally:
        await attacker.close()
    # And the other job ends on its own, with its true counts
    assert_ended_with_its_true_counts(stack, job_id, tmp_path / "out")
