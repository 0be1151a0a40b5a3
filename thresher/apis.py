"""Batch API definitions in Cortex's YAML shape, read into the contract's ApiSpec."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from thresher.errors import InvalidRequest
from thresher.v1 import jobs_pb2

NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")  # a DNS label: it names queues and pods
DEFAULT_PORT = 8080


def load_api_file(path: str | Path) -> list[jobs_pb2.ApiSpec]:
    """Parse an APIs file; commands run in its folder."""
    path = Path(path).resolve()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise InvalidRequest(f"{path}: {e}") from e
    return parse_api_definitions(data, working_dir=str(path.parent))


def parse_api_definitions(data: Any, working_dir: str = "") -> list[jobs_pb2.ApiSpec]:
    """A YAML/JSON list of `{name, kind: BatchAPI, pod: {port, containers: [...]}}` definitions."""
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise InvalidRequest("expected a list of API definitions")
    specs = [_parse_one(item, i, working_dir) for i, item in enumerate(data)]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise InvalidRequest(f"API names must be unique, got {names}")
    return specs


def _parse_one(item: Any, index: int, working_dir: str) -> jobs_pb2.ApiSpec:
    where = f"API {index}"
    if not isinstance(item, dict):
        raise InvalidRequest(f"{where}: expected a mapping")
    name = item.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise InvalidRequest(f"{where}: name: must be lower-case letters, digits and '-' (at most 63), got {name!r}")
    where = f"API {name}"
    if item.get("kind", "BatchAPI") != "BatchAPI":
        raise InvalidRequest(f"{where}: kind: only BatchAPI is supported, got {item.get('kind')!r}")
    pod = _mapping(item.get("pod"), f"{where}: pod")
    port = pod.get("port", DEFAULT_PORT)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise InvalidRequest(f"{where}: pod: port: must be an integer from 1 to 65535, got {port!r}")
    containers = pod.get("containers")
    if not isinstance(containers, list) or not containers:
        raise InvalidRequest(f"{where}: pod: containers: must contain at least 1 element")
    spec = jobs_pb2.ApiSpec(name=name, port=port, working_dir=working_dir)
    for i, raw in enumerate(containers):
        spec.containers.append(_container(raw, f"{where}: pod: containers[{i}]"))
        probe = _mapping(raw.get("readiness_probe") or {}, f"{where}: readiness_probe")
        http_get = _mapping(probe.get("http_get") or {}, f"{where}: readiness_probe: http_get")
        if http_get.get("path") and not spec.readiness_path:
            spec.readiness_path = str(http_get["path"])
    return spec


def _container(raw: Any, where: str) -> jobs_pb2.Container:
    raw = _mapping(raw, where)
    command = raw.get("command")
    if not _strings(command) or not command:
        raise InvalidRequest(f"{where}: command: required, a list of strings")
    args = raw.get("args", [])
    if not _strings(args):
        raise InvalidRequest(f"{where}: args: must be a list of strings")
    env = raw.get("env", {})
    if not isinstance(env, dict) or not all(isinstance(k, str) for k in env):
        raise InvalidRequest(f"{where}: env: must be a mapping of names to values")
    reserved = [k for k in env if k.startswith(("CORTEX_", "THRESHER_"))]
    if reserved:
        raise InvalidRequest(f"{where}: env: names starting with CORTEX_ or THRESHER_ are reserved: {reserved}")
    return jobs_pb2.Container(
        name=str(raw.get("name", "api")),
        image=str(raw.get("image", "")),
        command=command,
        args=args,
        env={k: str(v) for k, v in env.items()},
    )


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where}: expected a mapping")
    return value


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)
