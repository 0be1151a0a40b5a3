"""The kustomize deploys: each overlay renders with `kubectl kustomize`, every object validates strictly against the
Kubernetes schema (kubernetes-validate, offline), and the pieces fit together (ports, names, config, RBAC).

Custom resources (the Prometheus Operator's ServiceMonitor) have no schema in kubernetes-validate: their metadata
is validated as any object's, their spec checked here against the Service it scrapes.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from thresher.core.config import Config, load_config
from thresher.core.runtime.k8s_manifests import check_settings, labels

KUSTOMIZE = Path(__file__).resolve().parents[2] / "deploy" / "kustomize"
TARGETS = ["base", "overlays/dev", "overlays/prod"]
K8S_VERSIONS = ("1.32.0", kubernetes_validate.utils.latest_version())
SERVICES = {"gateway": 8888, "scheduler": 7001, "enqueuer": 7002, "monitor": 7003}
METRICS = {"scheduler": 7005, "enqueuer": 7006, "monitor": 7004}  # the gateway serves /metrics on its own port
# Every series the dashboard and the alerts query; each is exported by a service (README.md, "Metrics").
DASHBOARD_METRICS = {
    "cortex_batch_succeeded",
    "cortex_batch_failed",
    "thresher_batches_total",
    "thresher_batch_duration_seconds_bucket",
    "thresher_jobs",
    "thresher_job_batches",
    "thresher_workers",
    "thresher_worker_restarts_total",
    "thresher_enqueued_batches_total",
    "thresher_job_queue_calls_total",
}


@cache
def render(target: str) -> tuple[dict[str, Any], ...]:
    if shutil.which("kubectl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubectl is needed to render the kustomize deploys (kubectl kustomize)")
        pytest.skip("kubectl is not installed")
    out = subprocess.run(
        ["kubectl", "kustomize", str(KUSTOMIZE / target)], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    return tuple(obj for obj in yaml.safe_load_all(out.stdout) if obj)


def with_component(target: str, component: str, folder: Path) -> str:
    """A kustomization in `folder` that is `target` plus `component` (kustomize takes relative paths only)."""
    root = os.path.relpath(KUSTOMIZE, folder)
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [f"{root}/{target}"],
                "components": [f"{root}/components/{component}"],
            }
        )
    )
    return os.path.relpath(folder, KUSTOMIZE)


def find(objects: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"].startswith(name))]


def one(objects: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    [found] = [o for o in find(objects, kind) if o["metadata"]["name"] == name]
    return found


def thresher_config(objects: tuple[dict[str, Any], ...], tmp_path: Path) -> Config:
    [config_map] = find(objects, "ConfigMap", "thresher-config")
    path = tmp_path / "thresher.yaml"
    path.write_text(config_map["data"]["thresher.yaml"], encoding="utf-8")
    return load_config(path, env={})


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return dict(deployment["spec"]["template"]["spec"]["containers"][0])


def service_config(objects: tuple[dict[str, Any], ...], name: str, tmp_path: Path) -> Config:
    """The configuration a service runs with: thresher.yaml under its Deployment's THRESHER_* variables."""
    env = {e["name"]: e["value"] for e in container(one(objects, "Deployment", f"thresher-{name}"))["env"]}
    path = tmp_path / "thresher.yaml"
    path.write_text(find(objects, "ConfigMap", "thresher-config")[0]["data"]["thresher.yaml"], encoding="utf-8")
    return load_config(path, env={k: v for k, v in env.items() if k != "THRESHER_CONFIG"})


def pod_labels(deployment: dict[str, Any]) -> dict[str, str]:
    return dict(deployment["spec"]["template"]["metadata"]["labels"])


@pytest.mark.parametrize("target", TARGETS)
def test_every_rendered_object_validates_strictly_against_the_kubernetes_schema(target: str) -> None:
    objects = render(target)
    assert objects
    for obj in objects:
        for version in K8S_VERSIONS:
            if obj["apiVersion"].startswith("monitoring.coreos.com/"):
                kubernetes_validate.validate(
                    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}, version, strict=True
                )
            else:
                kubernetes_validate.validate(obj, version, strict=True)


def test_the_schema_check_rejects_an_unknown_field() -> None:
    """The strict validation above is able to fail."""
    [deployment] = find(render("base"), "Deployment", "thresher-gateway")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


