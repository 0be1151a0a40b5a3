"""The Kubernetes objects of one job's workers, as plain dicts: pure functions, no API calls.

A worker is one pod of the job's `batch/v1` Job. The API's containers run as native sidecars (init containers
with `restartPolicy: Always`) and the dequeuer is the pod's one main container. That order is what makes the
pod behave: the worker starts first and stops last, so on eviction, preemption or `stop` the dequeuer gets
SIGTERM while its worker still answers, finishes or releases its batch, and exits; the pod ends when the
dequeuer does. A worker that dies makes the dequeuer exit 1 (worker lost), so the pod fails and counts toward
`backoffLimit`; disruptions never do, nor does a dequeuer that drained on SIGTERM (`podFailurePolicy`).

The Job has no `completions` (the work-queue pattern): once one pod succeeds, the Job controller makes no new pod.
So a dequeuer exits 0 only when the job's queue is gone (the job is over); one that drained exits EXIT_DRAINED,
its pod fails, the policy ignores the failure, and the controller replaces the pod. One that found no work for its
elastic job's idle_s exits EXIT_IDLE, ignored the same way; the scheduler lowers the Job's `parallelism` before the
controller's pod-failure backoff ends, so that it is not replaced.
"""

from __future__ import annotations

import copy
import json
import math
import re
from datetime import datetime
from typing import Any

from thresher.core.apis import EFFECTS, label_key, label_value, quantity
from thresher.core.config import Config
from thresher.core.errors import InvalidRequest
from thresher.core.names import ENV_JOB_SPEC, ENV_PORT, ENV_WORKER_TOKEN, EXIT_DRAINED, EXIT_IDLE
from thresher.core.runtime.base import WorkerLaunch, dequeuer_argv, dequeuer_config_env
from thresher.v1 import jobs_pb2

LABEL_API = "thresher.dev/api"
LABEL_JOB = "thresher.dev/job"
LABEL_ROLE = "thresher.dev/role"
ROLE_WORKER = "worker"
DEQUEUER = "dequeuer"  # the main container's name; no API container may take it
SPEC_DIR = "/cortex/spec"  # Cortex's path: workers read /cortex/spec/job.json
SPEC_FILE = "job.json"
SCRATCH_DIR = "/tmp"  # the dequeuer's only writable folder (an emptyDir; its root file system is read-only)
TLS_DIR = "/etc/thresher/tls"  # the dequeuer's client certificate (kubernetes.tls_secret), when tls is on
ADMIN_PORT = 15000  # the dequeuer's /healthz and /metrics (Cortex's dequeuer admin port); no API may take it
GPU = "nvidia.com/gpu"
TLS_FILES = {"ca_file": "ca.crt", "cert_file": "tls.crt", "key_file": "tls.key"}  # the keys cert-manager writes
ENV_WORKER_ID = "THRESHER_WORKER_ID"  # the pod's name, from the downward API
DEFAULT_PORT = 8080
MAX_NAME = 63  # a Job's name becomes the `job-name` label value of its pods: a DNS label
# The dequeuer's own needs (Cortex gave it 100m and 100Mi); Python with grpc and aiohttp stays well under this.
DEQUEUER_RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}
# Never handed to a pod in plain text: a worker gets credentials from its service account or `env_secret`.
_SECRET_ENV = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|API_KEY")
_SECURE = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}
# An API's image keeps its own user (often root) and a writable root file system (model caches, downloads): only
# what a worker never needs is taken away. Binding a port below 1024 stays possible.
_API_SECURE = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def resource_name(api_name: str, job_id: str) -> str:
    """`<api>-<job_id>`, the API part cut so that the whole is a DNS label of at most 63 characters."""
    job = re.sub(r"[^a-z0-9-]", "-", job_id.lower()).strip("-")
    api = re.sub(r"[^a-z0-9-]", "-", api_name.lower()).strip("-")
    api = api[: max(0, MAX_NAME - len(job) - 1)].rstrip("-")
    return f"{api}-{job}"[:MAX_NAME].strip("-") if api else job[:MAX_NAME]


def labels(api_name: str, job_id: str) -> dict[str, str]:
    return {LABEL_API: api_name, LABEL_JOB: job_id, LABEL_ROLE: ROLE_WORKER}


def job_selector(job_id: str) -> str:
    return f"{LABEL_ROLE}={ROLE_WORKER},{LABEL_JOB}={job_id}"


