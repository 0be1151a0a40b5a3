"""The harness of the Kubernetes runtime's contract tests: the Job controller played from the Job's own spec, the
pod statuses a kubelet reports, and the launch the scheduler asks for."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime
from typing import Any

import kubernetes_validate
from kubernetes.aio import client as k8s

from thresher.core.names import EXIT_DRAINED
from thresher.core.runtime import WorkerLaunch, WorkerPhase
from thresher.core.runtime.k8s_manifests import resource_name
from thresher.core.runtime.kubernetes import KubernetesRuntime
from thresher.v1 import jobs_pb2

SECRET = "not-for-pods-0d1f"
JOB_ID = "7fffe8c2a1b3c4d5e6f7"
FINAL_CONDITIONS = ("Complete", "Failed")
K8S_VERSIONS = ("1.32.0", kubernetes_validate.utils.latest_version())


class Kubelet:
    """Plays the Job controller (pods from the Job's template) and the kubelet (pod status) through the API."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.core = k8s.CoreV1Api(api)
        self.batch = k8s.BatchV1Api(api)
        self._suffixes = itertools.count()

    async def job(self) -> dict[str, Any]:
        job = await self.batch.read_namespaced_job(resource_name("textstats", JOB_ID), self.namespace)
        return dict(self.batch.api_client.sanitize_for_serialization(job))

    async def start_pod(self, status: dict[str, Any] | None = None) -> str:
        job = await self.job()
        template = job["spec"]["template"]
        name = f"{job['metadata']['name']}-{next(self._suffixes):05d}"
        meta = {
            "name": name,
            "namespace": self.namespace,
            "labels": {**template["metadata"]["labels"], "job-name": job["metadata"]["name"]},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"],
                                 "uid": job["metadata"]["uid"], "controller": True}],
        }  # fmt: skip
        await self.core.create_namespaced_pod(self.namespace, {"metadata": meta, "spec": template["spec"]})
        if status:
            await self.set_status(name, status)
        return name

    async def set_status(self, pod: str, status: dict[str, Any]) -> None:
        await self.core.patch_namespaced_pod_status(pod, self.namespace, {"status": status})

    async def pods(self) -> list[str]:
        return [pod.metadata.name for pod in (await self.core.list_namespaced_pod(self.namespace)).items]

    async def reconcile(self) -> None:
        """One pass of the Job controller, with those of its rules that the runtime relies on: failed pods count
        toward backoffLimit unless the podFailurePolicy ignores them; with no `completions` (a work queue), no new
        pod is made once one pod succeeded, and the Job is Complete when the others have ended too."""
        job = await self.job()
        name = job["metadata"]["name"]
        pods = [
            self.core.api_client.sanitize_for_serialization(p)
            for p in (await self.core.list_namespaced_pod(self.namespace)).items
        ]
        statuses = [p.get("status") or {} for p in pods if p["metadata"]["labels"].get("job-name") == name]
        phases = [status.get("phase") for status in statuses]
        counted = sum(failure_action(job, status) == "Count" for status in statuses if status.get("phase") == "Failed")
        active = sum(phase not in ("Succeeded", "Failed") for phase in phases)
        if counted > job["spec"]["backoffLimit"]:
            await self._condition(name, "Failed")
        elif "Succeeded" in phases:
            if not active:
                await self._condition(name, "Complete")
        else:
            for _ in range(job["spec"]["parallelism"] - active):
                await self.start_pod()

    async def _condition(self, job: str, kind: str) -> None:
        """Finish the Job as its controller does: an API server wants the condition that leads to the final one
        first (SuccessCriteriaMet, FailureTarget), a start time, and a completion time for a Complete Job."""
        now = iso(time.time())
        leading = {"Complete": "SuccessCriteriaMet", "Failed": "FailureTarget"}[kind]
        conditions = [{"type": t, "status": "True", "lastTransitionTime": now} for t in (leading, kind)]
        status = {"startTime": now, "conditions": conditions} | ({"completionTime": now} if kind == "Complete" else {})
        await self.batch.patch_namespaced_job_status(job, self.namespace, {"status": status})

    async def conditions(self) -> list[str]:
        """The Job's final conditions (Complete, Failed), if any."""
        found = (await self.job()).get("status", {}).get("conditions") or []
        return [c["type"] for c in found if c["type"] in FINAL_CONDITIONS]


