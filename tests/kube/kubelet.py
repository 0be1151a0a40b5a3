"""The node of the test cluster: a kubelet stand-in that runs pods' containers as local processes.

There is no container runtime here, so the harness plays the one node: it registers a Node, binds the namespace's
pods to it (there is no scheduler), starts each pod's containers as processes (native sidecars first, restarted when
they exit; then the main containers), probes their readiness, and writes phase, conditions and container statuses
through the pod status subresource, as a kubelet does. A deleted pod's main containers get SIGTERM, then its
sidecars, each SIGKILL after the grace period; the pod is then removed. `reclaim` ends a pod as a spot interruption
does (graceful node shutdown: DisruptionTarget, SIGTERM, grace, exit), and `oom_kill` kills a container as the kernel
does when it exceeds its memory limit (exit 137, reason OOMKilled).

How a pod's spec becomes processes (images, volumes, ports) is in tests/kube/pods.py.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as k8s

from tests.kube.pods import Container, Pod, PodMaker, now_iso

SYNC_S = 0.2  # how often the node looks at its pods
PROBE_S = 1.0  # readiness checks, at most this often per container (a kubelet's period is 5 s or more)
SHUTDOWN_MESSAGE = "Pod was terminated in response to imminent node shutdown."
MAX_FAILED_SYNCS = 50  # passes in a row (10 s) that the API server may fail before the node gives up


class Kubelet:
    """Runs the pods of `namespace` on one node, in a thread of its own, until `close()`."""

    def __init__(self, api: k8s.ApiClient, namespace: str, root: Path, images: dict[str, Path]) -> None:
        self.core = k8s.CoreV1Api(api)
        self.namespace = namespace
        self.node_name = f"node-{namespace}"
        self._maker = PodMaker(self.core, namespace, root, images)
        self.pods: dict[str, Pod] = {}
        self.history: list[str] = []  # every pod that ran here, in order
        self._requests: list[tuple[str, str, str]] = []  # (what, pod, container), from the tests' thread
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kubelet", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        node = {"metadata": {"name": self.node_name, "labels": {"kubernetes.io/hostname": self.node_name}}}
        self.core.create_node(node)
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now_iso()}
        capacity = {"cpu": "2", "memory": "8Gi", "pods": "110"}
        status = {"conditions": [ready], "capacity": capacity, "allocatable": capacity}
        self.core.patch_node_status(self.node_name, {"status": status})
        self._thread.start()

    def close(self) -> None:
        """Stop watching and kill every process still running (the node goes away)."""
        self._closing.set()
        self._thread.join(timeout=30)
        for pod in self.pods.values():
            for container in pod.containers:
                container.signal(signal.SIGKILL)
                if container.proc is not None:
                    container.proc.wait()

    def reclaim(self, pod: str) -> None:
        """A spot interruption, as graceful node shutdown ends a pod: DisruptionTarget, SIGTERM, grace, exit."""
        self._request("reclaim", pod)

    def oom_kill(self, pod: str, container: str) -> None:
        """The kernel kills `container` for using too much memory: SIGKILL, exit code 137, reason OOMKilled."""
        self._request("oom", pod, container)

    def processes(self) -> list[int]:
        """The pids of every container process still running on the node."""
        return [c.proc.pid for p in list(self.pods.values()) for c in p.containers if c.running and c.proc]

    def _request(self, what: str, pod: str, container: str = "") -> None:
        with self._lock:
            self._requests.append((what, pod, container))

    # --- the sync loop ----------------------------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        try:
            while not self._closing.is_set():
                try:
                    self._sync()
                    failures = 0
                except (k8s.ApiException, urllib3.exceptions.HTTPError) as e:
                    # A busy API server may fail a call (5xx, a timeout): a kubelet tries again on its next pass.
                    failures += 1
                    if failures > MAX_FAILED_SYNCS or (isinstance(e, k8s.ApiException) and (e.status or 500) < 500):
                        raise
                time.sleep(SYNC_S)
        except BaseException as e:  # the tests check `error`: a broken node must not pass unnoticed
            self.error = e
            raise

    def _sync(self) -> None:
        with self._lock:
            requests, self._requests = self._requests, []
        for what, name, container in requests:
            if (pod := self.pods.get(name)) is not None:
                self._handle(pod, what, container)
        listing = self.core.list_namespaced_pod(self.namespace)
        for obj in listing.items:
            data = self.core.api_client.sanitize_for_serialization(obj)
            try:
                self._sync_pod(data)
            except k8s.ApiException as e:
                if e.status not in (404, 409):  # gone meanwhile, or written meanwhile: the next pass sees it
                    raise
        present = {obj.metadata.name for obj in listing.items}
        for name in [n for n, p in self.pods.items() if n not in present and p.terminal]:
            del self.pods[name]

    def _handle(self, pod: Pod, what: str, container: str) -> None:
        if what == "reclaim" and not pod.terminal:
            pod.disruption = {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "TerminationByKubelet",
                "message": SHUTDOWN_MESSAGE,
                "lastTransitionTime": now_iso(),
            }
            pod.reason, pod.message = "Terminated", SHUTDOWN_MESSAGE
            self._begin_stop(pod, pod.grace_s)
        elif what == "oom":
            [target] = [c for c in pod.containers if c.name == container]
            target.oom = True
            target.signal(signal.SIGKILL)

    def _sync_pod(self, data: dict[str, Any]) -> None:
        meta, spec = data["metadata"], data["spec"]
        name = meta["name"]
        pod = self.pods.get(name)
        if pod is None:
            if spec.get("nodeName") or meta.get("deletionTimestamp"):
                return  # not ours, or going before it ran
            self._bind(name)
            self.pods[name] = self._maker.make(data)
            self.history.append(name)
            return
        if meta.get("deletionTimestamp") and pod.stop_deadline is None and not pod.terminal:
            grace_s = meta.get("deletionGracePeriodSeconds")
            self._begin_stop(pod, pod.grace_s if grace_s is None else float(grace_s))
        if meta.get("deletionTimestamp"):
            pod.remove_when_done = True
        if not pod.terminal:
            self._step(pod, data)
        status = self._status(pod, data)
        if status != pod.written:
            data["status"] = status
            self.core.replace_namespaced_pod_status(name, self.namespace, data)
            pod.written = status
        if pod.terminal and pod.remove_when_done:
            self.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)
            pod.remove_when_done = False

    def _bind(self, name: str) -> None:
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node_name},
        }
        self.core.create_namespaced_pod_binding(name, self.namespace, binding, _preload_content=False)

    def _step(self, pod: Pod, data: dict[str, Any]) -> None:
        """Start, restart, reap, probe and stop the pod's containers, as far as can be done now."""
        if not pod.started:
            for container in pod.containers:  # native sidecars first: they are up before the main containers
                container.start()
            pod.started, pod.phase = True, "Running"
        self._maker.refresh_config_maps(data)
        for container in pod.containers:
            if container.reap() and container.sidecar and pod.stop_deadline is None:
                container.last, container.restarts = container.ended, container.restarts + 1
                container.start()  # a native sidecar is restarted while its pod runs
        if pod.stop_deadline is None and all(c.ended for c in pod.mains):
            self._begin_stop(pod, pod.grace_s)  # the main containers are done: the sidecars go too
        if pod.stop_deadline is not None:
            self._stopping(pod)
        for container in pod.containers:
            if container.running and time.monotonic() - container.probed_at >= PROBE_S:
                container.ready = self._probe(pod, container)
                container.probed_at = time.monotonic()

    def _begin_stop(self, pod: Pod, grace_s: float) -> None:
        pod.stop_deadline = time.monotonic() + grace_s
        for container in pod.mains:
            container.signal(signal.SIGTERM)

    def _stopping(self, pod: Pod) -> None:
        """Main containers first, then the sidecars in reverse order, SIGKILL past the deadline; then the phase."""
        assert pod.stop_deadline is not None
        late = time.monotonic() >= pod.stop_deadline
        if any(c.running for c in pod.mains):
            if late:
                for container in pod.mains:
                    container.signal(signal.SIGKILL)
            return
        if not pod.stopping_sidecars:
            pod.stopping_sidecars = True
            pod.stop_deadline = max(pod.stop_deadline, time.monotonic() + 2.0)  # what is left of the grace, or 2 s
            for container in reversed(pod.sidecars):
                container.signal(signal.SIGTERM)
        if any(c.running for c in pod.sidecars):
            if late:
                for container in pod.sidecars:
                    container.signal(signal.SIGKILL)
            return
        # The kubelet's rule: a pod whose main containers all exited 0 succeeded, else it failed; sidecars do not count.
        pod.phase = "Succeeded" if all(c.ended and c.ended["exitCode"] == 0 for c in pod.mains) else "Failed"

    def _probe(self, pod: Pod, container: Container) -> bool:
        probe = container.spec.get("readinessProbe")
        if not probe:
            return True
        check = probe.get("httpGet") or probe.get("tcpSocket") or {}
        port = pod.ports[self._container_port(container, check["port"])]
        try:
            if "httpGet" in probe:
                url = f"http://127.0.0.1:{port}{probe['httpGet'].get('path', '/')}"
                with urllib.request.urlopen(url, timeout=0.5) as response:
                    return 200 <= response.status < 400
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    def _container_port(self, container: Container, port: int | str) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        [number] = [p["containerPort"] for p in container.spec.get("ports") or [] if p.get("name") == port]
        return int(number)

    def _status(self, pod: Pod, data: dict[str, Any]) -> dict[str, Any]:
        ready = pod.started and not pod.terminal and all(c.ready for c in pod.containers if c.running)
        ready = ready and all(c.running for c in pod.mains)
        ended = "PodCompleted" if pod.phase == "Succeeded" else "PodFailed"
        why = {"reason": ended} if pod.terminal else {}
        stamp = (data.get("status") or {}).get("startTime") or now_iso()
        conditions = [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True" if pod.started else "False"},
            {"type": "ContainersReady", "status": str(ready), **why},
            {"type": "Ready", "status": str(ready), **why},
        ]
        if pod.disruption:
            conditions.append(pod.disruption)
        image_ids = {c.name: f"sha256:{c.spec['image']}" for c in pod.containers}
        status: dict[str, Any] = {
            "phase": pod.phase,
            "conditions": conditions,
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "startTime": stamp,
            "initContainerStatuses": [c.status(image_ids[c.name]) for c in pod.sidecars],
            "containerStatuses": [c.status(image_ids[c.name]) for c in pod.mains],
        }
        if pod.reason:
            status.update(reason=pod.reason, message=pod.message)
        return status
