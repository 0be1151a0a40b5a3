"""Every kustomize deploy is accepted by a real API server: `kubectl apply --dry-run=server -k` runs the server's
defaulting, validation (strict: unknown fields are refused) and admission on each object, which the offline schema
check (tests/unit/test_deploy_manifests.py) cannot. The CRDs the overlays use are installed from tests/kube/crds."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s

from tests.kube.controlplane import ControlPlane
from tests.unit.test_deploy_manifests import with_component

pytestmark = pytest.mark.timeout(120)

KUSTOMIZE = Path(__file__).resolve().parents[2] / "deploy" / "kustomize"
CRDS = Path(__file__).parent / "crds"
NAMESPACE = "thresher"  # the deploys' own namespace


def kubectl(control_plane: ControlPlane, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = ["kubectl", "--kubeconfig", str(control_plane.kubeconfig), *args]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=90, check=False)


@pytest.fixture(scope="module")
def cluster(control_plane: ControlPlane, admin_api: k8s.ApiClient) -> ControlPlane:
    """The CRDs installed and established, and the deploys' namespace (a dry run creates none)."""
    installed = kubectl(control_plane, "apply", "-f", str(CRDS))
    assert installed.returncode == 0, installed.stderr
    established = kubectl(control_plane, "wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")
    assert established.returncode == 0, established.stderr
    core = k8s.CoreV1Api(admin_api)
    if not core.list_namespace(field_selector=f"metadata.name={NAMESPACE}").items:
        core.create_namespace({"metadata": {"name": NAMESPACE}})
    return control_plane


@pytest.mark.parametrize("target", ["base", "overlays/dev", "overlays/prod"])
def test_the_api_server_accepts_every_object_of_the_deploy(cluster: ControlPlane, target: str) -> None:
    applied = kubectl(cluster, "apply", "--dry-run=server", "-k", str(KUSTOMIZE / target))

    assert applied.returncode == 0, applied.stderr
    assert "(server dry run)" in applied.stdout


@pytest.mark.parametrize("target", ["overlays/dev", "overlays/prod"])
def test_the_api_server_accepts_an_overlay_with_the_open_routes_component(
    cluster: ControlPlane, target: str, tmp_path: Path
) -> None:
    """The component each overlay lists commented out (Cortex's job routes without a key), once listed."""
    overlay = KUSTOMIZE / with_component(target, "open-routes", tmp_path)
    applied = kubectl(cluster, "apply", "--dry-run=server", "-k", str(overlay))

    assert applied.returncode == 0, applied.stderr
    assert "deployment.apps/thresher-gateway " in applied.stdout and "(server dry run)" in applied.stdout


def test_the_server_dry_run_refuses_an_object_the_server_would_refuse(cluster: ControlPlane) -> None:
    """The check can fail, and on more than a schema: a port out of range is valid JSON of the right type."""
    rendered = kubectl(cluster, "kustomize", str(KUSTOMIZE / "base"))
    assert rendered.returncode == 0, rendered.stderr
    objects = [o for o in yaml.safe_load_all(rendered.stdout) if o]
    [deployment] = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "thresher-gateway"]
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = 70000

    applied = kubectl(cluster, "apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(deployment))

    assert applied.returncode != 0
    assert "containerPort" in applied.stderr and "65535" in applied.stderr