def config_map(launch: WorkerLaunch, name: str, namespace: str) -> dict[str, Any]:
    """The job spec that workers read at /cortex/spec/job.json."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels(launch.api.name, launch.job_id)},
        "data": {SPEC_FILE: spec_json(launch.job_spec)},
    }


def spec_json(job_spec: dict[str, Any]) -> str:
    return json.dumps(job_spec, indent=2)


def owner_reference(job_name: str, job_uid: str) -> dict[str, Any]:
    """Makes an object belong to the Job: deleting the Job deletes it."""
    return {"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": job_uid, "blockOwnerDeletion": True}


def worker_job(
    launch: WorkerLaunch, count: int, name: str, namespace: str, config: Config, now: float, token: str
) -> dict[str, Any]:
    """The Job: `count` pods at once (work-queue pattern: no completions), each a worker and its dequeuer, which
    reports with `token` (for any worker of the job: pod names are not known yet)."""
    job_labels = labels(launch.api.name, launch.job_id)
    spec: dict[str, Any] = {
        "parallelism": count,
        "backoffLimit": config.runtime.max_worker_restarts,
        # Spot reclaims, evictions, preemptions and drains are no worker's fault: they never spend the budget, and the
        # pod is replaced. The exit code is the dequeuer's alone: an API container may exit with any code.
        "podFailurePolicy": {
            "rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                {
                    "action": "Ignore",
                    "onExitCodes": {"containerName": DEQUEUER, "operator": "In", "values": [EXIT_DRAINED, EXIT_IDLE]},
                },
            ]
        },
        "podReplacementPolicy": "Failed",  # a replacement starts once the old pod is gone: never more than `count`
        "template": {
            "metadata": {
                "labels": job_labels,
                # A worker holds batches: the cluster autoscaler must not move it to empty a node.
                "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
            },
            "spec": pod_spec(launch, name, config, token),
        },
    }
    deadline_s = active_deadline_s(launch.job_spec, now)
    if deadline_s is not None:
        spec["activeDeadlineSeconds"] = deadline_s
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace, "labels": job_labels},
        "spec": spec,
    }


def active_deadline_s(job_spec: dict[str, Any], now: float) -> int | None:
    """The job's timeout less the time since its submission (Kubernetes counts from the Job's start)."""
    timeout_s: float | None = job_spec.get("timeout")
    start = job_spec.get("start_time")
    if timeout_s is None:
        return None
    elapsed_s = now - datetime.fromisoformat(start).timestamp() if start else 0.0
    return max(1, math.ceil(timeout_s - elapsed_s))


def check_settings(config: Config) -> None:
    """The `kubernetes.*` defaults (and TLS) make valid worker pods: a mistake shows when the scheduler starts."""
    k = config.kubernetes
    if k.worker_cpu:
        quantity(k.worker_cpu, "kubernetes.worker_cpu")
    if k.worker_memory:
        quantity(k.worker_memory, "kubernetes.worker_memory", memory=True)
    if k.worker_gpu < 0:
        raise InvalidRequest(f"kubernetes.worker_gpu: must be 0 or more, got {k.worker_gpu}")
    parse_pairs(k.node_selector, "kubernetes.node_selector")
    parse_pairs(k.preferred_nodes, "kubernetes.preferred_nodes")
    parse_tolerations(k.tolerations)
    label_key(k.node_group_label, "kubernetes.node_group_label")
    if config.tls.enabled and not k.tls_secret:
        raise InvalidRequest("tls is on, so dequeuers need a client certificate too: set kubernetes.tls_secret")


def pod_spec(launch: WorkerLaunch, config_map_name: str, config: Config, token: str) -> dict[str, Any]:
    k = config.kubernetes
    if (launch.api.port or DEFAULT_PORT) == ADMIN_PORT:
        raise InvalidRequest(f"API {launch.api.name}: port {ADMIN_PORT} is the dequeuer's on Kubernetes; pick another")
    spec: dict[str, Any] = {
        "restartPolicy": "Never",  # the pod fails when its dequeuer does; the Job makes a new one
        "initContainers": [api_container(launch, i, config) for i in range(len(launch.api.containers))],
        "containers": [dequeuer_container(launch, config, token)],
        "volumes": [
            {"name": "job-spec", "configMap": {"name": config_map_name}},
            {"name": "tmp", "emptyDir": {}},
        ],
        "terminationGracePeriodSeconds": math.ceil(config.runtime.stop_grace_s),
        "automountServiceAccountToken": False,  # workers never call the Kubernetes API
        "enableServiceLinks": False,  # no env variable per Service of the namespace
        **placement(launch.api, config),
    }
    if config.tls.enabled:
        spec["volumes"].append({"name": "tls", "secret": {"secretName": k.tls_secret}})
    if k.service_account:
        spec["serviceAccountName"] = k.service_account
    return spec


def placement(api: jobs_pb2.ApiSpec, config: Config) -> dict[str, Any]:
    """nodeSelector, affinity and tolerations: the API's own, else the `kubernetes.*` defaults."""
    k = config.kubernetes
    spec: dict[str, Any] = {}
    selector = dict(api.node_selector) or parse_pairs(k.node_selector, "kubernetes.node_selector")
    if selector:
        spec["nodeSelector"] = selector
    preferred = parse_pairs(k.preferred_nodes, "kubernetes.preferred_nodes")
    affinity = node_affinity(list(api.node_groups), k.node_group_label, preferred)
    if affinity:
        spec["affinity"] = affinity
    tolerations = [_toleration(t) for t in api.tolerations] or parse_tolerations(k.tolerations)
    if tolerations:
        spec["tolerations"] = tolerations
    return spec


