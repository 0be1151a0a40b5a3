"""The Kubernetes runtime's contract tests run against a real API server on 127.0.0.1 (tests/kube's control plane),
its controller manager running the garbage collector and the service account controller but no Job controller: the
tests play the Job controller and the kubelet themselves (harness.Kubelet). Each test has a namespace of its own."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from kubernetes.aio import client as k8s
from kubernetes.aio import config as k8s_config

from tests.contract.k8s_runtime.harness import SECRET, Kubelet
from tests.helpers import assert_eventually, stack_trust
from tests.kube import controlplane
from thresher.core.config import Config
from thresher.core.runtime.kubernetes import KubernetesRuntime

SERVICE_ACCOUNT_TIMEOUT_S = 30.0


@pytest.fixture(scope="session")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[controlplane.ControlPlane]:
    with controlplane.running(tmp_path_factory.mktemp("api-server"), "garbagecollector,serviceaccount") as plane:
        yield plane


@pytest.fixture
async def api(api_server: controlplane.ControlPlane) -> AsyncIterator[k8s.ApiClient]:
    configuration = k8s.Configuration()
    await k8s_config.load_kube_config(config_file=str(api_server.kubeconfig), client_configuration=configuration)
    async with k8s.ApiClient(configuration) as api_client:
        yield api_client


@pytest.fixture
async def namespace(api: k8s.ApiClient) -> AsyncIterator[str]:
    """A namespace of the test's own, once its `default` service account exists (pods need one)."""
    core = k8s.CoreV1Api(api)
    name = f"t-{secrets.token_hex(4)}"
    await core.create_namespace({"metadata": {"name": name}})

    async def has_service_account() -> None:
        found = await core.list_namespaced_service_account(name, field_selector="metadata.name=default")
        assert found.items, f"no default service account in namespace {name}"

    await assert_eventually(has_service_account, SERVICE_ACCOUNT_TIMEOUT_S, interval_s=0.1)
    yield name
    await core.delete_namespace(name, grace_period_seconds=0)


@pytest.fixture
def config(tmp_path: Any, namespace: str) -> Config:
    config = Config(data_dir=tmp_path)
    config.queue.backend = "sqs"
    config.addresses.monitor = "thresher-monitor:7003"
    config.runtime.max_worker_restarts = 2
    config.kubernetes.namespace = namespace
    config.kubernetes.image = "registry.example/thresher:1.0"
    config.kubernetes.stalled_after_s = 60
    for section in dataclasses.fields(config):  # whatever credentials the config holds must not reach a pod
        value = getattr(config, section.name)
        for field in dataclasses.fields(value) if dataclasses.is_dataclass(value) else ():
            # kubernetes.env_secret is only a name, auth.internal_secret_file a file's
            if "secret" in field.name and section.name != "kubernetes" and not field.name.endswith("_file"):
                setattr(value, field.name, SECRET)
    stack_trust(config)
    return config


@pytest.fixture
async def runtime(config: Config, api: k8s.ApiClient) -> AsyncIterator[KubernetesRuntime]:
    runtime = KubernetesRuntime(config, api_client=api)
    yield runtime
    await runtime.close()


@pytest.fixture
def kubelet(api: k8s.ApiClient, namespace: str) -> Kubelet:
    return Kubelet(api, namespace)