@pytest.mark.parametrize("target", TARGETS)
def test_each_service_listens_where_its_kubernetes_service_and_the_config_point(target: str, tmp_path: Path) -> None:
    objects = render(target)
    addresses = thresher_config(objects, tmp_path).addresses
    for name, port in SERVICES.items():
        deployment = one(objects, "Deployment", f"thresher-{name}")
        main = container(deployment)
        env = {e["name"]: e.get("value") for e in main["env"]}
        assert env[f"THRESHER_ADDRESSES_{name.upper()}"] == f"0.0.0.0:{port}"
        assert main["command"] == ["python", "-m", f"services.{name}"]
        service = one(objects, "Service", f"thresher-{name}")
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        named_ports = {p["name"]: p["containerPort"] for p in main["ports"]}
        assert named_ports[service["spec"]["ports"][0]["targetPort"]] == port
        assert getattr(addresses, name) == f"thresher-{name}:{service['spec']['ports'][0]['port']}"
    for name, port in METRICS.items():  # /metrics: a port of its own, in the Service too
        main = container(one(objects, "Deployment", f"thresher-{name}"))
        assert {"name": f"THRESHER_ADDRESSES_{name.upper()}_METRICS", "value": f"0.0.0.0:{port}"} in main["env"]
        assert {"name": "metrics", "containerPort": port} in main["ports"]
        service_ports = one(objects, "Service", f"thresher-{name}")["spec"]["ports"]
        assert {"name": "metrics", "port": port, "targetPort": "metrics"} in service_ports
        assert getattr(addresses, f"{name}_metrics") == f"thresher-{name}:{port}"


@pytest.mark.parametrize("target", TARGETS)
def test_probes_use_grpc_health_and_the_gateway_healthz(target: str, tmp_path: Path) -> None:
    objects = render(target)
    for name, port in SERVICES.items():
        main = container(one(objects, "Deployment", f"thresher-{name}"))
        tls = service_config(objects, name, tmp_path).tls
        for probe in ("readinessProbe", "livenessProbe"):
            if name == "gateway":
                assert main[probe]["httpGet"] == {"path": "/healthz", "port": "http"}
            elif tls.enabled:  # kubelet probes cannot show a certificate: the plaintext health-only port
                assert f"0.0.0.0:{main[probe]['grpc']['port']}" == tls.health_address
            else:
                assert main[probe]["grpc"] == {"port": port}
        assert main["resources"]["requests"] and main["resources"]["limits"]["memory"]


@pytest.mark.parametrize("target", TARGETS)
def test_the_config_file_is_one_thresher_reads_and_runs_workers_on_kubernetes(target: str, tmp_path: Path) -> None:
    objects = render(target)
    config = thresher_config(objects, tmp_path)
    assert (config.runtime.backend, config.queue.backend) == ("kubernetes", "sqs")
    images = {container(d)["image"] for d in find(objects, "Deployment", "thresher-")}
    assert images == {config.kubernetes.image}  # the dequeuer runs the services' own image
    assert one(objects, "ServiceAccount", config.kubernetes.service_account)
    if config.kubernetes.env_secret:
        assert one(objects, "Secret", config.kubernetes.env_secret)
    check_settings(service_config(objects, "scheduler", tmp_path))  # as the scheduler checks them when it starts
    for deployment in find(objects, "Deployment", "thresher-"):
        mounts = {m["mountPath"]: m["name"] for m in container(deployment)["volumeMounts"]}
        assert mounts["/etc/thresher"] == "config" and mounts[str(config.data_dir)] == "data"


