"""What a worker pod's status says, as a WorkerState: pure functions over the pod's JSON.

Disruptions (a spot reclaim, eviction, preemption, node drain or loss, a deleted pod) and a dequeuer that drained on
SIGTERM end a worker STOPPED and `disrupted`: they are no fault of the worker, spend no restart budget, and are
counted apart. A pod that failed by itself is
FAILED, or OOM_KILLED when a container was killed for memory, with the container and its exit code in the reason.
A pod that cannot be scheduled stays PENDING; past `stalled_after_s` its reason says it is stalled.
Each is also counted as Cortex's pod classification counts it (`WorkerCount`), ready pods included.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from thresher.core.names import EXIT_DRAINED, EXIT_IDLE
from thresher.core.runtime.base import IDLED, WorkerCount, WorkerPhase, WorkerState, dequeuer_exit_reason
from thresher.core.runtime.k8s_manifests import DEQUEUER

# Waiting reasons that no amount of waiting fixes: the reason of a pending worker says so at once.
STUCK_REASONS = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "RegistryUnavailable",
    "CreateContainerConfigError",
    "CreateContainerError",
}
# Kubernetes' DisruptionTarget reasons, in words.
DISRUPTIONS = {
    "PreemptionByScheduler": "preempted by a pod of higher priority",
    "DeletionByTaintManager": "its node became unavailable",
    "EvictionByEvictionAPI": "evicted (node drain or scale-down)",
    "DeletionByPodGC": "its node is gone",
    "TerminationByKubelet": "terminated by the kubelet (node pressure or shutdown, e.g. a spot reclaim)",
}
SIGNALLED_BY_KUBELET = {137, 143}  # SIGKILL/SIGTERM: how the kubelet ends a sidecar once its pod is over
KILLED_CODES = {137, 143, 130, 129}  # Cortex counts a pod ended by SIGKILL, SIGTERM, SIGINT or SIGHUP as killed
IMAGE_PULL_REASONS = {"ErrImagePull", "ImagePullBackOff", "RegistryUnavailable"}  # Cortex's err_image_pull
CREATING_REASONS = {"ContainerCreating", "PodInitializing"}
LOW_ON_MEMORY = re.compile(r"low on resource:? memory")  # the kubelet's eviction message (Cortex's killed_oom)


def worker_state(
    pod: dict[str, Any], deleted: bool, now: float, stalled_after_s: float, unschedulable_since: float | None
) -> WorkerState:
    """The state of the worker that this pod is; `deleted`: the pod object is gone."""
    name = pod["metadata"]["name"]
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    if phase == "Succeeded":
        return WorkerState(name, WorkerPhase.STOPPED, "the dequeuer ended: the job's queue is gone")
    if phase == "Failed":
        return _failed(name, status)
    disruption = _disruption(status)
    if deleted:
        return WorkerState(name, WorkerPhase.STOPPED, f"deleted: {disruption}" if disruption else "deleted")
    if phase == "Running":
        return _running(name, pod, status, disruption)
    if phase == "Unknown":  # its node stopped reporting
        return WorkerState(
            name, WorkerPhase.RUNNING, "unknown: its node does not report", counted_as=WorkerCount.UNKNOWN
        )
    return _pending(name, status, now, stalled_after_s, unschedulable_since)


def unschedulable_message(pod: dict[str, Any]) -> str | None:
    """The scheduler's explanation while the pod cannot be placed on any node, else None."""
    condition = _condition(pod.get("status") or {}, "PodScheduled")
    if condition and condition.get("status") == "False" and condition.get("reason") == "Unschedulable":
        return str(condition.get("message") or "no node fits")
    return None


def unschedulable_since_from(pod: dict[str, Any]) -> float | None:
    """When the pod became unschedulable, as the API server recorded it (None when it did not say)."""
    condition = _condition(pod.get("status") or {}, "PodScheduled")
    stamp = condition.get("lastTransitionTime") if condition else None
    return datetime.fromisoformat(stamp).timestamp() if stamp else None


def _failed(name: str, status: dict[str, Any]) -> WorkerState:
    disruption = _disruption(status)
    if disruption:
        return WorkerState(name, WorkerPhase.STOPPED, disruption, disrupted=True)
    if status.get("reason") == "Evicted":
        evicted = f"evicted: {status.get('message', '')}".rstrip(": ")
        count = WorkerCount.KILLED_OOM if LOW_ON_MEMORY.search(status.get("message", "")) else None
        return WorkerState(name, WorkerPhase.STOPPED, evicted, disrupted=True, counted_as=count)
    dequeuer_code = _dequeuer_exit_code(status)
    if dequeuer_code == EXIT_DRAINED:
        drained = "the dequeuer drained on SIGTERM (e.g. a spot reclaim)"
        return WorkerState(name, WorkerPhase.STOPPED, drained, disrupted=True)
    if dequeuer_code == EXIT_IDLE:
        return WorkerState(name, WorkerPhase.STOPPED, IDLED, idled=True)
    if reason := dequeuer_exit_reason(dequeuer_code):
        return WorkerState(name, WorkerPhase.FAILED, reason)
    crash = _crash(status)
    if crash is None:
        why = ": ".join(filter(None, (status.get("reason"), status.get("message")))) or "no container status"
        return WorkerState(name, WorkerPhase.FAILED, f"pod failed ({why})")
    container, terminated = crash
    code = terminated.get("exitCode")
    if terminated.get("reason") == "OOMKilled":
        return WorkerState(
            name, WorkerPhase.OOM_KILLED, f"{container} was killed for using too much memory (OOMKilled)"
        )
    detail = terminated.get("reason")
    suffix = f" ({detail})" if detail and detail not in ("Error", "Completed") else ""
    count = WorkerCount.KILLED if code in KILLED_CODES else None
    return WorkerState(name, WorkerPhase.FAILED, f"{container} exited with code {code}{suffix}", counted_as=count)


