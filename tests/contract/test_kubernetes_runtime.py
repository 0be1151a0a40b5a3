"""The Kubernetes runtime against a Kubernetes API over real HTTP on 127.0.0.1 (kmock), with the official client.

kmock stores and serves objects and watch events but runs no controller: the test plays the Job controller and the
kubelet, making pods from the Job's template and patching their status, as a cluster would. The Job controller's
rules that the design relies on (the work queue, podFailurePolicy, backoffLimit) are played from the Job's own spec.
The same runtime meets a real API server and the real Job controller in tests/kube.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import kmock
import kubernetes_validate
import pytest
from kubernetes.aio import client as k8s

from tests.helpers import assert_eventually, stack_trust
from thresher.core import trust
from thresher.core.config import Config, TlsSettings
from thresher.core.errors import InvalidRequest
from thresher.core.names import EXIT_DRAINED, EXIT_WORKER_HUNG
from thresher.core.runtime import WorkerCount, WorkerLaunch, WorkerPhase, open_runtime
from thresher.core.runtime.base import WORKER_HUNG, dequeuer_argv
from thresher.core.runtime.k8s_manifests import resource_name
from thresher.core.runtime.kubernetes import KubernetesRuntime
from thresher.v1 import jobs_pb2

pytestmark = pytest.mark.timeout(60)
NAMESPACE = "batch"
SECRET = "not-for-pods-0d1f"
JOB_ID = "7fffe8c2a1b3c4d5e6f7"
K8S_VERSIONS = ("1.32.0", kubernetes_validate.utils.latest_version())


class Cluster(kmock.KubernetesEmulator):  # type: ignore[misc]
    """kmock 0.8 plus what a real API server does and the runtime relies on: uids, timestamps, resource versions,
    the namespace from the URL, and label selectors on lists and watches."""

    _versions = itertools.count(1)

    async def _handle(self, request: Any) -> Any:
        if request.resource is not None and request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            meta.setdefault("namespace", request.namespace)
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_iso(time.time()))
        if request.resource is not None and isinstance(request.data, dict):
            request.data.setdefault("metadata", {})["resourceVersion"] = str(next(self._versions))
        return await super()._handle(request)

    async def _serve_list(self, request: Any) -> Any:
        listing = await super()._serve_list(request)
        listing["items"] = [item for item in listing["items"] if _selected(request, item)]
        return listing

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        async for event in super()._serve_watch(request):
            if not isinstance(event, dict) or _selected(request, event.get("object", {})):
                yield event


def _selected(request: Any, item: dict[str, Any]) -> bool:
    """Equality-based label selectors (`a=b,c=d`): the only kind the runtime uses."""
    wanted = [part.split("=", 1) for part in request.params.get("labelSelector", "").split(",") if part]
    labels = item.get("metadata", {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in wanted)


class Kubelet:
    """Plays the Job controller (pods from the Job's template) and the kubelet (pod status) through the API."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.core = k8s.CoreV1Api(api)
        self.batch = k8s.BatchV1Api(api)
        self._suffixes = itertools.count()

    async def job(self) -> dict[str, Any]:
        job = await self.batch.read_namespaced_job(resource_name("textstats", JOB_ID), NAMESPACE)
        return dict(self.batch.api_client.sanitize_for_serialization(job))

    async def start_pod(self, status: dict[str, Any] | None = None) -> str:
        job = await self.job()
        template = job["spec"]["template"]
        name = f"{job['metadata']['name']}-{next(self._suffixes):05d}"
        meta = {
            "name": name,
            "namespace": NAMESPACE,
            "labels": {**template["metadata"]["labels"], "job-name": job["metadata"]["name"]},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"],
                                 "uid": job["metadata"]["uid"], "controller": True}],
        }  # fmt: skip
        await self.core.create_namespaced_pod(NAMESPACE, {"metadata": meta, "spec": template["spec"]})
        if status:
            await self.set_status(name, status)
        return name

    async def set_status(self, pod: str, status: dict[str, Any]) -> None:
        await self.core.patch_namespaced_pod_status(pod, NAMESPACE, {"status": status})

    async def pods(self) -> list[str]:
        return [pod.metadata.name for pod in (await self.core.list_namespaced_pod(NAMESPACE)).items]

    async def reconcile(self) -> None:
        """One pass of the Job controller, with those of its rules that the runtime relies on: failed pods count
        toward backoffLimit unless the podFailurePolicy ignores them; with no `completions` (a work queue), no new
        pod is made once one pod succeeded, and the Job is Complete when the others have ended too."""
        job = await self.job()
        name = job["metadata"]["name"]
        pods = [
            self.core.api_client.sanitize_for_serialization(p)
            for p in (await self.core.list_namespaced_pod(NAMESPACE)).items
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
        status = {"conditions": [{"type": kind, "status": "True"}]}
        await self.batch.patch_namespaced_job_status(job, NAMESPACE, {"status": status})

    async def conditions(self) -> list[str]:
        return [c["type"] for c in (await self.job()).get("status", {}).get("conditions") or []]


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
    return {"phase": "Pending", "conditions": [{**condition, "lastTransitionTime": _iso(time.time() - since_s_ago)}]}


def evicted() -> dict[str, Any]:
    """A node drain (a spot reclaim's, too): the eviction marks the pod, its dequeuer drains on SIGTERM."""
    disruption = {"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI"}
    return {**drained(), "conditions": [disruption]}


def drained() -> dict[str, Any]:
    """SIGTERM with no disruption recorded (a pod deleted by hand or by a spot handler): the dequeuer drained, then
    the kubelet stopped the worker (143)."""
    api = _container("api", {"terminated": {"exitCode": 143, "reason": "Error"}})
    return {"phase": "Failed", "initContainerStatuses": [api], "containerStatuses": [_dequeuer_exit(EXIT_DRAINED)]}


def queue_gone() -> dict[str, Any]:
    return {"phase": "Succeeded", "containerStatuses": [_dequeuer_exit(0)]}


def crashed(api_exit: dict[str, Any]) -> dict[str, Any]:
    """The API container ended (then was restarted in place); its dequeuer lost it and exited 1."""
    api = _container("api", {"terminated": {"exitCode": 143}}, last={"terminated": api_exit})
    return {"phase": "Failed", "initContainerStatuses": [api], "containerStatuses": [_dequeuer_exit(1)]}


def _dequeuer_exit(code: int) -> dict[str, Any]:
    return _container("dequeuer", {"terminated": {"exitCode": code, "reason": "Error" if code else "Completed"}})


def _container(name: str, state: dict[str, Any], last: dict[str, Any] | None = None) -> dict[str, Any]:
    status = {"name": name, "state": state, "image": "image", "imageID": "sha256:0", "ready": False, "restartCount": 0}
    if last:
        status.update(lastState=last, restartCount=1)
    return status


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
async def api() -> AsyncIterator[k8s.ApiClient]:
    async with Cluster() as cluster, kmock.Server(cluster) as server:
        for resource, kind in (("v1/pods", "Pod"), ("v1/configmaps", "ConfigMap"), ("batch/v1/jobs", "Job")):
            cluster.resources[resource] = kmock.ResourceInfo(kind=kind, namespaced=True)
        async with k8s.ApiClient(k8s.Configuration(host=str(server.url).rstrip("/"))) as api_client:
            yield api_client


@pytest.fixture
def config(tmp_path: Any) -> Config:
    config = Config(data_dir=tmp_path)
    config.queue.backend = "sqs"
    config.addresses.monitor = "thresher-monitor:7003"
    config.runtime.max_worker_restarts = 2
    config.kubernetes.namespace = NAMESPACE
    config.kubernetes.image = "registry.example/thresher:1.0"
    config.kubernetes.stalled_after_s = 60
    for section in dataclasses.fields(config):  # whatever credentials the config holds must not reach a pod
        value = getattr(config, section.name)
        for field in dataclasses.fields(value) if dataclasses.is_dataclass(value) else ():
            # kubernetes.env_secret is only a name, auth.internal_secret_file a file's
            if "secret" in field.name and section.name != "kubernetes" and not field.name.endswith("_file"):
                setattr(value, field.name, SECRET)
    stack_trust(config)
    return config


@pytest.fixture
async def runtime(config: Config, api: k8s.ApiClient) -> AsyncIterator[KubernetesRuntime]:
    runtime = KubernetesRuntime(config, api_client=api)
    yield runtime
    await runtime.close()


@pytest.fixture
def kubelet(api: k8s.ApiClient) -> Kubelet:
    return Kubelet(api)


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
        "start_time": _iso(time.time() - submitted_s_ago),
    }
    return WorkerLaunch(JOB_ID, api, f"thresher_textstats_{JOB_ID}", spec, max_receive_count=3, batch_timeout_s=60.0)


