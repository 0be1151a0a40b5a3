"""Fixtures of the real-control-plane tests: the control plane (once per session), a namespace per test, and the
node (the kubelet stand-in) that runs the namespace's pods."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.e2e.conftest import WORKERS_DIR
from tests.helpers import wait_until
from tests.kube import controlplane
from tests.kube.kubelet import Kubelet

ROOT = Path(__file__).resolve().parents[2]
THRESHER_IMAGE = "thresher:test"  # the dequeuer's image: this repository, run with this venv's Python
RECORDER_IMAGE = "thresher-test-recorder"  # tests/e2e/workers/apis.yaml's worker
SERVICE_ACCOUNT_TIMEOUT_S = 30.0


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[controlplane.ControlPlane]:
    """etcd, kube-apiserver and kube-controller-manager on 127.0.0.1, stopped at the end of the session."""
    with controlplane.running(tmp_path_factory.mktemp("control-plane")) as plane:
        yield plane


@pytest.fixture(scope="session")
def admin_api(control_plane: controlplane.ControlPlane) -> Iterator[k8s.ApiClient]:
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(config_file=str(control_plane.kubeconfig), client_configuration=configuration)
    with k8s.ApiClient(configuration) as api:
        yield api


@pytest.fixture(scope="module")
def namespace(admin_api: k8s.ApiClient) -> Iterator[str]:
    """A namespace of the module's own, once its `default` service account exists (pods need one)."""
    core = k8s.CoreV1Api(admin_api)
    name = f"t-{secrets.token_hex(4)}"
    core.create_namespace({"metadata": {"name": name}})
    wait_until(
        lambda: core.list_namespaced_service_account(name, field_selector="metadata.name=default").items,
        SERVICE_ACCOUNT_TIMEOUT_S,
        f"a default service account in namespace {name}",
        interval_s=0.2,
    )
    try:
        yield name
    finally:
        core.delete_namespace(name, grace_period_seconds=0)


@pytest.fixture(scope="module")
def kubelet(admin_api: k8s.ApiClient, namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubelet]:
    """The node: runs the namespace's pods as local processes, none of which outlives the module."""
    images = {THRESHER_IMAGE: ROOT, RECORDER_IMAGE: WORKERS_DIR}
    node = Kubelet(admin_api, namespace, tmp_path_factory.mktemp("node"), images)
    node.start()
    try:
        yield node
    finally:
        node.close()
        k8s.CoreV1Api(admin_api).delete_node(node.node_name)
    assert node.error is None, f"the kubelet stand-in failed: {node.error!r}"