def failure_action(job: dict[str, Any], status: dict[str, Any]) -> str:
    """The action of the first podFailurePolicy rule that a failed pod matches, else Count (as Kubernetes decides)."""
    for rule in job["spec"].get("podFailurePolicy", {}).get("rules", []):
        if "onPodConditions" in rule:
            wanted = {(c["type"], c["status"]) for c in rule["onPodConditions"]}
            if wanted & {(c["type"], c["status"]) for c in status.get("conditions") or []}:
                return str(rule["action"])
        else:
            on = rule["onExitCodes"]
            assert on["operator"] == "In"
            containers = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
            codes = {
                c["state"]["terminated"]["exitCode"]
                for c in containers
                if "terminated" in c["state"] and c["name"] == on.get("containerName", c["name"])
            }
            if codes & (set(on["values"]) - {0}):  # exit code 0 never matches
                return str(rule["action"])
    return "Count"


# --- pod statuses, as the kubelet reports them -------------------------------------------------


def ready() -> dict[str, Any]:
    conditions = [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}]
    return {"phase": "Running", "conditions": conditions}


def unschedulable(since_s_ago: float) -> dict[str, Any]:
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
    return {"phase": "Pending", "conditions": [{**condition, "lastTransitionTime": iso(time.time() - since_s_ago)}]}


def evicted() -> dict[str, Any]:
    """A node drain (a spot reclaim's, too): the eviction marks the pod, its dequeuer drains on SIGTERM."""
    disruption = {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}
    return {**drained(), "conditions": [disruption]}


def drained() -> dict[str, Any]:
    """SIGTERM with no disruption recorded (a pod deleted by hand or by a spot handler): the dequeuer drained, then
    the kubelet stopped the worker (143)."""
    api = container("api", {"terminated": {"exitCode": 143, "reason": "Error"}})
    return {"phase": "Failed", "initContainerStatuses": [api], "containerStatuses": [dequeuer_exit(EXIT_DRAINED)]}


def queue_gone() -> dict[str, Any]:
    return {"phase": "Succeeded", "containerStatuses": [dequeuer_exit(0)]}


def crashed(api_exit: dict[str, Any]) -> dict[str, Any]:
    """The API container ended (then was restarted in place); its dequeuer lost it and exited 1."""
    api = container("api", {"terminated": {"exitCode": 143}}, last={"terminated": api_exit})
    return {"phase": "Failed", "initContainerStatuses": [api], "containerStatuses": [dequeuer_exit(1)]}


def dequeuer_exit(code: int) -> dict[str, Any]:
    return container("dequeuer", {"terminated": {"exitCode": code, "reason": "Error" if code else "Completed"}})


def container(name: str, state: dict[str, Any], last: dict[str, Any] | None = None) -> dict[str, Any]:
    status = {"name": name, "state": state, "image": "image", "imageID": "sha256:0", "ready": False, "restartCount": 0}
    if last:
        status.update(lastState=last, restartCount=1)
    return status


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def waiting(reason: str) -> dict[str, Any]:
    """Scheduled, the API's container not started yet (`reason`: pulling its image, creating it, ...)."""
    api = container("api", {"waiting": {"reason": reason, "message": "m"}})
    return {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}], "containerStatuses": [api]}


def launch(timeout_s: int | None = 3600, submitted_s_ago: float = 600) -> WorkerLaunch:
    api = jobs_pb2.ApiSpec(name="textstats", port=8080, readiness_path="/healthz")
    api.containers.append(
        jobs_pb2.Container(
            name="api", image="example/textstats:1", command=["python", "worker.py"], args=["-v"], env={"MODE": "x"}
        )
    )
    spec = {
        "job_id": JOB_ID,
        "api_name": "textstats",
        "timeout": timeout_s,
        "start_time": iso(time.time() - submitted_s_ago),
    }
    return WorkerLaunch(JOB_ID, api, f"thresher_textstats_{JOB_ID}", spec, max_receive_count=3, batch_timeout_s=60.0)


async def states(runtime: KubernetesRuntime) -> dict[str, tuple[WorkerPhase, str]]:
    return {s.worker_id: (s.phase, s.reason) for s in await runtime.workers(JOB_ID)}


async def assert_states(runtime: KubernetesRuntime, expected: dict[str, tuple[WorkerPhase, str]]) -> None:
    assert await states(runtime) == expected