async def states(runtime: KubernetesRuntime) -> dict[str, tuple[WorkerPhase, str]]:
    return {s.worker_id: (s.phase, s.reason) for s in await runtime.workers(JOB_ID)}


# --- creating workers ------------------------------------------------------------------------------


async def test_kubernetes_runtime_is_chosen_by_configuration(config: Config) -> None:
    config.runtime.backend = "kubernetes"
    runtime = open_runtime(config)
    assert isinstance(runtime, KubernetesRuntime) and runtime.namespace == NAMESPACE
    await runtime.close()


async def test_a_job_becomes_one_kubernetes_job_with_a_pod_per_worker(
    runtime: KubernetesRuntime, kubelet: Kubelet
) -> None:
    await runtime.ensure_workers(launch(), 3)

    job = await kubelet.job()
    assert job["metadata"]["name"] == f"textstats-{JOB_ID}"
    assert job["metadata"]["labels"] == {
        "thresher.dev/api": "textstats",
        "thresher.dev/job": JOB_ID,
        "thresher.dev/role": "worker",
    }
    spec = job["spec"]
    assert spec["parallelism"] == 3 and "completions" not in spec
    assert spec["backoffLimit"] == 2
    assert spec["podFailurePolicy"]["rules"] == [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        {"action": "Ignore", "onExitCodes": {"containerName": "dequeuer", "operator": "In", "values": [EXIT_DRAINED]}},
    ]
    assert 3000 - 5 <= spec["activeDeadlineSeconds"] <= 3000  # the timeout less the 600 s since submission
    assert spec["template"]["metadata"]["labels"] == job["metadata"]["labels"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"


async def test_the_worker_is_a_native_sidecar_and_the_dequeuer_the_main_container(
    runtime: KubernetesRuntime, kubelet: Kubelet, config: Config
) -> None:
    """So the kubelet stops the dequeuer first (it drains while its worker still answers) and the worker last."""
    await runtime.ensure_workers(launch(), 1)

    pod = (await kubelet.job())["spec"]["template"]["spec"]
    [api] = pod["initContainers"]
    assert api["restartPolicy"] == "Always"
    assert (api["name"], api["image"], api["command"], api["args"]) == (
        "api",
        "example/textstats:1",
        ["python", "worker.py"],
        ["-v"],
    )
    assert {"name": "MODE", "value": "x"} in api["env"]
    assert {"name": "CORTEX_PORT", "value": "8080"} in api["env"]
    assert {"name": "THRESHER_JOB_SPEC", "value": "/cortex/spec/job.json"} in api["env"]
    assert api["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    assert {"name": "job-spec", "mountPath": "/cortex/spec", "readOnly": True} in api["volumeMounts"]
    assert {"name": "job-spec", "configMap": {"name": f"textstats-{JOB_ID}"}} in pod["volumes"]
    [dequeuer] = pod["containers"]
    assert dequeuer["name"] == "dequeuer" and dequeuer["image"] == "registry.example/thresher:1.0"
    assert dequeuer["command"] + dequeuer["args"] == dequeuer_argv(launch(), "$(THRESHER_WORKER_ID)", 8080, "python")
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in dequeuer["env"]}
    assert env["THRESHER_WORKER_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}  # the worker id is the pod's name
    assert env["THRESHER_QUEUE_BACKEND"] == "sqs" and env["THRESHER_ADDRESSES_MONITOR"] == "thresher-monitor:7003"
    assert SECRET not in json.dumps(pod)
    # Its token reports for this job's workers only (pod names are not known yet); the stack secret stays out
    assert trust.load(config).peer(env["THRESHER_WORKER_TOKEN"]) == trust.Peer(trust.DEQUEUER, JOB_ID, "*")
    assert trust.secret_path(config).read_text().strip() not in json.dumps(pod)


async def test_the_dequeuer_is_probed_on_its_admin_port_and_every_container_is_locked_down(
    runtime: KubernetesRuntime, kubelet: Kubelet, config: Config
) -> None:
    await runtime.ensure_workers(launch(), 1)

    pod = (await kubelet.job())["spec"]["template"]["spec"]
    [api], [dequeuer] = pod["initContainers"], pod["containers"]
    env = {e["name"]: e.get("value") for e in dequeuer["env"]}
    assert env["THRESHER_DEQUEUER_ADMIN_ADDRESS"] == "0.0.0.0:15000"  # the kubelet probes it from the node
    assert dequeuer["ports"] == [{"name": "admin", "containerPort": 15000}]
    for probe in ("startupProbe", "readinessProbe"):
        assert dequeuer[probe]["httpGet"] == {"path": "/healthz", "port": "admin"}
    startup = dequeuer["startupProbe"]
    # The dequeuer gives up on a worker that never gets ready by itself, saying why, before the kubelet would
    assert startup["periodSeconds"] * startup["failureThreshold"] > config.dequeuer.readiness_timeout_s
    assert dequeuer["securityContext"] == {
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert {"name": "tmp", "mountPath": "/tmp"} in dequeuer["volumeMounts"]
    # The API's image keeps its own user and a writable root file system, with no way to gain privileges
    assert api["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def gpu_pool_settings(config: Config) -> None:
    k = config.kubernetes
    k.worker_cpu, k.worker_memory = "500m", "1Gi"
    k.node_selector, k.preferred_nodes = "thresher.dev/pool=workers", "eks.amazonaws.com/capacityType=SPOT"
    k.tolerations = "thresher.dev/workers:NoSchedule"


async def test_an_api_without_compute_or_placement_gets_the_cluster_defaults(
    runtime: KubernetesRuntime, kubelet: Kubelet, config: Config
) -> None:
    gpu_pool_settings(config)

    await runtime.ensure_workers(launch(), 1)

    pod = (await kubelet.job())["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"memory": "1Gi"},
    }
    assert pod["nodeSelector"] == {"thresher.dev/pool": "workers"}
    assert pod["tolerations"] == [{"key": "thresher.dev/workers", "operator": "Exists", "effect": "NoSchedule"}]
    spot = {"matchExpressions": [{"key": "eks.amazonaws.com/capacityType", "operator": "In", "values": ["SPOT"]}]}
    assert pod["affinity"] == {
        "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "preference": spot}]}
    }


async def test_an_apis_own_compute_and_placement_replace_the_cluster_defaults(
    runtime: KubernetesRuntime, kubelet: Kubelet, config: Config
) -> None:
    gpu_pool_settings(config)
    gpu = launch()
    gpu.api.compute.CopyFrom(jobs_pb2.Compute(cpu="4", gpu=1))  # memory: the default's
    gpu.api.node_groups.extend(["gpu-spot", "gpu-on-demand"])
    gpu.api.node_selector["thresher.dev/pool"] = "gpu"
    gpu.api.tolerations.append(jobs_pb2.Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"))

    await runtime.ensure_workers(gpu, 1)

    job = await kubelet.job()
    pod = job["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["resources"] == {
        "requests": {"cpu": "4", "memory": "1Gi"},
        "limits": {"memory": "1Gi", "nvidia.com/gpu": "1"},
    }
    assert pod["nodeSelector"] == {"thresher.dev/pool": "gpu"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    affinity = pod["affinity"]["nodeAffinity"]
    groups = {"key": "eks.amazonaws.com/nodegroup", "operator": "In", "values": ["gpu-spot", "gpu-on-demand"]}
    assert affinity["requiredDuringSchedulingIgnoredDuringExecution"] == {
        "nodeSelectorTerms": [{"matchExpressions": [groups]}]
    }
    preferred = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
    weights = {p["preference"]["matchExpressions"][0]["values"][0]: p["weight"] for p in preferred}
    assert weights == {"gpu-spot": 100, "gpu-on-demand": 99, "SPOT": 100}  # the first group first, spot first
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)


async def test_with_tls_only_the_dequeuer_gets_the_workers_client_certificate(
    runtime: KubernetesRuntime, kubelet: Kubelet, config: Config
) -> None:
    config.tls = TlsSettings("/srv/scheduler/ca.pem", "/srv/scheduler/cert.pem", "/srv/scheduler/key.pem")
    config.kubernetes.tls_secret = "thresher-worker-tls"

    await runtime.ensure_workers(launch(), 1)

    pod = (await kubelet.job())["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": "thresher-worker-tls"}} in pod["volumes"]
    [api], [dequeuer] = pod["initContainers"], pod["containers"]
    assert {"name": "tls", "mountPath": "/etc/thresher/tls", "readOnly": True} in dequeuer["volumeMounts"]
    assert all(mount["name"] != "tls" for mount in api["volumeMounts"])  # the API's code never sees the key
    env = {e["name"]: e.get("value") for e in dequeuer["env"]}
    assert [env[f"THRESHER_TLS_{name}_FILE"] for name in ("CA", "CERT", "KEY")] == [
        "/etc/thresher/tls/ca.crt",
        "/etc/thresher/tls/tls.crt",
        "/etc/thresher/tls/tls.key",
    ]


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("worker_memory", "512m", "thousandths of a byte; use Mi or Gi"),
        ("worker_cpu", "lots", "must be a Kubernetes quantity above zero"),
        ("tolerations", "gpu:NoSchedul", r"expected key\[=value\]:Effect \(NoSchedule, PreferNoSchedule, NoExecute\)"),
        ("node_selector", "pool", "expected key=value pairs"),
        ("node_selector", "pool=a b", "'a b' is not a Kubernetes label value"),
    ],
)
def test_bad_kubernetes_settings_are_refused_when_the_runtime_starts(
    config: Config, setting: str, value: str, message: str
) -> None:
    setattr(config.kubernetes, setting, value)
    with pytest.raises(InvalidRequest, match=message):
        KubernetesRuntime(config)


def test_tls_without_a_secret_for_the_workers_is_refused_when_the_runtime_starts(config: Config) -> None:
    config.tls = TlsSettings("/tls/ca.crt", "/tls/tls.crt", "/tls/tls.key")
    with pytest.raises(InvalidRequest, match="set kubernetes.tls_secret"):
        KubernetesRuntime(config)


async def test_an_api_on_the_dequeuers_admin_port_is_refused(runtime: KubernetesRuntime) -> None:
    clash = launch()
    clash.api.port = 15000
    with pytest.raises(InvalidRequest, match="port 15000 is the dequeuer's on Kubernetes"):
        await runtime.ensure_workers(clash, 1)


async def test_the_job_spec_is_a_config_map_owned_by_the_job_and_updated_in_place(
    runtime: KubernetesRuntime, kubelet: Kubelet
) -> None:
    await runtime.ensure_workers(launch(), 1)
    job = await kubelet.job()
    config_map = await kubelet.core.read_namespaced_config_map(f"textstats-{JOB_ID}", NAMESPACE)
    assert json.loads(config_map.data["job.json"])["job_id"] == JOB_ID
    [owner] = config_map.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("Job", job["metadata"]["name"], job["metadata"]["uid"])

    await runtime.update_job_spec(JOB_ID, {**launch().job_spec, "total_batch_count": 20})

    config_map = await kubelet.core.read_namespaced_config_map(f"textstats-{JOB_ID}", NAMESPACE)
    assert json.loads(config_map.data["job.json"])["total_batch_count"] == 20


async def test_ensuring_workers_again_keeps_the_job_and_follows_the_count(
    runtime: KubernetesRuntime, kubelet: Kubelet
) -> None:
    await runtime.ensure_workers(launch(), 2)
    first = await kubelet.job()

    await runtime.ensure_workers(launch(), 2)
    await runtime.ensure_workers(launch(), 4)

    again = await kubelet.job()
    assert again["metadata"]["uid"] == first["metadata"]["uid"]
    assert again["spec"]["parallelism"] == 4


async def test_a_finished_job_is_replaced_when_workers_are_wanted_again(
    runtime: KubernetesRuntime, kubelet: Kubelet
) -> None:
    """A pod that exits 0 ends the work queue: no new pod, and the Job completes once the others end. That is why
    only a dequeuer whose queue is gone exits 0; should the job still go on, a new Job takes over."""
    await runtime.ensure_workers(launch(), 2)
    first = await kubelet.job()
    await kubelet.reconcile()
    succeeded, other = await kubelet.pods()
    await kubelet.set_status(succeeded, queue_gone())
    await kubelet.reconcile()
    assert await kubelet.pods() == [succeeded, other] and await kubelet.conditions() == []
    await kubelet.set_status(other, drained())
    await kubelet.reconcile()
    assert await kubelet.conditions() == ["Complete"]

    await runtime.ensure_workers(launch(), 2)

    assert (await kubelet.job())["metadata"]["uid"] != first["metadata"]["uid"]


async def test_the_objects_made_validate_against_the_kubernetes_schema(
    runtime: KubernetesRuntime, kubelet: Kubelet
) -> None:
    await runtime.ensure_workers(launch(), 2)
    job = await kubelet.job()
    config_map = kubelet.core.api_client.sanitize_for_serialization(
        await kubelet.core.read_namespaced_config_map(f"textstats-{JOB_ID}", NAMESPACE)
    )
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)
        kubernetes_validate.validate(config_map, version, strict=True)


async def test_a_job_without_timeout_has_no_deadline(runtime: KubernetesRuntime, kubelet: Kubelet) -> None:
    await runtime.ensure_workers(launch(timeout_s=None), 1)
    assert "activeDeadlineSeconds" not in (await kubelet.job())["spec"]


# --- watching workers ------------------------------------------------------------------------------


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
    no_image = await kubelet.start_pod({"phase": "Pending", "initContainerStatuses": [_container("api", pull)]})
    warming = await kubelet.start_pod({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]})
    draining = await kubelet.start_pod(ready())
    terminating = {"deletionTimestamp": _iso(time.time()), "finalizers": ["test/kubelet-still-stopping-it"]}
    await kubelet.core.patch_namespaced_pod(draining, NAMESPACE, {"metadata": terminating})

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
    await kubelet.core.delete_namespaced_pod(deleted_pod, NAMESPACE)

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
    api = _container("api", {"terminated": {"exitCode": EXIT_DRAINED, "reason": "Error"}})
    status = {"phase": "Failed", "initContainerStatuses": [api], "containerStatuses": [_dequeuer_exit(1)]}

    await kubelet.set_status(pod, status)

    assert failure_action(await kubelet.job(), status) == "Count"
    await assert_eventually(
        lambda: _assert_states(runtime, {pod: (WorkerPhase.FAILED, f"api exited with code {EXIT_DRAINED}")})
    )


