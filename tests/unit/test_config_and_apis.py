"""Settings from file and environment; Batch API definitions in Cortex's shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from thresher.core.apis import load_api_file, parse_api_definitions
from thresher.core.config import TlsSettings, config_env, load_config
from thresher.core.errors import InvalidRequest
from thresher.v1 import jobs_pb2


def test_environment_overrides_the_file_which_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "thresher.yaml"
    path.write_text("queue:\n  visibility_s: 5\n  max_receive_count: 4\ndata_dir: /srv/t\n")
    config = load_config(path, env={"THRESHER_QUEUE_MAX_RECEIVE_COUNT": "7"})
    assert (config.queue.visibility_s, config.queue.max_receive_count) == (5.0, 7)
    assert config.data_dir == Path("/srv/t")
    assert config.dequeuer.receive_max == 10


def test_config_env_reproduces_a_config_in_another_process() -> None:
    config = load_config(env={"THRESHER_DEQUEUER_WAIT_S": "0.5", "THRESHER_DATA_DIR": "/x"})
    again = load_config(env=config_env(config))
    assert again == config


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("queue:\n  visibilty_s: 5\n", {}, "unknown setting 'visibilty_s'"),
        ("", {"THRESHER_QUEUE_VISIBILITY_S": "soon"}, "THRESHER_QUEUE_VISIBILITY_S: 'soon' is not a valid float"),
        ("queue: 3\n", {}, "queue: expected a mapping"),
    ],
)
def test_bad_settings_are_named_in_the_error(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    path = tmp_path / "thresher.yaml"
    path.write_text(text)
    with pytest.raises(InvalidRequest, match=message):
        load_config(path, env=env)


def test_tls_settings_come_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "thresher.yaml"
    path.write_text("tls:\n  ca_file: /tls/ca.crt\n  cert_file: /tls/tls.crt\n")
    config = load_config(path, env={"THRESHER_TLS_KEY_FILE": "/tls/tls.key"})
    assert config.tls == TlsSettings("/tls/ca.crt", "/tls/tls.crt", "/tls/tls.key") and config.tls.enabled
    assert not load_config(env={}).tls.enabled  # plaintext unless asked


def test_an_apis_file_gives_specs_that_run_in_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "apis.yaml"
    path.write_text(
        "- name: sum\n  kind: BatchAPI\n  pod:\n    port: 9000\n    containers:\n"
        "    - name: api\n      image: img\n      command: [python, worker.py]\n      env: {MODE: fast, N: 3}\n"
        "      readiness_probe: {http_get: {path: /healthz, port: 9000}}\n"
    )
    [spec] = load_api_file(path)
    assert (spec.name, spec.port, spec.working_dir, spec.readiness_path) == ("sum", 9000, str(tmp_path), "/healthz")
    assert list(spec.containers[0].command) == ["python", "worker.py"]
    assert dict(spec.containers[0].env) == {"MODE": "fast", "N": "3"}


def test_an_api_says_how_big_its_workers_are_and_where_they_run() -> None:
    definition = {
        "name": "embed",
        "pod": {"containers": [{"image": "embed:1", "command": ["python", "serve.py"]}]},
        "compute": {"cpu": 2, "mem": "8Gi", "gpu": 1},
        "node_groups": ["gpu-spot", "gpu-on-demand"],
        "node_selector": {"nvidia.com/gpu.product": "NVIDIA-A10G"},
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {"key": "thresher.dev/spot", "value": "true"},
        ],
    }
    [spec] = parse_api_definitions([definition])
    assert spec.compute == jobs_pb2.Compute(cpu="2", mem="8Gi", gpu=1)
    assert list(spec.node_groups) == ["gpu-spot", "gpu-on-demand"]
    assert dict(spec.node_selector) == {"nvidia.com/gpu.product": "NVIDIA-A10G"}
    assert list(spec.tolerations) == [
        jobs_pb2.Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"),
        jobs_pb2.Toleration(key="thresher.dev/spot", operator="Equal", value="true"),  # every effect
    ]


def test_an_api_without_compute_leaves_each_field_to_the_cluster_defaults() -> None:
    [spec] = parse_api_definitions(
        [{"name": "a", "pod": {"containers": [{"command": ["x"]}]}, "compute": {"mem": "1Gi"}}]
    )
    assert (spec.compute.cpu, spec.compute.mem, spec.compute.HasField("gpu")) == ("", "1Gi", False)


def _with(**fields: object) -> list[dict[str, object]]:
    return [{"name": "a", "pod": {"containers": [{"command": ["x"]}]}, **fields}]


@pytest.mark.parametrize(
    ("definitions", "message"),
    [
        (_with(compute={"cpu": "two"}), "compute: cpu: must be a Kubernetes quantity above zero such as 500m or 2"),
        (_with(compute={"cpu": 0}), "compute: cpu: must be a Kubernetes quantity above zero"),
        (_with(compute={"mem": "512m"}), "compute: mem: '512m' means 512 thousandths of a byte; use Mi or Gi"),
        (_with(compute={"gpu": -1}), "compute: gpu: must be a whole number of GPUs"),
        (_with(compute={"inf": 1}), r"compute: unknown key 'inf' \(known: cpu, mem, gpu\)"),
        ([{"name": "a", "pod": {"containers": [{"command": ["x"], "compute": {"cpu": 1}}]}}], "set it on the API"),
        (_with(node_groups=["spot", "spot"]), "node_groups: must be a list of distinct node group names"),
        (_with(node_groups=["gpu pool"]), "node_groups: 'gpu pool' is not a Kubernetes label value"),
        (_with(node_selector={"gpu": True}), "node_selector: gpu: values must be strings"),
        (_with(node_selector={"-bad-": "x"}), "node_selector: '-bad-' is not a Kubernetes label key"),
        (_with(tolerations=[{"key": "gpu", "effect": "NoSchedul"}]), r"tolerations\[0\]: effect: must be one of"),
        (_with(tolerations=[{"key": "gpu", "operator": "In"}]), "operator: must be Equal or Exists"),
        (_with(tolerations=[{"key": "gpu", "operator": "Exists", "value": "x"}]), "must be empty with operator Exists"),
        (_with(tolerations=[{"value": "x"}]), "key: required unless operator is Exists"),
        (_with(tolerations=[{"key": "gpu", "seconds": 5}]), "unknown key 'seconds'"),
        (_with(tolerations={"key": "gpu"}), "tolerations: must be a list"),
    ],
)
def test_bad_compute_or_placement_is_rejected_with_the_field_named(definitions: object, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_api_definitions(definitions)


@pytest.mark.parametrize(
    ("definitions", "message"),
    [
        ([], "expected a list"),
        ([{"name": "Bad_Name", "pod": {"containers": [{"command": ["x"]}]}}], "name: must be lower-case"),
        ([{"name": "a", "kind": "RealtimeAPI", "pod": {"containers": [{"command": ["x"]}]}}], "only BatchAPI"),
        ([{"name": "a", "pod": {"containers": []}}], "containers: must contain at least 1"),
        ([{"name": "a", "pod": {"containers": [{"image": "x"}]}}], "command: required"),
        ([{"name": "a", "pod": {"port": 0, "containers": [{"command": ["x"]}]}}], "port: must be an integer"),
        ([{"name": "a", "pod": {"containers": [{"command": ["x"], "env": {"CORTEX_PORT": "1"}}]}}], "reserved"),
        ([{"name": "a", "pod": {"containers": [{"command": ["x"]}]}}] * 2, "must be unique"),
        ([{"name": "ok\n", "pod": {"containers": [{"command": ["x"]}]}}], "name: must be lower-case"),
        (_with(node_selector={"gpu": "a100\n"}), "is not a Kubernetes label value"),
        ([{"name": "a", "pod": {"containers": [{"command": ["x\0y"]}]}}], "command: .* holds a NUL"),
        ([{"name": "a", "pod": {"containers": [{"command": ["x"], "args": ["\0"]}]}}], "args: .* holds a NUL"),
        ([{"name": "a", "pod": {"containers": [{"command": ["x"], "env": {"A=B": "1"}}]}}], "'A=B' is not a variable"),
        ([{"name": "a", "pod": {"containers": [{"command": ["x"], "env": {"A\0": "1"}}]}}], "is not a variable name"),
        ([{"name": "a", "pod": {"containers": [{"command": ["x"], "env": {"A": "\0"}}]}}], "env: A: .* holds a NUL"),
        (_with(on_failure="split"), "API a: on_failure: must be one of dead_letter, bisect, got 'split'"),
        (_with(on_failure=True), "API a: on_failure: must be a string"),
    ],
)
def test_invalid_api_definitions_are_rejected(definitions: object, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_api_definitions(definitions)


def test_a_working_dir_with_nul_is_rejected() -> None:
    with pytest.raises(InvalidRequest, match="working_dir: .* holds a NUL"):
        parse_api_definitions(_with(), working_dir="/srv/\0")
