"""Jobs on the Kubernetes runtime, end to end, on a real API server and the real Job controller.

`thresher up` runs the services with `runtime.backend = kubernetes`, SQS and S3 on moto's server. The scheduler
reaches the API server as the base overlay's ServiceAccount (a TokenRequest token after applying the base RBAC for
real), not as an admin: every job here also proves the Role sufficient. The node is the test harness
(tests/kube/kubelet.py): each worker pod runs the recording worker (tests/e2e/workers) and the real dequeuer as
local processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import AWS_ENV
from tests.e2e.conftest import WORKERS_DIR, processes_mentioning
from tests.helpers import wait_until
from tests.kube.conftest import THRESHER_IMAGE
from tests.kube.controlplane import ControlPlane
from tests.kube.kubelet import Kubelet
from tests.kube.pods import describe
from thresher.core.statuses import FINAL_NAMES
from thresher.tools.client import GatewayClient
from thresher.tools.launcher import StackProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

KUSTOMIZE_BASE = Path(__file__).resolve().parents[2] / "deploy" / "kustomize" / "base"
SCHEDULER_ACCOUNT = "thresher-scheduler"
AWS_SECRET = "thresher-aws"
RESTART_BUDGET = 1


@pytest.fixture(scope="module")
def scheduler_kubeconfig(control_plane: ControlPlane, admin_api: k8s.ApiClient, namespace: str) -> Path:
    """The base overlay's RBAC applied for real; a kubeconfig with the scheduler's ServiceAccount token."""
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(KUSTOMIZE_BASE)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    rbac = [
        obj for obj in yaml.safe_load_all(rendered) if obj and obj["kind"] in ("ServiceAccount", "Role", "RoleBinding")
    ]
    for obj in rbac:
        obj["metadata"]["namespace"] = namespace
        for subject in obj.get("subjects") or []:
            subject["namespace"] = namespace
    applied = subprocess.run(
        ["kubectl", "--kubeconfig", str(control_plane.kubeconfig), "apply", "-f", "-"],
        input=yaml.safe_dump_all(rbac),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    request = {"spec": {"audiences": [], "expirationSeconds": 3600}}
    token = k8s.CoreV1Api(admin_api).create_namespaced_service_account_token(SCHEDULER_ACCOUNT, namespace, request)
    return control_plane.kubeconfig_for_token(token.status.token, SCHEDULER_ACCOUNT)


@pytest.fixture(scope="module")
def stack(
    moto_server: str,
    admin_api: k8s.ApiClient,
    namespace: str,
    kubelet: Kubelet,
    scheduler_kubeconfig: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StackProcess]:
    """`thresher up` on SQS and S3 (moto), its workers on Kubernetes; the dequeuers' AWS credentials come from a
    Secret (kubernetes.env_secret), as in the dev overlay."""
    secret = {"metadata": {"name": AWS_SECRET}, "stringData": AWS_ENV}
    k8s.CoreV1Api(admin_api).create_namespaced_secret(namespace, secret)
    region = AWS_ENV["AWS_DEFAULT_REGION"]
    backends = ["--queue-backend", "sqs", "--sqs-endpoint-url", moto_server, "--sqs-region", region,
                "--s3-endpoint-url", moto_server, "--s3-region", region]  # fmt: skip
    env = {
        **AWS_ENV,
        "THRESHER_RUNTIME_BACKEND": "kubernetes",
        "THRESHER_RUNTIME_STOP_GRACE_S": "5",
        "THRESHER_RUNTIME_MAX_WORKER_RESTARTS": str(RESTART_BUDGET),
        "THRESHER_KUBERNETES_KUBECONFIG": str(scheduler_kubeconfig),
        "THRESHER_KUBERNETES_NAMESPACE": namespace,
        "THRESHER_KUBERNETES_IMAGE": THRESHER_IMAGE,
        "THRESHER_KUBERNETES_IMAGE_PULL_POLICY": "Never",
        "THRESHER_KUBERNETES_ENV_SECRET": AWS_SECRET,
        # Elastic jobs only: grow when the backlog takes over 2 s, a worker idle for 2 s exits.
        "THRESHER_SCALING_TARGET_DRAIN_S": "2",
        "THRESHER_SCALING_IDLE_S": "2",
    }
    folder = tmp_path_factory.mktemp("stack")
    stack = StackProcess(folder / "data", apis=WORKERS_DIR / "apis.yaml", args=backends, env=env)
    try:
        yield stack
    finally:
        stack.stop()
        for pid in processes_mentioning(str(folder)):
            os.kill(pid, signal.SIGKILL)  # nothing the test started outlives it


@pytest.fixture
def client(stack: StackProcess) -> GatewayClient:
    return GatewayClient(stack.url, api_key=stack.api_key)


@pytest.fixture
def core(admin_api: k8s.ApiClient) -> k8s.CoreV1Api:
    return k8s.CoreV1Api(admin_api)


def items_job(out: Path, items: int, batch_size: int, workers: int = 2, **config: Any) -> dict[str, Any]:
    return {
        "workers": workers,
        "item_list": {"items": list(range(items)), "batch_size": batch_size},
        "config": {"out_dir": str(out), **config},
    }


def final_status(client: GatewayClient, job_id: str, kubelet: Kubelet, timeout_s: float = 120) -> dict[str, Any]:
    status: dict[str, Any] = {}

    def ended() -> bool:
        nonlocal status
        if kubelet.error is not None:  # the node is broken: no use waiting
            pytest.fail(f"the kubelet failed: {kubelet.error}")
        status = client.get("recorder", job_id)
        return status["job_status"]["status"] in FINAL_NAMES

    try:
        wait_until(ended, timeout_s, f"job {job_id} to end", interval_s=0.2)
    except AssertionError as e:
        raise AssertionError(f"{e}: {describe(status)}") from None
    return status


def records(out: Path, kind: str) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(out.glob(f"{kind}-*.jsonl")) for line in path.read_text().splitlines()]


def nothing_left(core: k8s.CoreV1Api, namespace: str, job_id: str, kubelet: Kubelet) -> None:
    """Scale to zero: the job's Job, pods and ConfigMap are gone, and no process of it runs on the node."""
    selector = f"thresher.dev/job={job_id}"
    batch = k8s.BatchV1Api(core.api_client)

    def gone() -> bool:
        return not (
            batch.list_namespaced_job(namespace, label_selector=selector).items
            or core.list_namespaced_pod(namespace, label_selector=selector).items
            or core.list_namespaced_config_map(namespace, label_selector=selector).items
        )

    wait_until(gone, 30, f"the Job, pods and ConfigMap of job {job_id} to go")
    wait_until(lambda: not kubelet.processes(), 15, "every container process to end")