async def test_a_pod_whose_dequeuer_found_its_worker_hung_says_so_and_counts_as_a_crash(
    runtime: KubernetesRuntime, kubelet: Kubelet
) -> None:
    """The dequeuer exits EXIT_WORKER_HUNG once its worker answers neither a batch nor a health check: the pod's
    reason names the hung worker, as the local runtime's does, and it spends restart budget like any crash."""
    await runtime.ensure_workers(launch(), 1)
    await kubelet.reconcile()
    [pod] = await kubelet.pods()
    api = _container("api", {"terminated": {"exitCode": 137, "reason": "Error"}})  # killed by the kubelet after grace
    status = {
        "phase": "Failed",
        "initContainerStatuses": [api],
        "containerStatuses": [_dequeuer_exit(EXIT_WORKER_HUNG)],
    }

    await kubelet.set_status(pod, status)

    assert failure_action(await kubelet.job(), status) == "Count"
    await assert_eventually(lambda: _assert_states(runtime, {pod: (WorkerPhase.FAILED, WORKER_HUNG)}))


async def _assert_states(runtime: KubernetesRuntime, expected: dict[str, tuple[WorkerPhase, str]]) -> None:
    assert await states(runtime) == expected


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


def waiting(reason: str) -> dict[str, Any]:
    """Scheduled, the API's container not started yet (`reason`: pulling its image, creating it, ...)."""
    api = _container("api", {"waiting": {"reason": reason, "message": "m"}})
    return {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}], "containerStatuses": [api]}


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

    async def garbage_collector() -> None:
        """Kubernetes' foreground deletion: the Job's pods go (after their grace period), then the Job."""

        async def job_deleted() -> None:
            assert not (await kubelet.batch.list_namespaced_job(NAMESPACE)).items

        await assert_eventually(job_deleted)
        for pod in pods:
            await kubelet.core.delete_namespaced_pod(pod, NAMESPACE)

    collector = asyncio.create_task(garbage_collector())
    await runtime.stop_workers(JOB_ID, grace_s=5)
    await collector

    assert await kubelet.pods() == []
    assert not (await kubelet.core.list_namespaced_config_map(NAMESPACE)).items
    assert await runtime.workers(JOB_ID) == []  # scale to zero: nothing of the job is left


async def test_stopping_a_job_without_workers_returns_at_once(runtime: KubernetesRuntime) -> None:
    await runtime.stop_workers("no-such-job", grace_s=5)
    assert await runtime.workers("no-such-job") == []
