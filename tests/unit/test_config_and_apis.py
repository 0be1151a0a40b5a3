"""Settings from file and environment; Batch API definitions in Cortex's shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from thresher.apis import load_api_file, parse_api_definitions
from thresher.config import config_env, load_config
from thresher.errors import InvalidRequest


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
    ],
)
def test_invalid_api_definitions_are_rejected(definitions: object, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_api_definitions(definitions)
