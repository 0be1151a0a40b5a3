"""The pods of the test node (tests/kube/kubelet.py): each container a local process, and how a pod's spec becomes
processes. An image is a local folder (the command runs there, `python` being this venv's). All pods share
127.0.0.1, where a cluster gives each pod its own network: each declared container port is mapped to a free port,
and the environment and arguments that name it are rewritten, as are paths under a volume's mount path (volumes are
local folders; a configMap volume holds the ConfigMap's keys as files).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from thresher.core.ports import free_port

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


class PodMaker:
    """Makes a Pod of this node from a pod's spec: its folders, volumes, ports, and each container's command and
    environment."""

    def __init__(self, core: k8s.CoreV1Api, namespace: str, root: Path, images: dict[str, Path]) -> None:
        self.core = core
        self.namespace = namespace
        self.root = root
        self.images = images

    def make(self, data: dict[str, Any]) -> Pod:
        meta, spec = data["metadata"], data["spec"]
        folder = self.root / meta["name"]
        volumes = {v["name"]: folder / "volumes" / v["name"] for v in spec.get("volumes") or []}
        for path in volumes.values():
            path.mkdir(parents=True, exist_ok=True)
        self.refresh_config_maps(data)
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

    def refresh_config_maps(self, data: dict[str, Any]) -> None:
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


def describe(data: Any) -> str:
    return json.dumps(data, indent=1, default=str)[:4000]