def scheduler_metric(stack: StackProcess, name: str, **labels: str) -> float:
    """A series of the scheduler's /metrics for the recorder API (0 until it exists)."""
    endpoints = json.loads((stack.data_dir / "endpoints.json").read_text(encoding="utf-8"))
    with urllib.request.urlopen(endpoints["scheduler"]["metrics"], timeout=10) as response:
        text = response.read().decode()
    wanted = {"api_name": "recorder", **labels}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == wanted:
                return float(sample.value)
    return 0.0


def ran_pods(kubelet: Kubelet, job_id: str) -> list[str]:
    return [name for name in kubelet.history if job_id in name]


# --- the tests -----------------------------------------------------------------------------------------------------


def test_the_scheduler_runs_as_its_service_account_with_only_its_roles_rights(
    scheduler_kubeconfig: Path, namespace: str
) -> None:
    """What the jobs below prove sufficient is the Role, not an admin's rights."""

    def can_i(verb: str, resource: str, where: str = namespace) -> str:
        argv = ["kubectl", "--kubeconfig", str(scheduler_kubeconfig), "auth", "can-i", verb, resource, "-n", where]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False).stdout.strip()

    assert [can_i("create", "jobs.batch"), can_i("watch", "pods"), can_i("patch", "configmaps")] == ["yes"] * 3
    assert [can_i("get", "secrets"), can_i("list", "nodes"), can_i("create", "jobs.batch", "default")] == ["no"] * 3