def node_affinity(groups: list[str], group_label: str, preferred: dict[str, str]) -> dict[str, Any] | None:
    """As Cortex: only the API's node groups, the first preferred most; then the nodes that `preferred` names."""
    affinity: dict[str, Any] = {}
    preferences = []
    if groups:
        only = {"matchExpressions": [{"key": group_label, "operator": "In", "values": groups}]}
        affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [only]}
    if len(groups) > 1:
        preferences += [
            {"weight": max(1, 100 - rank), "preference": {"matchExpressions": [_is(group_label, group)]}}
            for rank, group in enumerate(groups)
        ]
    if preferred:
        terms = [_is(key, value) for key, value in preferred.items()]
        preferences.append({"weight": 100, "preference": {"matchExpressions": terms}})
    if preferences:
        affinity["preferredDuringSchedulingIgnoredDuringExecution"] = preferences
    return {"nodeAffinity": affinity} if affinity else None


def _is(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "operator": "In", "values": [value]}


def _toleration(toleration: jobs_pb2.Toleration) -> dict[str, str]:
    fields = ("key", "operator", "value", "effect")
    return {name: getattr(toleration, name) for name in fields if getattr(toleration, name)}


def api_container(launch: WorkerLaunch, index: int, config: Config) -> dict[str, Any]:
    """One of the API's containers, as a native sidecar; the first one serves the port and its readiness."""
    container = launch.api.containers[index]
    if container.name == DEQUEUER:
        raise InvalidRequest(f"API {launch.api.name}: the container name {DEQUEUER!r} is reserved on Kubernetes")
    if not container.image:
        raise InvalidRequest(f"API {launch.api.name}: container {container.name} needs an image on Kubernetes")
    port = launch.api.port or DEFAULT_PORT
    env = [{"name": key, "value": value} for key, value in sorted(container.env.items())]
    env += [{"name": ENV_PORT, "value": str(port)}, {"name": ENV_JOB_SPEC, "value": f"{SPEC_DIR}/{SPEC_FILE}"}]
    spec: dict[str, Any] = {
        "name": container.name,
        "image": container.image,
        "imagePullPolicy": config.kubernetes.image_pull_policy,
        "restartPolicy": "Always",  # a native sidecar: up before the dequeuer, down after it
        "env": env,
        "resources": api_resources(launch.api.compute, config),
        "securityContext": copy.deepcopy(_API_SECURE),
        "volumeMounts": [{"name": "job-spec", "mountPath": SPEC_DIR, "readOnly": True}],
    }
    if container.command:
        spec["command"] = list(container.command)
    if container.args:
        spec["args"] = list(container.args)
    if index == 0:
        spec["ports"] = [{"name": "http", "containerPort": port}]
        spec["readinessProbe"] = readiness_probe(launch.api.readiness_path, port)
    return spec


def readiness_probe(path: str, port: int) -> dict[str, Any]:
    """The API's readiness check: it makes the pod Ready (the dequeuer waits for the same check itself)."""
    check: dict[str, Any] = {"httpGet": {"path": path, "port": port}} if path else {"tcpSocket": {"port": port}}
    return {**check, "periodSeconds": 5, "timeoutSeconds": 1, "failureThreshold": 3}