def _crash(status: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The container termination that explains a failed pod: an API container's crash first, as that is
    why its dequeuer gave up; a kill for memory anywhere wins over an exit code."""
    crashes: list[tuple[str, dict[str, Any]]] = []
    for container in status.get("initContainerStatuses") or []:  # the API's containers (native sidecars)
        last = (container.get("lastState") or {}).get("terminated")
        now = (container.get("state") or {}).get("terminated")
        if last:  # a sidecar is restarted only after it ended by itself
            crashes.append((container["name"], last))
        if now and now.get("exitCode") and (now.get("exitCode") not in SIGNALLED_BY_KUBELET or _oom(now)):
            crashes.append((container["name"], now))
    for container in status.get("containerStatuses") or []:
        now = (container.get("state") or {}).get("terminated")
        if container.get("name") == DEQUEUER and now and now.get("exitCode"):
            crashes.append((DEQUEUER, now))
    oom = [crash for crash in crashes if _oom(crash[1])]
    return next(iter(oom or crashes), None)


def _dequeuer_exit_code(status: dict[str, Any]) -> int | None:
    for container in status.get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated")
        if container.get("name") == DEQUEUER and terminated:
            return int(terminated.get("exitCode", 0))
    return None


def _oom(terminated: dict[str, Any]) -> bool:
    return terminated.get("reason") == "OOMKilled"


def _running(name: str, pod: dict[str, Any], status: dict[str, Any], disruption: str) -> WorkerState:
    if pod["metadata"].get("deletionTimestamp"):
        why = f"terminating: {disruption}" if disruption else "terminating: draining its batches"
        return WorkerState(name, WorkerPhase.RUNNING, why, counted_as=WorkerCount.TERMINATING)
    ready = _condition(status, "Ready")
    if ready and ready.get("status") == "True":
        return WorkerState(name, WorkerPhase.RUNNING, counted_as=WorkerCount.READY)
    waiting = _waiting(status)
    return WorkerState(name, WorkerPhase.RUNNING, f"not ready: {waiting}" if waiting else "not ready")


def _pending(
    name: str, status: dict[str, Any], now: float, stalled_after_s: float, unschedulable_since: float | None
) -> WorkerState:
    unschedulable = unschedulable_message({"status": status})
    if unschedulable is not None:
        waited_s = now - (unschedulable_since if unschedulable_since is not None else now)
        if waited_s >= stalled_after_s:
            stalled = f"stalled: unschedulable for {waited_s:.0f} s: {unschedulable}"
            return WorkerState(name, WorkerPhase.PENDING, stalled, counted_as=WorkerCount.STALLED)
        return WorkerState(name, WorkerPhase.PENDING, f"unschedulable: {unschedulable}")
    return WorkerState(name, WorkerPhase.PENDING, _waiting(status) or "creating", counted_as=_pending_count(status))


def _pending_count(status: dict[str, Any]) -> WorkerCount | None:
    """Scheduled, its containers not started yet: an image that cannot be pulled, or being created."""
    containers = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
    reasons = {((c.get("state") or {}).get("waiting") or {}).get("reason") for c in containers}
    if reasons & IMAGE_PULL_REASONS:
        return WorkerCount.ERR_IMAGE_PULL
    return WorkerCount.CREATING if reasons & CREATING_REASONS else None


def _waiting(status: dict[str, Any]) -> str:
    """The most telling waiting reason of the pod's containers: one that needs a human first."""
    reasons = []
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            text = f"{container['name']}: {waiting['reason']}"
            message = waiting.get("message")
            reasons.append((waiting["reason"] not in STUCK_REASONS, f"{text}: {message}" if message else text))
    return min(reasons)[1] if reasons else ""


def _disruption(status: dict[str, Any]) -> str:
    condition = _condition(status, "DisruptionTarget")
    if not condition or condition.get("status") != "True":
        return ""
    reason = condition.get("reason", "")
    return DISRUPTIONS.get(reason, f"disrupted ({reason})" if reason else "disrupted")


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)
