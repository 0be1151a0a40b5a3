"""The Kubernetes objects of one job's workers, as plain dicts: pure functions, no API calls.

A worker is one pod of the job's `batch/v1` Job. The API's containers run as native sidecars (init containers
with `restartPolicy: Always`) and the dequeuer is the pod's one main container. That order is what makes the
pod behave: the worker starts first and stops last, so on eviction, preemption or `stop` the dequeuer gets
SIGTERM while its worker still answers, finishes or releases its batch, and exits; the pod ends when the
dequeuer does (the queue is gone, or it drained). A worker that dies makes the dequeuer exit 1 (worker lost), so
the pod fails and counts toward `backoffLimit`; disruptions never do (`podFailurePolicy`).
"""

from __future__ import annotations

import copy
import json
import math
import re
from datetime import datetime
from typing import Any

from thresher.config import Config, config_env
from thresher.errors import InvalidRequest
from thresher.names import ENV_JOB_SPEC, ENV_PORT
from thresher.runtime.base import WorkerLaunch, dequeuer_argv

LABEL_API = "thresher.dev/api"
LABEL_JOB = "thresher.dev/job"
LABEL_ROLE = "thresher.dev/role"
ROLE_WORKER = "worker"
DEQUEUER = "dequeuer"  # the main container's name; no API container may take it
SPEC_DIR = "/cortex/spec"  # Cortex's path: workers read /cortex/spec/job.json
SPEC_FILE = "job.json"
SCRATCH_DIR = "/tmp"  # the dequeuer's only writable folder (an emptyDir; its root file system is read-only)
ENV_WORKER_ID = "THRESHER_WORKER_ID"  # the pod's name, from the downward API
DEFAULT_PORT = 8080
MAX_NAME = 63  # a Job's name becomes the `job-name` label value of its pods: a DNS label
# The dequeuer's own needs (Cortex gave it 100m and 100Mi); Python with grpc and aiohttp stays well under this.
DEQUEUER_RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}}
# Never handed to a pod in plain text: a worker gets credentials from its service account or `env_secret`.
_SECRET_ENV = re.compile(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY|API_KEY")
_NOT_FOR_WORKERS = ("THRESHER_KUBERNETES_", "THRESHER_RUNTIME_")  # the scheduler's own business
_SECURE = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
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
    launch: WorkerLaunch, count: int, name: str, namespace: str, config: Config, now: float
) -> dict[str, Any]:
    """The Job: `count` pods at once (work-queue pattern: no completions), each a worker and its dequeuer."""
    job_labels = labels(launch.api.name, launch.job_id)
    spec: dict[str, Any] = {
        "parallelism": count,
        "backoffLimit": config.runtime.max_worker_restarts,
        # Spot reclaims, evictions, preemptions and drains are no worker's fault: they never spend the budget.
        "podFailurePolicy": {
            "rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]
        },
        "podReplacementPolicy": "Failed",  # a replacement starts once the old pod is gone: never more than `count`
        "template": {
            "metadata": {
                "labels": job_labels,
                # A worker holds batches: the cluster autoscaler must not move it to empty a node.
                "annotations": {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
            },
            "spec": pod_spec(launch, name, config),
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
    timeout_s, start = job_spec.get("timeout"), job_spec.get("start_time")
    if timeout_s is None:
        return None
    elapsed_s = now - datetime.fromisoformat(start).timestamp() if start else 0.0
    return max(1, math.ceil(timeout_s - elapsed_s))


def pod_spec(launch: WorkerLaunch, config_map_name: str, config: Config) -> dict[str, Any]:
    k = config.kubernetes
    spec: dict[str, Any] = {
        "restartPolicy": "Never",  # the pod fails when its dequeuer does; the Job makes a new one
        "initContainers": [api_container(launch, i, config) for i in range(len(launch.api.containers))],
        "containers": [dequeuer_container(launch, config)],
        "volumes": [
            {"name": "job-spec", "configMap": {"name": config_map_name}},
            {"name": "tmp", "emptyDir": {}},
        ],
        "terminationGracePeriodSeconds": math.ceil(config.runtime.stop_grace_s),
        "automountServiceAccountToken": False,  # workers never call the Kubernetes API
        "enableServiceLinks": False,  # no env variable per Service of the namespace
    }
    if k.service_account:
        spec["serviceAccountName"] = k.service_account
    if k.node_selector:
        spec["nodeSelector"] = parse_pairs(k.node_selector, "kubernetes.node_selector")
    if k.preferred_nodes:
        spec["affinity"] = preferred_node_affinity(parse_pairs(k.preferred_nodes, "kubernetes.preferred_nodes"))
    if k.tolerations:
        spec["tolerations"] = parse_tolerations(k.tolerations)
    return spec


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
        "resources": api_resources(config),
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


def api_resources(config: Config) -> dict[str, Any]:
    k = config.kubernetes
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    if k.worker_cpu:
        requests["cpu"] = k.worker_cpu
    if k.worker_memory:
        requests["memory"] = limits["memory"] = k.worker_memory
    if k.worker_gpu:
        limits["nvidia.com/gpu"] = k.worker_gpu
    return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}


def dequeuer_container(launch: WorkerLaunch, config: Config) -> dict[str, Any]:
    """The dequeuer, with the scheduler's THRESHER_* settings (no secrets) and the pod's name as worker id."""
    argv = dequeuer_argv(launch, f"$({ENV_WORKER_ID})", launch.api.port or DEFAULT_PORT, python="python")
    spec: dict[str, Any] = {
        "name": DEQUEUER,
        "image": config.kubernetes.image,
        "imagePullPolicy": config.kubernetes.image_pull_policy,
        "command": argv[:3],
        "args": argv[3:],
        "env": [
            {"name": ENV_WORKER_ID, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            *({"name": key, "value": value} for key, value in sorted(dequeuer_env(config).items())),
        ],
        "resources": copy.deepcopy(DEQUEUER_RESOURCES),
        "securityContext": copy.deepcopy(_SECURE),
        "volumeMounts": [{"name": "tmp", "mountPath": SCRATCH_DIR}],
    }
    if config.kubernetes.env_secret:
        spec["envFrom"] = [{"secretRef": {"name": config.kubernetes.env_secret}}]
    return spec


def dequeuer_env(config: Config) -> dict[str, str]:
    env = {
        key: value
        for key, value in config_env(config).items()
        if not _SECRET_ENV.search(key) and not key.startswith(_NOT_FOR_WORKERS)
    }
    env["THRESHER_DATA_DIR"] = f"{SCRATCH_DIR}/thresher"  # the scheduler's data_dir is not in this pod
    env["PYTHONUNBUFFERED"] = "1"
    return env


def preferred_node_affinity(node_labels: dict[str, str]) -> dict[str, Any]:
    terms = [{"key": key, "operator": "In", "values": [value]} for key, value in node_labels.items()]
    return {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "preference": {"matchExpressions": terms}}
            ]
        }
    }


def parse_pairs(text: str, where: str) -> dict[str, str]:
    """`key=value,key=value` into a mapping."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidRequest(f"{where}: expected key=value pairs separated by commas, got {item!r}")
        pairs[key.strip()] = value.strip()
    return pairs


def parse_tolerations(text: str) -> list[dict[str, str]]:
    """`key=value:Effect` (Equal) or `key:Effect` (Exists), separated by commas."""
    tolerations = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        taint, _, effect = item.rpartition(":")
        if effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute") or not taint:
            raise InvalidRequest(f"kubernetes.tolerations: expected key[=value]:Effect, got {item!r}")
        key, sep, value = taint.partition("=")
        toleration = {"key": key, "operator": "Equal" if sep else "Exists", "effect": effect}
        if sep:
            toleration["value"] = value
        tolerations.append(toleration)
    return tolerations
