"""The node of the test cluster: a kubelet stand-in that runs pods' containers as local processes.

There is no container runtime here, so the harness plays the one node: it registers a Node, binds the namespace's
pods to it (there is no scheduler), starts each pod's containers as processes (native sidecars first, restarted when
they exit; then the main containers), probes their readiness, and writes phase, conditions and container statuses
through the pod status subresource, as a kubelet does. A deleted pod's main containers get SIGTERM, then its
sidecars, each SIGKILL after the grace period; the pod is then removed. `reclaim` ends a pod as a spot interruption
does (graceful node shutdown: DisruptionTarget, SIGTERM, grace, exit), and `oom_kill` kills a container as the kernel
does when it exceeds its memory limit (exit 137, reason OOMKilled).

An image is a local folder (the command runs there, `python` being this venv's). All pods share 127.0.0.1, where a
cluster gives each pod its own network: each declared container port is mapped to a free port, and the environment
and arguments that name it are rewritten, as are paths under a volume's mount path (volumes are local folders).
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from thresher.ports import free_port

SYNC_S = 0.2  # how often the node looks at its pods
PROBE_S = 1.0  # readiness checks, at most this often per container (a kubelet's period is 5 s or more)
SHUTDOWN_MESSAGE = "Pod was terminated in response to imminent node shutdown."
_VARIABLE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Container:
    """One container of a pod on this node: its process, and what its status reports."""

    spec: dict[str, Any]
    sidecar: bool
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    restarts: int = 0
    ended: dict[str, Any] | None = None  # state.terminated
    last: dict[str, Any] | None = None  # lastState.terminated
    oom: bool = False  # the process was killed for memory
    ready: bool = False
    probed_at: float = 0.0

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.proc is not None and self.ended is None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.started_at, self.ended, self.ready, self.oom = now_iso(), None, False, False

    def signal(self, sig: int) -> None:
        if self.running:
            assert self.proc is not None
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def reap(self) -> bool:
        """Record the exit of a process that ended; True when it just did."""
        if not self.running or self.proc is None or (code := self.proc.poll()) is None:
            return False
        exit_code = 128 - code if code < 0 else code
        reason = "OOMKilled" if self.oom else ("Completed" if exit_code == 0 else "Error")
        self.ended = {"exitCode": exit_code, "reason": reason, "startedAt": self.started_at, "finishedAt": now_iso()}
        self.ready = False
        return True

    def status(self, image_id: str) -> dict[str, Any]:
        state = {"terminated": self.ended} if self.ended else {"running": {"startedAt": self.started_at}}
        status = {
            "name": self.name,
            "image": self.spec["image"],
            "imageID": image_id,
            "containerID": f"test://{self.proc.pid}" if self.proc else "",
            "ready": self.ready,
            "started": self.running,
            "restartCount": self.restarts,
            "state": state if self.proc else {"waiting": {"reason": "ContainerCreating"}},
            "lastState": {"terminated": self.last} if self.last else {},
        }
        return status


@dataclass
class Pod:
    """A pod bound to this node."""

    name: str
    containers: list[Container]  # sidecars first, in order, then the main containers
    ports: dict[int, int]  # declared container port -> the port it gets on 127.0.0.1
    grace_s: float
    started: bool = False
    stop_deadline: float | None = None  # set once the pod is being stopped
    stopping_sidecars: bool = False
    phase: str = "Pending"
    disruption: dict[str, Any] | None = None
    reason: str = ""
    message: str = ""
    remove_when_done: bool = False
    written: dict[str, Any] = field(default_factory=dict)

    @property
    def sidecars(self) -> list[Container]:
        return [c for c in self.containers if c.sidecar]

    @property
    def mains(self) -> list[Container]:
        return [c for c in self.containers if not c.sidecar]

    @property
    def terminal(self) -> bool:
        return self.phase in ("Succeeded", "Failed")


class Kubelet:
    """Runs the pods of `namespace` on one node, in a thread of its own, until `close()`."""

    def __init__(self, api: k8s.ApiClient, namespace: str, root: Path, images: dict[str, Path]) -> None:
        self.core = k8s.CoreV1Api(api)
        self.namespace = namespace
        self.node_name = f"node-{namespace}"
        self.root = root
        self.images = images
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
        try:
            while not self._closing.is_set():
                self._sync()
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
            self.pods[name] = self._prepare(data)
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
        self._refresh_config_maps(data)
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

    # --- a pod's processes, volumes, environment and ports -----------------------------------------------------------

    def _prepare(self, data: dict[str, Any]) -> Pod:
        meta, spec = data["metadata"], data["spec"]
        folder = self.root / meta["name"]
        volumes = {v["name"]: folder / "volumes" / v["name"] for v in spec.get("volumes") or []}
        for path in volumes.values():
            path.mkdir(parents=True, exist_ok=True)
        self._refresh_config_maps(data)
        ports = {
            p["containerPort"]: free_port()
            for c in [*(spec.get("initContainers") or []), *spec["containers"]]
            for p in c.get("ports") or []
        }
        containers = []
        for c in spec.get("initContainers") or []:
            if c.get("restartPolicy") != "Always":
                raise NotImplementedError(f"init container {c['name']}: only native sidecars are run here")
            containers.append(self._container(c, True, meta, folder, volumes, ports))
        containers += [self._container(c, False, meta, folder, volumes, ports) for c in spec["containers"]]
        grace_s = float(spec.get("terminationGracePeriodSeconds", 30))
        return Pod(meta["name"], containers, ports, grace_s)

    def _refresh_config_maps(self, data: dict[str, Any]) -> None:
        """Write each configMap volume's keys as files (a kubelet syncs them the same way, later)."""
        folder = self.root / data["metadata"]["name"] / "volumes"
        for volume in data["spec"].get("volumes") or []:
            if "configMap" in volume:
                try:
                    found = self.core.read_namespaced_config_map(volume["configMap"]["name"], self.namespace)
                except k8s.ApiException as e:
                    if e.status == 404:
                        continue
                    raise
                for key, value in (found.data or {}).items():
                    path = folder / volume["name"] / key
                    if not path.exists() or path.read_text(encoding="utf-8") != value:
                        path.write_text(value, encoding="utf-8")

    def _container(
        self,
        spec: dict[str, Any],
        sidecar: bool,
        meta: dict[str, Any],
        folder: Path,
        volumes: dict[str, Path],
        ports: dict[int, int],
    ) -> Container:
        mounts = {m["mountPath"]: volumes[m["name"]] for m in spec.get("volumeMounts") or []}

        def local(value: str) -> str:
            for mount, path in mounts.items():
                if value == mount or value.startswith(mount.rstrip("/") + "/"):
                    return str(path) + value[len(mount.rstrip("/")) :]
            if value.isdigit() and int(value) in ports:
                return str(ports[int(value)])
            host, _, port = value.rpartition(":")
            if port.isdigit() and int(port) in ports and host in ("0.0.0.0", "127.0.0.1", "localhost"):
                return f"127.0.0.1:{ports[int(port)]}"
            return value

        env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "HOME": str(folder)}
        env |= {k: local(v) for k, v in self._environment(spec, meta).items()}
        argv = [local(_expand(arg, env)) for arg in [*(spec.get("command") or []), *(spec.get("args") or [])]]
        argv = [sys.executable if i == 0 and arg == "python" else arg for i, arg in enumerate(argv)]
        image = self.images.get(spec["image"])
        if image is None:
            raise LookupError(f"no local folder for image {spec['image']!r} (known: {sorted(self.images)})")
        return Container(spec, sidecar, argv, env, image, folder / f"{spec['name']}.log")

    def _environment(self, spec: dict[str, Any], meta: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in spec.get("envFrom") or []:
            if "secretRef" in source:
                env |= self._secret(source["secretRef"]["name"])
            elif "configMapRef" in source:
                env |= self.core.read_namespaced_config_map(source["configMapRef"]["name"], self.namespace).data or {}
        for variable in spec.get("env") or []:
            if "value" in variable:
                env[variable["name"]] = _expand(variable["value"], env)
            elif (ref := (variable.get("valueFrom") or {}).get("fieldRef")) is not None:
                path = ref["fieldPath"]
                env[variable["name"]] = {"metadata.name": meta["name"], "metadata.namespace": self.namespace}[path]
            elif (ref := (variable.get("valueFrom") or {}).get("secretKeyRef")) is not None:
                env[variable["name"]] = self._secret(ref["name"])[ref["key"]]
        return env

    def _secret(self, name: str) -> dict[str, str]:
        found = self.core.read_namespaced_secret(name, self.namespace)
        return {k: base64.b64decode(v).decode() for k, v in (found.data or {}).items()}


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in env values, commands and arguments ($$ stands for $)."""
    return _VARIABLE.sub(lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), value)


def pod_statuses(core: k8s.CoreV1Api, namespace: str, selector: str) -> dict[str, dict[str, Any]]:
    """Each selected pod's status as JSON, by name."""
    return {
        p.metadata.name: core.api_client.sanitize_for_serialization(p.status) or {}
        for p in core.list_namespaced_pod(namespace, label_selector=selector).items
    }


def describe(data: Any) -> str:
    return json.dumps(data, indent=1, default=str)[:4000]
