"""The objects the Kubernetes runtime makes for a job (a Job, its pod template, a ConfigMap), as a real API server
stores them."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest

from tests.contract.k8s_runtime.harness import (
    JOB_ID,
    K8S_VERSIONS,
    SECRET,
    Kubelet,
    drained,
    launch,
    queue_gone,
)
from thresher.core import trust
from thresher.core.config import Config, TlsSettings
from thresher.core.errors import InvalidRequest
from thresher.core.names import EXIT_DRAINED, EXIT_IDLE
from thresher.core.runtime import open_runtime
from thresher.core.runtime.base import dequeuer_argv
from thresher.core.runtime.kubernetes import KubernetesRuntime
from thresher.v1 import jobs_pb2

pytestmark = pytest.mark.timeout(60)


async def test_kubernetes_runtime_is_chosen_by_configuration(config: Config) -> None:
    config.runtime.backend = "kubernetes"
    runtime = open_runtime(config)
    assert isinstance(runtime, KubernetesRuntime) and runtime.namespace == config.kubernetes.namespace
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
        {
            "action": "Ignore",
            "onExitCodes": {"containerName": "dequeuer", "operator": "In", "values": [EXIT_DRAINED, EXIT_IDLE]},
        },
    ]
    assert 3000 - 5 <= spec["activeDeadlineSeconds"] <= 3000  # the timeout less the 600 s since submission
    # (the API server adds its own labels to the template: the Job's name and uid, that its selector matches)
    assert spec["template"]["metadata"]["labels"].items() >= job["metadata"]["labels"].items()
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
    # (here and below, with the API server's defaults: the probe's scheme, the port's protocol, a volume's mode)
    assert api["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080, "scheme": "HTTP"}
    assert {"name": "job-spec", "mountPath": "/cortex/spec", "readOnly": True} in api["volumeMounts"]
    assert {"name": "job-spec", "configMap": {"name": f"textstats-{JOB_ID}", "defaultMode": 0o644}} in pod["volumes"]
    [dequeuer] = pod["containers"]
    assert dequeuer["name"] == "dequeuer" and dequeuer["image"] == "registry.example/thresher:1.0"
    assert dequeuer["command"] + dequeuer["args"] == dequeuer_argv(launch(), "$(THRESHER_WORKER_ID)", 8080, "python")
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in dequeuer["env"]}
    assert env["THRESHER_WORKER_ID"] == {
        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}
    }  # the worker id is the pod's name
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
    assert dequeuer["ports"] == [{"name": "admin", "containerPort": 15000, "protocol": "TCP"}]
    for probe in ("startupProbe", "readinessProbe"):
        assert dequeuer[probe]["httpGet"] == {"path": "/healthz", "port": "admin", "scheme": "HTTP"}
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
    assert {"name": "tls", "secret": {"secretName": "thresher-worker-tls", "defaultMode": 0o644}} in pod["volumes"]
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
    config_map = await kubelet.core.read_namespaced_config_map(f"textstats-{JOB_ID}", kubelet.namespace)
    assert json.loads(config_map.data["job.json"])["job_id"] == JOB_ID
    [owner] = config_map.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("Job", job["metadata"]["name"], job["metadata"]["uid"])

    await runtime.update_job_spec(JOB_ID, {**launch().job_spec, "total_batch_count": 20})

    config_map = await kubelet.core.read_namespaced_config_map(f"textstats-{JOB_ID}", kubelet.namespace)
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

    again = await kubelet.job()
    assert again["metadata"]["uid"] != first["metadata"]["uid"]
    # The new Job has a job spec of its own (the garbage collector takes the old Job's away, in its own time)
    config_map = await kubelet.core.read_namespaced_config_map(f"textstats-{JOB_ID}", kubelet.namespace)
    assert [owner.uid for owner in config_map.metadata.owner_references] == [again["metadata"]["uid"]]


async def test_the_objects_made_validate_against_the_kubernetes_schema(
    runtime: KubernetesRuntime, kubelet: Kubelet
) -> None:
    await runtime.ensure_workers(launch(), 2)
    job = await kubelet.job()
    config_map = kubelet.core.api_client.sanitize_for_serialization(
        await kubelet.core.read_namespaced_config_map(f"textstats-{JOB_ID}", kubelet.namespace)
    )
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)
        kubernetes_validate.validate(config_map, version, strict=True)


async def test_a_job_without_timeout_has_no_deadline(runtime: KubernetesRuntime, kubelet: Kubelet) -> None:
    await runtime.ensure_workers(launch(timeout_s=None), 1)
    assert "activeDeadlineSeconds" not in (await kubelet.job())["spec"]