@pytest.mark.parametrize("target", TARGETS)
def test_the_api_needs_keys_that_only_the_scheduler_reads(target: str, tmp_path: Path) -> None:
    objects = render(target)
    keys_file = Path(thresher_config(objects, tmp_path).auth.keys_file)
    assert keys_file.is_absolute(), "an API open to anyone who reaches the gateway is never the default"
    for deployment in find(objects, "Deployment", "thresher-"):
        pod = deployment["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for m in container(deployment)["volumeMounts"]}
        secrets = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
        if deployment["metadata"]["name"] == "thresher-scheduler":
            volume = secrets[mounts[str(keys_file.parent)]]
            assert volume == {"secretName": "thresher-api-keys"}, "required: without keys the scheduler waits"
        else:
            assert "thresher-api-keys" not in {s.get("secretName") for s in secrets.values()}


@pytest.mark.parametrize("target", TARGETS)
def test_every_service_reads_the_stack_secret_from_its_secret_and_no_worker_gets_it(
    target: str, tmp_path: Path
) -> None:
    objects = render(target)
    for name in SERVICES:
        deployment = one(objects, "Deployment", f"thresher-{name}")
        secret_file = Path(service_config(objects, name, tmp_path).auth.internal_secret_file)
        assert secret_file.is_absolute(), "never the data dir's: each pod would make its own"
        mounts = {m["mountPath"]: m["name"] for m in container(deployment)["volumeMounts"]}
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes[mounts[str(secret_file.parent)]]["secret"]["secretName"] == "thresher-internal"
    # Worker pods get a token for their job from the scheduler, never the secret (kubernetes.env_secret is theirs)
    assert thresher_config(objects, tmp_path).kubernetes.env_secret != "thresher-internal"


@pytest.mark.parametrize("target", ["overlays/dev", "overlays/prod"])
def test_open_routes_are_off_unless_the_overlay_lists_their_component_then_the_gateway_reads_its_secret(
    target: str, tmp_path: Path
) -> None:
    # Given each overlay, as shipped: open routes are off everywhere, and the component is there to be listed
    assert not service_config(render(target), "gateway", tmp_path).gateway.open_routes_key_file
    listed = re.search(
        r"^\s*#\s*- \.\./\.\./components/open-routes", (KUSTOMIZE / target / "kustomization.yaml").read_text(), re.M
    )
    assert listed, "the overlay lists the component, commented out"
    # When an overlay lists the component
    (tmp_path / "overlay").mkdir()
    objects = render(with_component(target, "open-routes", tmp_path / "overlay"))
    # Then the gateway, and only it, reads the key from the Secret thresher-open-routes-key, mounted for its group
    key_file = Path(service_config(objects, "gateway", tmp_path).gateway.open_routes_key_file)
    gateway = one(objects, "Deployment", "thresher-gateway")
    mounts = {m["mountPath"]: m["name"] for m in container(gateway)["volumeMounts"]}
    volumes = {v["name"]: v for v in gateway["spec"]["template"]["spec"]["volumes"]}
    secret = volumes[mounts[str(key_file.parent)]]["secret"]
    assert (secret["secretName"], secret["defaultMode"], key_file.name) == ("thresher-open-routes-key", 0o440, "key")
    for name in ("scheduler", "enqueuer", "monitor"):
        assert not service_config(objects, name, tmp_path).gateway.open_routes_key_file


@pytest.mark.parametrize("target", TARGETS)
def test_only_the_scheduler_may_use_the_kubernetes_api_and_only_on_worker_objects(target: str) -> None:
    objects = render(target)
    assert not find(objects, "ClusterRole") and not find(objects, "ClusterRoleBinding")
    [role] = find(objects, "Role")
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert rules == {
        (("batch",), ("jobs",)): {"get", "list", "create", "patch", "delete"},
        (("",), ("pods",)): {"list", "watch", "delete"},
        (("",), ("configmaps",)): {"list", "create", "patch", "delete"},
    }
    [binding] = find(objects, "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "thresher-scheduler", "namespace": "thresher"}]
    for account in find(objects, "ServiceAccount"):
        assert account.get("automountServiceAccountToken", True) is (
            account["metadata"]["name"] == "thresher-scheduler"
        )


@pytest.mark.parametrize("target", TARGETS)
def test_stateful_services_keep_one_replica_on_their_volume(target: str) -> None:
    objects = render(target)
    for name in ("scheduler", "monitor"):
        deployment = one(objects, "Deployment", f"thresher-{name}")
        assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        claim = volumes["data"]["persistentVolumeClaim"]["claimName"]
        assert one(objects, "PersistentVolumeClaim", claim)
    budgets = {
        b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
        for b in find(objects, "PodDisruptionBudget")
    }
    assert budgets == set(SERVICES)


@pytest.mark.parametrize("target", ["base", "overlays/prod"])
def test_the_service_monitor_scrapes_every_services_metrics(target: str) -> None:
    objects = render(target)
    [monitor] = find(objects, "ServiceMonitor")
    scraped = {(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]}
    for name in SERVICES:
        service = one(objects, "Service", f"thresher-{name}")
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        port = "metrics" if name in METRICS else "http"  # the gateway serves /metrics beside its API
        assert port in {p["name"] for p in service["spec"]["ports"]} and (port, "/metrics") in scraped


def ingress_sources(policy: dict[str, Any], objects: tuple[dict[str, Any], ...]) -> dict[str, set[str]]:
    """For each port a policy opens: who may connect, by the Deployment's component, `workers`, `prometheus` or
    `anyone`."""
    components = {
        d["metadata"]["name"].removeprefix("thresher-"): pod_labels(d) for d in find(objects, "Deployment", "thresher-")
    }
    opened: dict[str, set[str]] = {}
    for rule in policy["spec"].get("ingress") or []:
        sources = set()
        for peer in rule.get("from") or [{}]:
            selector = (peer.get("podSelector") or {}).get("matchLabels")
            if not peer:
                sources.add("anyone")
            elif "namespaceSelector" in peer:
                assert selector == {"app.kubernetes.io/name": "prometheus"}
                sources.add("prometheus")
            elif selector == {"thresher.dev/role": "worker"}:
                sources.add("workers")
            else:
                sources |= {name for name, pod in components.items() if selector.items() <= pod.items()}
        for port in rule["ports"]:
            opened.setdefault(port["port"], set()).update(sources)
    return opened


@pytest.mark.parametrize("target", TARGETS)
def test_network_policies_let_in_only_who_dials_each_service(target: str) -> None:
    objects = render(target)
    policies = find(objects, "NetworkPolicy")
    # Who dials whom: thresher/core/rpc.py channels (gateway and monitor to the scheduler, the scheduler to the enqueuer
    # and the monitor, every dequeuer to the monitor); Prometheus scrapes /metrics; anyone uses the public API.
    expected = {
        "gateway": {"http": {"anyone"}},
        "scheduler": {"grpc": {"gateway", "monitor"}, "metrics": {"prometheus"}},
        "enqueuer": {"grpc": {"scheduler"}, "metrics": {"prometheus"}},
        "monitor": {"grpc": {"scheduler", "workers"}, "metrics": {"prometheus"}},
    }
    for name, sources in expected.items():
        deployment = one(objects, "Deployment", f"thresher-{name}")
        [policy] = [
            p for p in policies if p["spec"]["podSelector"]["matchLabels"].items() <= pod_labels(deployment).items()
        ]
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        assert ingress_sources(policy, objects) == sources
        assert set(sources) <= {p["name"] for p in container(deployment)["ports"]}  # named ports of the pod
    # Worker pods, as the scheduler labels them, take no connection at all (kubelet probes come from the node)
    worker = labels("textstats", "7fffe8c2a1b3c4d5e6f7")
    [policy] = [p for p in policies if p["spec"]["podSelector"]["matchLabels"].items() <= worker.items()]
    assert policy["spec"]["policyTypes"] == ["Ingress"] and not policy["spec"].get("ingress")


@pytest.mark.parametrize("target", TARGETS)
def test_every_service_runs_as_a_non_root_user_on_a_read_only_root_file_system(target: str) -> None:
    for deployment in find(render(target), "Deployment", "thresher-"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        main = container(deployment)
        assert main["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        volumes = {v["name"]: v for v in pod["volumes"]}
        tmp = next(m["name"] for m in main["volumeMounts"] if m["mountPath"] == "/tmp")
        assert volumes[tmp] == {"name": tmp, "emptyDir": {}}  # the one scratch place Python and SQLite need


def test_the_image_runs_as_the_same_numeric_non_root_user() -> None:
    dockerfile = (KUSTOMIZE.parents[1] / "Dockerfile").read_text()
    assert re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE) == ["10001:10001"]


def test_prod_speaks_mutual_tls_from_every_service_and_worker(tmp_path: Path) -> None:
    objects = render("overlays/prod")
    for name in SERVICES:
        deployment = one(objects, "Deployment", f"thresher-{name}")
        tls = service_config(objects, name, tmp_path).tls
        mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        secret = next(name for name, path in mounts.items() if path == str(Path(tls.cert_file).parent))
        assert volumes[secret]["secret"]["secretName"] == "thresher-tls"
        assert {Path(p).parent for p in (tls.ca_file, tls.cert_file, tls.key_file)} == {Path(tls.cert_file).parent}
    scheduler = service_config(objects, "scheduler", tmp_path)
    assert scheduler.kubernetes.tls_secret == "thresher-worker-tls"  # worker pods mount it for their dequeuer
    for target in ("base", "overlays/dev"):  # a laptop cluster needs no certificates
        assert not service_config(render(target), "scheduler", tmp_path).tls.enabled


def test_the_dashboard_is_valid_json_that_queries_only_known_metrics() -> None:
    [config_map] = find(render("base"), "ConfigMap", "thresher-grafana-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["thresher.json"])
    assert dashboard["title"] and dashboard["uid"] and dashboard["panels"]
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    metrics = {m for q in queries for m in re.findall(r"\b(?:cortex|thresher)_\w+", q)}
    assert metrics == DASHBOARD_METRICS


def test_dev_runs_sqs_and_s3_in_the_cluster_without_aws() -> None:
    objects = render("overlays/dev")
    assert not find(objects, "ServiceMonitor")  # no Prometheus Operator in a bare kind cluster
    secret = one(objects, "Secret", "thresher-aws")
    endpoints = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    for variable, service in (("AWS_ENDPOINT_URL_SQS", "elasticmq"), ("AWS_ENDPOINT_URL_S3", "minio")):
        port = one(objects, "Service", service)["spec"]["ports"][0]["port"]
        assert endpoints[variable] == f"http://{service}:{port}"
    for deployment in find(objects, "Deployment", "thresher-"):
        given = {"secretRef": {"name": "thresher-aws"}} in container(deployment).get("envFrom", [])
        assert given == (deployment["metadata"]["name"] != "thresher-gateway"), "only where AWS is called"


def test_prod_gives_each_aws_user_its_own_iam_role_and_pins_its_image() -> None:
    objects = render("overlays/prod")
    roles = {
        a["metadata"]["name"]: a["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn")
        for a in find(objects, "ServiceAccount")
    }
    assert roles.pop("thresher-gateway") is None
    assert all(arn and arn.endswith(f"role/{name}") for name, arn in roles.items())
    for deployment in find(objects, "Deployment", "thresher-"):
        assert not container(deployment)["image"].endswith(":latest")
    assert one(objects, "Deployment", "thresher-gateway")["spec"]["replicas"] == 2


def _region_botocore_reads(env: dict[str, str]) -> str | None:
    """The region the pinned botocore finds in a container's environment (and nothing else of this machine's)."""
    program = "import boto3; print(boto3.Session().region_name or '')"
    isolated = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"}
    out = subprocess.run(
        [sys.executable, "-c", program], env={**isolated, **env}, capture_output=True, text=True, timeout=60, check=True
    )
    return out.stdout.strip() or None


@pytest.mark.parametrize("target", ["overlays/dev", "overlays/prod"])
def test_every_service_and_worker_has_a_region_that_botocore_reads(target: str, tmp_path: Path) -> None:
    """The pinned botocore reads AWS_DEFAULT_REGION, not AWS_REGION: without it every service fails ("SQS needs a
    region"). Each service given AWS settings (the ones that call SQS or S3) finds its region in its variables (its
    Secret's too) or in queue.sqs_region."""
    objects = render(target)
    secrets = {
        s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
        for s in find(objects, "Secret")
    }

    def environment(env: list[dict[str, Any]], env_from: list[dict[str, Any]]) -> dict[str, str]:
        found = {k: v for source in env_from for k, v in secrets.get(source["secretRef"]["name"], {}).items()}
        found |= {e["name"]: e["value"] for e in env if "value" in e}
        return {k: v for k, v in found.items() if k.startswith("AWS_") and k != "AWS_CONFIG_FILE"}

    config = thresher_config(objects, tmp_path)
    for deployment in find(objects, "Deployment", "thresher-"):
        spec = container(deployment)
        env = environment(spec.get("env") or [], spec.get("envFrom") or [])
        if env:  # a service that calls no AWS API (the gateway) is given none of its settings
            assert config.queue.sqs_region or _region_botocore_reads(env) == "us-east-1", deployment["metadata"]["name"]
    # A worker's dequeuer gets the scheduler's queue settings and the kubernetes.env_secret, nothing else of AWS's.
    worker_env = environment(
        [], [{"secretRef": {"name": config.kubernetes.env_secret}}] if config.kubernetes.env_secret else []
    )
    assert config.queue.sqs_region == "us-east-1" or _region_botocore_reads(worker_env) == "us-east-1"


def test_dev_elasticmq_names_the_region_of_the_queues_in_its_arns() -> None:
    """ElasticMQ's default region is `elasticmq`: its redrive policies' ARNs would name a region no client uses."""
    objects = render("overlays/dev")
    conf = one(objects, "ConfigMap", "elasticmq-config")["data"]["elasticmq.conf"]
    secret = one(objects, "Secret", "thresher-aws")
    region = base64.b64decode(secret["data"]["AWS_DEFAULT_REGION"]).decode()
    assert re.search(r"aws\s*\{[^}]*\bregion\s*=\s*" + re.escape(region) + r"\b", conf), conf
