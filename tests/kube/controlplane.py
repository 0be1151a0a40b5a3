"""A real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver and kube-controller-manager, built by
`make kube` (tests/fixtures/build-kube.sh) and started here with certificates made for the run.

The controller manager runs only what the tests rely on: the Job controller (unless `running(controllers=...)`
leaves it out, for tests that play it), the garbage collector (a Job deleted in the foreground takes its pods and
its ConfigMap along) and the service account controller (each namespace's `default` account, which pods need).
No node lifecycle controller: the node's kubelet is the test harness, which sends no heartbeats. No scheduler
either: the harness binds pods itself.
"""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests import pki
from tests.helpers import eventually
from thresher.core.ports import free_port

# Where tests/fixtures/build-kube.sh puts the binaries (the same variables, the same defaults).
K8S_VERSION = os.environ.get("THRESHER_K8S_VERSION", "1.34.4")
CACHE = Path(
    os.environ.get("THRESHER_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "thresher"
)
BINARIES = CACHE / f"kube-v{K8S_VERSION}"
READY_TIMEOUT_S = 90.0  # measured 7-11 s on an idle machine; the machine is shared
STOP_TIMEOUT_S = 15.0
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc"
ALL_CONTROLLERS = "job,garbagecollector,serviceaccount"


def missing_binaries() -> list[str]:
    return [name for name in ("etcd", "kube-apiserver", "kube-controller-manager") if not (BINARIES / name).is_file()]


@dataclass(frozen=True)
class ControlPlane:
    """A running control plane: `url` of the API server, `kubeconfig` of an admin (system:masters)."""

    url: str
    kubeconfig: Path
    ca_file: Path
    folder: Path

    def kubeconfig_for_token(self, token: str, name: str) -> Path:
        """A kubeconfig that authenticates with a bearer token (e.g. a service account's), not a certificate."""
        path = self.folder / f"{name}.kubeconfig"
        path.write_text(yaml.safe_dump(_kubeconfig(self.url, self.ca_file, {"token": token})), encoding="utf-8")
        path.chmod(0o600)
        return path


class Processes:
    """The control plane's processes, stopped in reverse order; each one's output goes to a log file."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.folder / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.running.append((name, proc))
        return proc

    def check_alive(self) -> None:
        for name, proc in self.running:
            if proc.poll() is not None:
                tail = (self.folder / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with code {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for _, proc in reversed(self.running):
            proc.terminate()
        for _, proc in reversed(self.running):
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.running.clear()


@contextmanager
def running(folder: Path, controllers: str = ALL_CONTROLLERS) -> Iterator[ControlPlane]:
    """A control plane (its controller manager running `controllers`) for the `with` block; without the binaries,
    a clear failure in CI and a skip elsewhere."""
    if missing := missing_binaries():
        why = (
            f"the Kubernetes control plane is not built ({', '.join(missing)} missing in {BINARIES}): "
            "run `make kube` (once; 15-25 minutes)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    shm = Path("/dev/shm")
    data_dir = Path(tempfile.mkdtemp(prefix="thresher-etcd-", dir=shm if shm.is_dir() else None))
    processes = Processes(folder)
    try:
        yield start(folder, data_dir, processes, controllers)
    finally:
        processes.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def start(folder: Path, data_dir: Path, processes: Processes, controllers: str = ALL_CONTROLLERS) -> ControlPlane:
    """Start etcd (its data in `data_dir`, ideally on /dev/shm), the API server and the controller manager."""
    pki = _make_pki(folder)
    etcd_port, etcd_peer_port, api_port = free_port(), free_port(), free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    processes.start("etcd", [
        str(BINARIES / "etcd"), "--data-dir", str(data_dir), "--name", "thresher-test",
        "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
        "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer_port}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer_port}",
        "--initial-cluster", f"thresher-test=http://127.0.0.1:{etcd_peer_port}",
        "--unsafe-no-fsync", "--log-level", "warn",
    ])  # fmt: skip
    url = f"https://127.0.0.1:{api_port}"
    processes.start("kube-apiserver", [
        str(BINARIES / "kube-apiserver"), "--etcd-servers", etcd_url,
        "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", str(api_port),
        "--tls-cert-file", str(pki["apiserver.crt"]), "--tls-private-key-file", str(pki["apiserver.key"]),
        "--client-ca-file", str(pki["ca.crt"]), "--authorization-mode", "RBAC",
        "--service-account-issuer", SERVICE_ACCOUNT_ISSUER,
        "--service-account-key-file", str(pki["sa.pub"]),
        "--service-account-signing-key-file", str(pki["sa.key"]),
        "--service-cluster-ip-range", "10.96.0.0/24", "--endpoint-reconciler-type", "none",
        "--cert-dir", str(folder / "apiserver-certs"), "--enable-priority-and-fairness=false", "--profiling=false",
    ])  # fmt: skip
    admin = _write_kubeconfig(folder / "admin.kubeconfig", url, pki, "admin")
    manager = _write_kubeconfig(folder / "controller-manager.kubeconfig", url, pki, "controller-manager")
    plane = ControlPlane(url, admin, pki["ca.crt"], folder)
    _wait_ready(plane, pki, processes)
    processes.start("kube-controller-manager", [
        str(BINARIES / "kube-controller-manager"), "--kubeconfig", str(manager),
        "--controllers", controllers, "--leader-elect=false",
        "--bind-address", "127.0.0.1", "--secure-port", "0",
        "--concurrent-job-syncs", "2", "--profiling=false",
    ])  # fmt: skip
    return plane


def _wait_ready(plane: ControlPlane, pki: dict[str, Path], processes: Processes) -> None:
    context = ssl.create_default_context(cafile=str(pki["ca.crt"]))
    context.load_cert_chain(pki["admin.crt"], pki["admin.key"])

    def ready() -> None:
        processes.check_alive()  # a process that exited ends the wait at once (RuntimeError)
        try:
            with urllib.request.urlopen(f"{plane.url}/readyz", context=context, timeout=5) as response:
                assert response.status == 200, f"kube-apiserver's /readyz answered {response.status}"
        except OSError as e:
            raise AssertionError(f"kube-apiserver was not ready within {READY_TIMEOUT_S} s: {e}") from e

    eventually(ready, READY_TIMEOUT_S, interval_s=0.5)


# --- certificates ----------------------------------------------------------------------------------------------------


def _make_pki(folder: Path) -> dict[str, Path]:
    """A CA; the API server's serving certificate; client certificates for an admin and the controller manager (both
    in system:masters: without the bootstrap RBAC of a full cluster, the manager's own identity has no rights); and
    the key pair that signs service account tokens."""
    ca = pki.Authority(folder, "thresher-test-ca")
    files = {"ca.crt": ca.ca_file}
    leaves = {"apiserver": ("kube-apiserver", ""), "admin": ("admin", "system:masters"),
              "controller-manager": ("system:kube-controller-manager", "system:masters")}  # fmt: skip
    for name, (common_name, organization) in leaves.items():
        files[f"{name}.crt"], files[f"{name}.key"] = ca.issue(common_name, organization)
    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files["sa.key"] = pki.write_pem(folder / "sa.key", pki.private_pem(signing))
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    files["sa.pub"] = pki.write_pem(
        folder / "sa.pub", signing.public_key().public_bytes(serialization.Encoding.PEM, public)
    )
    return files


def _write_kubeconfig(path: Path, url: str, pki: dict[str, Path], user: str) -> Path:
    credentials = {"client-certificate": str(pki[f"{user}.crt"]), "client-key": str(pki[f"{user}.key"])}
    path.write_text(yaml.safe_dump(_kubeconfig(url, pki["ca.crt"], credentials)), encoding="utf-8")
    path.chmod(0o600)
    return path


def _kubeconfig(url: str, ca_file: Path, user: dict[str, str]) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": url, "certificate-authority": str(ca_file)}}],
        "users": [{"name": "test", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
        "current-context": "test",
    }
