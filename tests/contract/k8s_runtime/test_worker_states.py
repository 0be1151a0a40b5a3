"""The Kubernetes runtime's view of its workers (pod events become worker states) and its stopping of a job, on a
real API server; the tests play the Job controller and the kubelet (harness.Kubelet)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from kubernetes.aio import client as k8s

from tests.contract.k8s_runtime.harness import (
    JOB_ID,
    Kubelet,
    assert_states,
    container,
    crashed,
    dequeuer_exit,
    drained,
    evicted,
    failure_action,
    launch,
    queue_gone,
    ready,
    states,
    unschedulable,
    waiting,
)
from tests.helpers import assert_eventually
from thresher.core.config import Config
from thresher.core.names import EXIT_DRAINED, EXIT_TOKEN_REFUSED, EXIT_WORKER_HUNG
from thresher.core.runtime import WorkerCount, WorkerPhase
from thresher.core.runtime.base import TOKEN_REFUSED, WORKER_HUNG
from thresher.core.runtime.k8s_manifests import resource_name
from thresher.core.runtime.kubernetes import KubernetesRuntime

pytestmark = pytest.mark.timeout(60)
STOPPING = "test/kubelet-still-stopping-it"


async def test_pod_events_become_worker_states(runtime: KubernetesRuntime, kubelet: Kubelet) -> None:
    await runtime.ensure_workers(launch(), 5)
    creating = await kubelet.start_pod()
    running = await kubelet.start_pod(ready())
    evicted_pod = await kubelet.start_pod(evicted())
    crashed_pod = await kubelet.start_pod(crashed({"exitCode": 3, "reason": "Error"}))
    oom_pod = await kubelet.start_pod(crashed({"exitCode": 137, "reason": "OOMKilled"}))

    async def check() -> None:
        assert await states(runtime) == {
            creating: (WorkerPhase.PENDING, "creating"),
            running: (WorkerPhase.RUNNING, ""),
            evicted_pod: (WorkerPhase.STOPPED, "evicted (node drain or scale-down)"),
            crashed_pod: (WorkerPhase.FAILED, "api exited with code 3"),
            oom_pod: (WorkerPhase.OOM_KILLED, "api was killed for using too much memory (OOMKilled)"),
        }

    await assert_eventually(check)


async def test_a_worker_that_is_not_ready_or_cannot_start_says_why(
    runtime: KubernetesRuntime, kubelet: Kubelet
) -> None:
    await runtime.ensure_workers(launch(), 3)
    pull = {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image example/textstats:1"}}
    no_image = await kubelet.start_pod({"phase": "Pending", "initContainerStatuses": [container("api", pull)]})
    warming = await kubelet.start_pod({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]})
    draining = await kubelet.start_pod(ready())
    # Deleted, the kubelet still stopping it: a finalizer keeps it (an API server sets deletionTimestamp itself)
    await kubelet.core.patch_namespaced_pod(draining, kubelet.namespace, {"metadata": {"finalizers": [STOPPING]}})
    await kubelet.core.delete_namespaced_pod(draining, kubelet.namespace)

    async def check() -> None:
        assert await states(runtime) == {
            no_image: (WorkerPhase.PENDING, "api: ImagePullBackOff: Back-off pulling image example/textstats:1"),
            warming: (WorkerPhase.RUNNING, "not ready"),
            draining: (WorkerPhase.RUNNING, "terminating: draining its batches"),
        }

    await assert_eventually(check)


def test_a_long_api_name_still_makes_a_job_name_kubernetes_accepts() -> None:
    name = resource_name("a" * 63, JOB_ID)
    assert len(name) <= 63 and name.endswith(f"-{JOB_ID}")
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", name)


async def test_an_evicted_or_deleted_worker_is_stopped_not_crashed(
    runtime: KubernetesRuntime, kubelet: Kubelet
) -> None:
    """Spot reclaims and drains spend no restart budget (the dequeuer hands its batches back on SIGTERM)."""
    await runtime.ensure_workers(launch(), 2)
    evicted_pod = await kubelet.start_pod(ready())
    deleted_pod = await kubelet.start_pod(ready())

    await kubelet.set_status(evicted_pod, evicted())
    await kubelet.core.delete_namespaced_pod(deleted_pod, kubelet.namespace)

    async def check() -> None:
        workers = await runtime.workers(JOB_ID)
        assert [(w.phase, w.crashed) for w in workers] == [(WorkerPhase.STOPPED, False)] * 2
        assert {(w.reason, w.disrupted) for w in workers} == {("evicted (node drain or scale-down)", True),
                                                              ("deleted", False)}  # fmt: skip

    await assert_eventually(check)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (evicted, "evicted (node drain or scale-down)"),
        (drained, "the dequeuer drained on SIGTERM (e.g. a spot reclaim)"),
    ],
)
async def test_a_drained_worker_is_replaced_and_spends_no_restart_budget(
    runtime: KubernetesRuntime, kubelet: Kubelet, status: Any, reason: str
) -> None:
    # Given two workers at work
    await runtime.ensure_workers(launch(), 2)
    await kubelet.reconcile()
    first, second = await kubelet.pods()
    for pod in (first, second):
        await kubelet.set_status(pod, ready())
    # When a spot reclaim takes one: its dequeuer drains and exits EXIT_DRAINED, so its pod fails
    await kubelet.set_status(first, status())
    await kubelet.reconcile()
    # Then the Job controller ignores that failure and replaces the pod; the scheduler counts no crash
    pods = await kubelet.pods()
    [replacement] = set(pods) - {first, second}
    assert len(pods) == 3 and await kubelet.conditions() == []

    async def check() -> None:
        assert await states(runtime) == {
            first: (WorkerPhase.STOPPED, reason),
            second: (WorkerPhase.RUNNING, ""),
            replacement: (WorkerPhase.PENDING, "creating"),
        }

    await assert_eventually(check)


async def test_an_api_container_that_exits_with_the_drained_code_has_crashed(
    runtime: KubernetesRuntime, kubelet: Kubelet
) -> None:
    """The rule names the dequeuer: whatever code the API's own container exits with, it is the worker's failure."""
    await runtime.ensure_workers(launch(), 1)
    await kubelet.reconcile()
    [pod] = await kubelet.pods()
    api = container("api", {"terminated": {"exitCode": EXIT_DRAINED, "reason": "Error"}})
    status = {"phase": "Failed", "initContainerStatuses": [api], "containerStatuses": [dequeuer_exit(1)]}

    await kubelet.set_status(pod, status)

    assert failure_action(await kubelet.job(), status) == "Count"
    await assert_eventually(
        lambda: assert_states(runtime, {pod: (WorkerPhase.FAILED, f"api exited with code {EXIT_DRAINED}")})
    )


@pytest.mark.parametrize(("code", "reason"), [(EXIT_WORKER_HUNG, WORKER_HUNG), (EXIT_TOKEN_REFUSED, TOKEN_REFUSED)])
async def test_a_pod_whose_dequeuer_exited_with_a_code_of_its_own_says_why_and_counts_as_a_crash(
    runtime: KubernetesRuntime, kubelet: Kubelet, code: int, reason: str
) -> None:
    """The dequeuer exits EXIT_WORKER_HUNG once its worker answers neither a batch nor a health check, and
    EXIT_TOKEN_REFUSED once the monitor refuses its token: the pod's reason says which, as the local runtime's does,
    and it spends restart budget like any crash."""
    await runtime.ensure_workers(launch(), 1)
    await kubelet.reconcile()
    [pod] = await kubelet.pods()
    api = container("api", {"terminated": {"exitCode": 137, "reason": "Error"}})  # killed by the kubelet after grace
    status = {
        "phase": "Failed",
        "initContainerStatuses": [api],
        "containerStatuses": [dequeuer_exit(code)],
    }

    await kubelet.set_status(pod, status)

    assert failure_action(await kubelet.job(), status) == "Count"
    await assert_eventually(lambda: assert_states(runtime, {pod: (WorkerPhase.FAILED, reason)}))


async def test_a_worker_unschedulable_too_long_is_reported_stalled(
    runtime: KubernetesRuntime, kubelet: Kubelet
) -> None:
    await runtime.ensure_workers(launch(), 2)
    waiting = await kubelet.start_pod(unschedulable(since_s_ago=5))
    stalled = await kubelet.start_pod(unschedulable(since_s_ago=120))  # stalled_after_s is 60

    async def check() -> None:
        found = await states(runtime)
        assert found[waiting] == (
            WorkerPhase.PENDING,
            "unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
        )
        assert found[stalled][0] is WorkerPhase.PENDING and found[stalled][1].startswith("stalled: unschedulable for 1")

    await assert_eventually(check)


async def test_each_worker_is_counted_under_cortexs_key_for_its_pod(
    runtime: KubernetesRuntime, kubelet: Kubelet
) -> None:
    await runtime.ensure_workers(launch(), 10)
    not_ready = {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}
    oom = crashed({"exitCode": 137, "reason": "OOMKilled"})
    memory = {
        "phase": "Failed",
        "reason": "Evicted",
        "message": "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi.",
    }
    pods = {
        WorkerCount.READY: ready(),
        WorkerCount.NOT_READY: not_ready,
        WorkerCount.PENDING: unschedulable(since_s_ago=5),
        WorkerCount.STALLED: unschedulable(since_s_ago=120),  # stalled_after_s is 60 here, 15 minutes by default
        WorkerCount.ERR_IMAGE_PULL: waiting("ImagePullBackOff"),
        WorkerCount.CREATING: waiting("ContainerCreating"),
        WorkerCount.FAILED: crashed({"exitCode": 1, "reason": "Error"}),
        WorkerCount.KILLED: crashed({"exitCode": 137, "reason": "Error"}),
        WorkerCount.KILLED_OOM: oom,
        WorkerCount.SUCCEEDED: queue_gone(),
    }
    names = {await kubelet.start_pod(status): count for count, status in pods.items()}
    evicted_for_memory = await kubelet.start_pod(memory)
    evicted_by_a_drain = await kubelet.start_pod(evicted())
    names |= {evicted_for_memory: WorkerCount.KILLED_OOM, evicted_by_a_drain: WorkerCount.KILLED}

    async def check() -> None:
        assert {w.worker_id: w.count for w in await runtime.workers(JOB_ID)} == names

    await assert_eventually(check)


async def test_a_crash_looping_worker_shows_every_crash_for_the_restart_budget(
    runtime: KubernetesRuntime, kubelet: Kubelet, config: Config
) -> None:
    await runtime.ensure_workers(launch(), 1)
    assert (await kubelet.job())["spec"]["backoffLimit"] == config.runtime.max_worker_restarts

    crashed_pods: set[str] = set()
    for _ in range(config.runtime.max_worker_restarts + 1):
        await kubelet.reconcile()  # the Job controller replaces each failed pod, within the budget
        [pod] = set(await kubelet.pods()) - crashed_pods
        await kubelet.set_status(pod, crashed({"exitCode": 1, "reason": "Error"}))
        crashed_pods.add(pod)
    await kubelet.reconcile()
    assert await kubelet.conditions() == ["Failed"]

    async def check() -> None:
        crashes = [w for w in await runtime.workers(JOB_ID) if w.crashed]
        assert len(crashes) == config.runtime.max_worker_restarts + 1  # past the budget: the job ends worker_error
        assert {w.reason for w in crashes} == {"api exited with code 1"}

    await assert_eventually(check)


async def test_a_new_runtime_finds_the_workers_of_running_jobs(
    runtime: KubernetesRuntime, kubelet: Kubelet, config: Config, api: k8s.ApiClient
) -> None:
    """After a scheduler restart, crashes already spent still count (the pods are there until the Job goes)."""
    await runtime.ensure_workers(launch(), 1)
    crashed_pod = await kubelet.start_pod(crashed({"exitCode": 2, "reason": "Error"}))
    running = await kubelet.start_pod(ready())

    restarted = KubernetesRuntime(config, api_client=api)
    try:
        assert await states(restarted) == {
            crashed_pod: (WorkerPhase.FAILED, "api exited with code 2"),
            running: (WorkerPhase.RUNNING, ""),
        }
    finally:
        await restarted.close()


# --- stopping ----------------------------------------------------------------------------------------


async def test_stopping_deletes_the_job_and_returns_once_no_pod_is_left(
    runtime: KubernetesRuntime, kubelet: Kubelet
) -> None:
    await runtime.ensure_workers(launch(), 2)
    pods = [await kubelet.start_pod(ready()), await kubelet.start_pod(crashed({"exitCode": 1}))]
    # The kubelet takes a while to stop the first pod: a finalizer keeps it after its deletion, until removed
    await kubelet.core.patch_namespaced_pod(pods[0], kubelet.namespace, {"metadata": {"finalizers": [STOPPING]}})

    async def node_stops_the_pod() -> None:
        """The garbage collector deletes the Job's pods first (foreground deletion); the kubelet stops this one."""

        async def deleting() -> None:
            pod = await kubelet.core.read_namespaced_pod(pods[0], kubelet.namespace)
            assert pod.metadata.deletion_timestamp is not None

        await assert_eventually(deleting)
        await asyncio.sleep(0.5)  # the runtime must still be waiting meanwhile (checked below)
        assert not stopped.is_set(), "stop_workers returned while a pod of the job was still there"
        await kubelet.core.patch_namespaced_pod(pods[0], kubelet.namespace, {"metadata": {"finalizers": None}})

    stopped = asyncio.Event()
    node = asyncio.create_task(node_stops_the_pod())
    await runtime.stop_workers(JOB_ID, grace_s=5)
    stopped.set()
    await node

    assert await kubelet.pods() == []
    assert not (await kubelet.batch.list_namespaced_job(kubelet.namespace)).items
    assert not (await kubelet.core.list_namespaced_config_map(kubelet.namespace)).items
    assert await runtime.workers(JOB_ID) == []  # scale to zero: nothing of the job is left


async def test_stopping_a_job_without_workers_returns_at_once(runtime: KubernetesRuntime) -> None:
    await runtime.stop_workers("no-such-job", grace_s=5)
    assert await runtime.workers("no-such-job") == []