def test_a_job_succeeds_on_worker_pods_and_nothing_of_it_is_left(
    client: GatewayClient, core: k8s.CoreV1Api, namespace: str, kubelet: Kubelet, tmp_path: Path
) -> None:
    # Given a job of 10 batches on 2 workers
    out = tmp_path / "out"
    submitted = client.submit("recorder", items_job(out, 30, 3))

    # When it runs
    status = final_status(client, submitted["job_id"], kubelet)

    # Then every item was processed by the pods of one Job, and the hook was called once
    assert status["job_status"]["status"] == "succeeded", describe(status)
    assert sorted(i for r in records(out, "items") for i in r["items"]) == list(range(30))
    assert len((out / "hooks.jsonl").read_text().splitlines()) == 1
    assert len(ran_pods(kubelet, submitted["job_id"])) >= 2
    nothing_left(core, namespace, submitted["job_id"], kubelet)


def test_a_poison_batch_is_dead_lettered_after_its_attempts(
    client: GatewayClient, core: k8s.CoreV1Api, namespace: str, kubelet: Kubelet, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    submitted = client.submit("recorder", items_job(out, 12, 3, fail_items=[7]))

    status = final_status(client, submitted["job_id"], kubelet)

    assert status["job_status"]["status"] == "completed_with_failures", describe(status)
    assert (status["metrics"]["succeeded"], status["metrics"]["dead_lettered"]) == (3, 1)
    [failed] = client.failed(submitted["job_id"])
    assert (failed["items"], failed["attempts"]) == ([6, 7, 8], 3)
    nothing_left(core, namespace, submitted["job_id"], kubelet)


def test_a_crashed_worker_is_replaced_and_counted(
    stack: StackProcess, client: GatewayClient, core: k8s.CoreV1Api, namespace: str, kubelet: Kubelet, tmp_path: Path
) -> None:
    # Given a worker that dies the first time it sees item 4
    out = tmp_path / "out"
    restarts = scheduler_metric(stack, "thresher_worker_restarts_total", reason="failed")
    submitted = client.submit("recorder", items_job(out, 12, 2, workers=1, crash_once_items=[4]))

    status = final_status(client, submitted["job_id"], kubelet)

    # Then its pod failed, the Job controller made another, and every item was processed, none dead-lettered
    assert status["job_status"]["status"] == "succeeded", describe(status)
    assert (status["job_status"]["worker_restarts"], status["job_status"]["worker_disruptions"]) == (1, 0)
    assert scheduler_metric(stack, "thresher_worker_restarts_total", reason="failed") == restarts + 1
    assert sorted({i for r in records(out, "items") for i in r["items"]}) == list(range(12))
    assert len(ran_pods(kubelet, submitted["job_id"])) == 2
    nothing_left(core, namespace, submitted["job_id"], kubelet)


def test_a_spot_reclaim_mid_batch_replaces_the_pod_uses_no_attempt_and_is_counted(
    stack: StackProcess, client: GatewayClient, core: k8s.CoreV1Api, namespace: str, kubelet: Kubelet, tmp_path: Path
) -> None:
    # Given a job of slow batches on 2 workers
    out = tmp_path / "out"
    disruptions = scheduler_metric(stack, "thresher_worker_disruptions_total")
    restarts = scheduler_metric(stack, "thresher_worker_restarts_total", reason="failed")
    submitted = client.submit("recorder", items_job(out, 40, 1, slow_s=1.0))
    job_id = submitted["job_id"]

    # When a pod is reclaimed (graceful node shutdown of a spot instance) while its worker runs a batch
    busy = wait_until(lambda: _pod_running_a_batch(kubelet, job_id, out), 60, "a worker to take a batch")
    kubelet.reclaim(busy)

    # Then the Job controller replaces it while the job has work (after its pod-failure backoff, 10 s the first
    # time), and the job's status counts the disruption, not a crash
    wait_until(lambda: len(ran_pods(kubelet, job_id)) >= 3, 60, "a replacement pod")
    running = client.get("recorder", job_id)["job_status"]
    assert running["status"] == "running", describe(running)
    assert (running["worker_disruptions"], running["worker_restarts"]) == (1, 0), describe(running)

    # And the job succeeds: the reclaimed pod's batch went back and used no attempt
    status = final_status(client, job_id, kubelet)
    assert status["job_status"]["status"] == "succeeded", describe(status)
    assert status["metrics"]["failed"] == 0 and not client.failed(job_id)
    assert (status["job_status"]["worker_disruptions"], status["job_status"]["worker_restarts"]) == (1, 0)
    assert sorted({i for r in records(out, "items") for i in r["items"]}) == list(range(40))
    assert scheduler_metric(stack, "thresher_worker_disruptions_total") == disruptions + 1
    assert scheduler_metric(stack, "thresher_worker_restarts_total", reason="failed") == restarts
    nothing_left(core, namespace, job_id, kubelet)


def test_a_worker_evicted_by_a_node_drain_is_replaced_and_counted(
    client: GatewayClient, core: k8s.CoreV1Api, namespace: str, kubelet: Kubelet, tmp_path: Path
) -> None:
    """A drain (kubectl drain, or a spot handler's) goes through the Eviction API: DisruptionTarget, then deletion."""
    out = tmp_path / "out"
    submitted = client.submit("recorder", items_job(out, 40, 1, slow_s=1.0))
    job_id = submitted["job_id"]
    busy = wait_until(lambda: _pod_running_a_batch(kubelet, job_id, out), 60, "a worker to take a batch")

    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": busy, "namespace": namespace}}
    core.create_namespaced_pod_eviction(busy, namespace, eviction)

    wait_until(lambda: len(ran_pods(kubelet, job_id)) >= 3, 60, "a replacement pod")
    status = final_status(client, job_id, kubelet)
    assert status["job_status"]["status"] == "succeeded", describe(status)
    assert (status["job_status"]["worker_disruptions"], status["job_status"]["worker_restarts"]) == (1, 0)
    assert status["metrics"]["failed"] == 0 and not client.failed(job_id)
    nothing_left(core, namespace, job_id, kubelet)


def test_a_worker_killed_for_memory_ends_the_job_worker_oom(
    client: GatewayClient, core: k8s.CoreV1Api, namespace: str, kubelet: Kubelet, tmp_path: Path
) -> None:
    # Given a job of slow batches on one worker, with a restart budget of 1
    out = tmp_path / "out"
    submitted = client.submit("recorder", items_job(out, 40, 1, workers=1, slow_s=1.0))
    job_id = submitted["job_id"]

    # When the kernel kills its worker for memory, on this pod and on its replacement
    for _ in range(RESTART_BUDGET + 1):
        pod = wait_until(lambda: _pod_running_a_batch(kubelet, job_id, out), 60, "a worker to take a batch")
        kubelet.oom_kill(pod, "api")
        wait_until(lambda: pod not in _live_pods(kubelet, job_id), 30, f"pod {pod} to end")  # noqa: B023

    # Then the job ends worker_oom, saying so
    status = final_status(client, job_id, kubelet)
    assert status["job_status"]["status"] == "worker_oom", describe(status)
    assert "OOMKilled" in status["job_status"]["status_reason"], describe(status)
    nothing_left(core, namespace, job_id, kubelet)


def test_a_job_past_its_timeout_ends_timed_out_and_its_pods_go(
    client: GatewayClient, core: k8s.CoreV1Api, namespace: str, kubelet: Kubelet, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    submitted = client.submit("recorder", {**items_job(out, 20, 1, slow_s=5), "timeout": 4})

    status = final_status(client, submitted["job_id"], kubelet)

    assert status["job_status"]["status"] == "timed_out", describe(status)
    nothing_left(core, namespace, submitted["job_id"], kubelet)


def test_a_stopped_job_ends_stopped_and_its_pods_go(
    client: GatewayClient, core: k8s.CoreV1Api, namespace: str, kubelet: Kubelet, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    submitted = client.submit("recorder", items_job(out, 20, 1, slow_s=5))
    job_id = submitted["job_id"]
    wait_until(lambda: _pod_running_a_batch(kubelet, job_id, out), 60, "a worker to take a batch")

    client.stop(job_id)

    assert final_status(client, job_id, kubelet)["job_status"]["status"] == "stopped"
    nothing_left(core, namespace, job_id, kubelet)


def test_an_elastic_job_raises_its_jobs_parallelism_and_lowers_it_as_workers_exit_idle(
    client: GatewayClient, core: k8s.CoreV1Api, namespace: str, kubelet: Kubelet, tmp_path: Path
) -> None:
    # Given an elastic job (1 to 3 workers) whose first batch is held: the others take 0.5 s each, then nothing is left
    out, hold = tmp_path / "out", tmp_path / "hold"
    hold.touch()
    job = items_job(out, 12, 1, slow_s=0.5, hold_items=[0], hold_while=str(hold))
    del job["workers"]  # an elastic job gives its range instead
    job_id = client.submit("recorder", {**job, "min_workers": 1, "max_workers": 3})["job_id"]
    batch = k8s.BatchV1Api(core.api_client)
    parallelism: list[int] = []  # the Job's, as seen over time
    idle_exits = 0

    def look() -> list[int]:
        nonlocal idle_exits
        jobs = batch.list_namespaced_job(namespace, label_selector=f"thresher.dev/job={job_id}").items
        parallelism.extend(j.spec.parallelism for j in jobs if not parallelism or j.spec.parallelism != parallelism[-1])
        idle_exits = max(idle_exits, (client.get("recorder", job_id)["job_status"].get("scaling") or {})["idle_exits"])
        return parallelism

    # When the scaler sees the backlog (the held batch's age is the time per batch until one succeeds), it raises
    # the Job's parallelism to 3; once the other workers find nothing for idle_s they exit and it goes back to 1
    wait_until(lambda: 3 in look(), 60, "the Job's parallelism to reach 3")
    wait_until(lambda: look()[-1] == 1 and idle_exits >= 1, 60, f"the Job's parallelism back to 1: {parallelism}")
    hold.unlink()
    status = final_status(client, job_id, kubelet)

    # Then the job ends as any, every item processed once, the idle workers neither crashes nor disruptions
    assert status["job_status"]["status"] == "succeeded", describe(status)
    assert sorted(i for r in records(out, "items") for i in r["items"]) == list(range(12))
    assert (status["job_status"]["worker_restarts"], status["job_status"]["scaling"]["max_workers"]) == (0, 3)
    assert len(ran_pods(kubelet, job_id)) == 3, "no pod replaced one that exited idle"
    nothing_left(core, namespace, job_id, kubelet)


def _live_pods(kubelet: Kubelet, job_id: str) -> list[str]:
    return [name for name, pod in list(kubelet.pods.items()) if job_id in name and not pod.terminal]


def _pod_running_a_batch(kubelet: Kubelet, job_id: str, out: Path) -> str | None:
    """A live pod of the job whose worker has taken a batch (its pid recorded a call)."""
    called = {int(p.name) for p in (out / "pids").glob("*")} if (out / "pids").is_dir() else set()
    for name in _live_pods(kubelet, job_id):
        pod = kubelet.pods.get(name)
        if pod is not None and any(c.proc is not None and c.proc.pid in called and c.running for c in pod.containers):
            return name
    return None