def api_resources(compute: jobs_pb2.Compute, config: Config) -> dict[str, Any]:
    """Requests and limits of each API container: the API's `compute`, field by field, else the defaults."""
    k = config.kubernetes
    cpu, memory = compute.cpu or k.worker_cpu, compute.mem or k.worker_memory
    gpu = compute.gpu if compute.HasField("gpu") else k.worker_gpu
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if cpu:
        requests["cpu"] = cpu
    if memory:
        requests["memory"] = limits["memory"] = memory
    if gpu:
        limits[GPU] = str(gpu)  # a quantity: the client accepts strings only
    return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}


def dequeuer_container(launch: WorkerLaunch, config: Config, token: str) -> dict[str, Any]:
    """The dequeuer, with the scheduler's THRESHER_* settings (no secrets), the pod's name as worker id and the job's
    report token (which readers of the namespace's Jobs can see: it lets one report for this job only)."""
    argv = dequeuer_argv(launch, f"$({ENV_WORKER_ID})", launch.api.port or DEFAULT_PORT, python="python")
    spec: dict[str, Any] = {
        "name": DEQUEUER,
        "image": config.kubernetes.image,
        "imagePullPolicy": config.kubernetes.image_pull_policy,
        "command": argv[:3],
        "args": argv[3:],
        "env": [
            {"name": ENV_WORKER_ID, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": ENV_WORKER_TOKEN, "value": token},
            *({"name": key, "value": value} for key, value in sorted(dequeuer_env(config).items())),
        ],
        "ports": [{"name": "admin", "containerPort": ADMIN_PORT}],
        # 200 once its worker answered the readiness check and batches flow; 503 before, and while it drains.
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "admin"}, "periodSeconds": 5},
        # A backstop: the dequeuer gives up by itself after dequeuer.readiness_timeout_s, and says why.
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": "admin"},
            "periodSeconds": 5,
            "failureThreshold": math.ceil(config.dequeuer.readiness_timeout_s / 5) + 6,
        },
        "resources": copy.deepcopy(DEQUEUER_RESOURCES),
        "securityContext": copy.deepcopy(_SECURE),
        "volumeMounts": [{"name": "tmp", "mountPath": SCRATCH_DIR}],
    }
    if config.tls.enabled:
        spec["volumeMounts"].append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    if config.kubernetes.env_secret:
        spec["envFrom"] = [{"secretRef": {"name": config.kubernetes.env_secret}}]
    return spec


def dequeuer_env(config: Config) -> dict[str, str]:
    env = {key: value for key, value in dequeuer_config_env(config).items() if not _SECRET_ENV.search(key)}
    env["THRESHER_DATA_DIR"] = f"{SCRATCH_DIR}/thresher"  # the scheduler's data_dir is not in this pod
    env["THRESHER_DEQUEUER_ADMIN_ADDRESS"] = f"0.0.0.0:{ADMIN_PORT}"  # probed by the kubelet, from the node
    if config.tls.enabled:  # the scheduler's own files are not in this pod: the worker's Secret is
        env |= {f"THRESHER_TLS_{name.upper()}": f"{TLS_DIR}/{file}" for name, file in TLS_FILES.items()}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def parse_pairs(text: str, where: str) -> dict[str, str]:
    """`key=value,key=value` into a mapping."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidRequest(f"{where}: expected key=value pairs separated by commas, got {item!r}")
        label_key(key.strip(), where)
        label_value(value.strip(), where)
        pairs[key.strip()] = value.strip()
    return pairs


def parse_tolerations(text: str) -> list[dict[str, str]]:
    """`key=value:Effect` (Equal) or `key:Effect` (Exists), separated by commas."""
    tolerations = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        taint, _, effect = item.rpartition(":")
        if effect not in EFFECTS or not taint:
            choices = ", ".join(EFFECTS)
            raise InvalidRequest(f"kubernetes.tolerations: expected key[=value]:Effect ({choices}), got {item!r}")
        key, sep, value = taint.partition("=")
        label_key(key, "kubernetes.tolerations")
        label_value(value, "kubernetes.tolerations")
        toleration = {"key": key, "operator": "Equal" if sep else "Exists", "effect": effect}
        if sep:
            toleration["value"] = value
        tolerations.append(toleration)
    return tolerations
