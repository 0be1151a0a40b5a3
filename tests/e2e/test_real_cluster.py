"""The Kubernetes runtime against a real cluster (kind is enough). Opt-in: skipped unless THRESHER_TEST_KUBECONFIG
names a kubeconfig file. No full cluster (kubelets, a container runtime, images) can run on the development
machines, so this is never part of `make test`; tests/kube runs jobs on a real control plane instead.

    THRESHER_TEST_KUBECONFIG=~/.kube/config .venv/bin/python -m pytest -q tests/e2e/test_real_cluster.py

The test creates a namespace of its own and deletes it at the end. A real API server validates the Job (native
sidecar, podFailurePolicy), the real Job controller makes its pods, and stopping leaves none. The images need not
be present in the cluster: a worker waiting for its image is still a worker the runtime must see and remove.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes.aio import client as k8s
from kubernetes.aio import config as k8s_config

from tests.helpers import assert_eventually, stack_trust
from thresher.core.config import Config
from thresher.core.runtime import WorkerLaunch
from thresher.core.runtime.kubernetes import KubernetesRuntime
from thresher.v1 import jobs_pb2

KUBECONFIG = os.environ.get("THRESHER_TEST_KUBECONFIG", "")
pytestmark = [
    pytest.mark.skipif(not KUBECONFIG, reason="set THRESHER_TEST_KUBECONFIG to run against a real cluster"),
    pytest.mark.timeout(300),
]


@pytest.fixture
async def core() -> AsyncIterator[k8s.CoreV1Api]:
    configuration = k8s.Configuration()
    await k8s_config.load_kube_config(
        config_file=str(Path(KUBECONFIG).expanduser()), client_configuration=configuration
    )
    async with k8s.ApiClient(configuration) as api:
        yield k8s.CoreV1Api(api)


@pytest.fixture
async def namespace(core: k8s.CoreV1Api) -> AsyncIterator[str]:
    name = f"thresher-test-{secrets.token_hex(3)}"
    await core.create_namespace({"metadata": {"name": name}})
    try:
        yield name
    finally:
        await core.delete_namespace(name)


@pytest.fixture
async def runtime(namespace: str, tmp_path: Path) -> AsyncIterator[KubernetesRuntime]:
    config = Config(data_dir=tmp_path)
    config.queue.backend = "sqs"
    config.kubernetes.kubeconfig = str(Path(KUBECONFIG).expanduser())
    config.kubernetes.namespace = namespace
    config.kubernetes.image = os.environ.get("THRESHER_TEST_IMAGE", "thresher:dev")
    config.runtime.stop_grace_s = 5
    stack_trust(config)  # the scheduler's secret, from which the worker Job's token is made
    runtime = KubernetesRuntime(config)
    yield runtime
    await runtime.close()


def launch(job_id: str) -> WorkerLaunch:
    api = jobs_pb2.ApiSpec(name="sleeper", port=8080)
    api.containers.append(
        jobs_pb2.Container(name="api", image="python:3.11-slim", command=["python", "-m", "http.server", "8080"])
    )
    spec = {"job_id": job_id, "api_name": "sleeper", "timeout": 600, "start_time": None}
    return WorkerLaunch(job_id, api, f"thresher_sleeper_{job_id}", spec, max_receive_count=3, batch_timeout_s=60.0)


async def test_workers_run_as_pods_of_one_job_and_none_is_left_after_stop(
    runtime: KubernetesRuntime, core: k8s.CoreV1Api, namespace: str
) -> None:
    job_id = f"{int(time.time()):x}{secrets.token_hex(2)}"
    await runtime.ensure_workers(launch(job_id), 2)

    async def two_workers() -> None:
        assert len(await runtime.workers(job_id)) >= 2

    await assert_eventually(two_workers, timeout_s=120, interval_s=1)

    await runtime.stop_workers(job_id, grace_s=5)

    selector = f"thresher.dev/job={job_id}"
    assert not (await core.list_namespaced_pod(namespace, label_selector=selector)).items
    assert not (await core.list_namespaced_config_map(namespace, label_selector=selector)).items
