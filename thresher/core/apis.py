"""Batch API definitions in Cortex's YAML shape, read into the contract's ApiSpec."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from thresher.core.errors import InvalidRequest
from thresher.core.retries import check_on_failure
from thresher.core.yamlfile import load_yaml
from thresher.v1 import jobs_pb2

# Patterns are used with fullmatch: "$" would also match before a final newline ("ok\n").
NAME_PATTERN = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # a DNS label: it names queues and pods
DEFAULT_PORT = 8080
# The first path segments of the gateway's own routes: an API of one of these names could not be reached at
# <gateway>/<name>, Cortex's endpoint, so none may be deployed (a test keeps this list in step with the routes).
RESERVED_NAMES = ("batch", "healthz", "metrics", "ui", "v1")
# Kubernetes' own syntax (k8s.io/apimachinery: resource.Quantity, validation.IsQualifiedName, IsValidLabelValue).
_QUANTITY = re.compile(r"(?P<number>[0-9]+(\.[0-9]*)?|\.[0-9]+)(?P<suffix>[eE][+-]?[0-9]+|m|k|M|G|T|P|E|[KMGTPE]i)?")
_LABEL_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?")
COMPUTE_KEYS = ("cpu", "mem", "gpu")
TOLERATION_KEYS = ("key", "operator", "value", "effect")
OPERATORS = ("Equal", "Exists")
EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def load_api_file(path: str | Path) -> list[jobs_pb2.ApiSpec]:
    """Parse an APIs file; commands run in its folder."""
    path = Path(path).resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidRequest(f"{path}: cannot read: {e}") from e
    return parse_api_definitions(load_yaml(text, str(path)), working_dir=str(path.parent))


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
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
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
    _placement(spec, item, where)
    on_failure = item.get("on_failure") or ""
    if not isinstance(on_failure, str):
        raise InvalidRequest(f"{where}: on_failure: must be a string, got {on_failure!r}")
    spec.on_failure = on_failure
    check_api_spec(spec)
    return spec


def check_api_spec(spec: jobs_pb2.ApiSpec) -> None:
    """InvalidRequest unless every process of the API can be started: a valid name, a command in each container, and
    no NUL in a command, argument, environment variable or working dir, nor "=" in a variable's name (exec and the
    environment cannot carry them: the workers would never start)."""
    if not NAME_PATTERN.fullmatch(spec.name):
        raise InvalidRequest(f"name: must be lower-case letters, digits and '-' (at most 63), got {spec.name!r}")
    if spec.name in RESERVED_NAMES:
        raise InvalidRequest(
            f"name: {spec.name!r} is taken by the gateway's own routes (/{spec.name}); an API is reached at"
            f" /<name>, so these names are reserved: {', '.join(RESERVED_NAMES)}"
        )
    where = f"API {spec.name}"
    check_on_failure(spec.on_failure, f"{where}: on_failure")
    if not spec.containers:
        raise InvalidRequest(f"{where}: pod: containers: must contain at least 1 element")
    _no_nul(spec.working_dir, f"{where}: working_dir")
    for i, container in enumerate(spec.containers):
        at = f"{where}: pod: containers[{i}]"
        if not container.command:
            raise InvalidRequest(f"{at}: command: required, a list of strings")
        for field, values in (("name", [container.name]), ("command", container.command), ("args", container.args)):
            for value in values:
                _no_nul(value, f"{at}: {field}")
        for name, value in container.env.items():
            if not name or "=" in name or "\0" in name:
                raise InvalidRequest(f"{at}: env: {name!r} is not a variable name (not empty, no '=' and no NUL)")
            _no_nul(value, f"{at}: env: {name}")


def _no_nul(value: str, where: str) -> None:
    if "\0" in value:
        raise InvalidRequest(f"{where}: {value!r} holds a NUL character, which no process can be given")


def _placement(spec: jobs_pb2.ApiSpec, item: dict[str, Any], where: str) -> None:
    """`compute`, `node_groups`, `node_selector` and `tolerations`: how big workers are and where they run."""
    if "compute" in item:
        spec.compute.CopyFrom(_compute(item["compute"], f"{where}: compute"))
    groups = item.get("node_groups") or []
    if not _strings(groups) or len(set(groups)) != len(groups):
        raise InvalidRequest(f"{where}: node_groups: must be a list of distinct node group names, got {groups!r}")
    for group in groups:
        label_value(group, f"{where}: node_groups")
    spec.node_groups.extend(groups)
    selector = _mapping(item.get("node_selector") or {}, f"{where}: node_selector")
    for key, value in selector.items():
        label_key(key, f"{where}: node_selector")
        if not isinstance(value, str):
            raise InvalidRequest(f"{where}: node_selector: {key}: values must be strings (quote them), got {value!r}")
        label_value(value, f"{where}: node_selector: {key}")
    spec.node_selector.update(selector)
    tolerations = item.get("tolerations") or []
    if not isinstance(tolerations, list):
        raise InvalidRequest(f"{where}: tolerations: must be a list of {{key, operator, value, effect}}")
    spec.tolerations.extend(_toleration(t, f"{where}: tolerations[{i}]") for i, t in enumerate(tolerations))


def _compute(raw: Any, where: str) -> jobs_pb2.Compute:
    raw = _known_keys(_mapping(raw, where), COMPUTE_KEYS, where)
    compute = jobs_pb2.Compute()
    if "cpu" in raw:
        compute.cpu = quantity(raw["cpu"], f"{where}: cpu")
    if "mem" in raw:
        compute.mem = quantity(raw["mem"], f"{where}: mem", memory=True)
    if "gpu" in raw:
        gpu = raw["gpu"]
        if not isinstance(gpu, int) or isinstance(gpu, bool) or gpu < 0:
            raise InvalidRequest(f"{where}: gpu: must be a whole number of GPUs (0 or more), got {gpu!r}")
        compute.gpu = gpu
    return compute


def _toleration(raw: Any, where: str) -> jobs_pb2.Toleration:
    raw = _known_keys(_mapping(raw, where), TOLERATION_KEYS, where)
    key, value = raw.get("key", ""), raw.get("value", "")
    operator, effect = raw.get("operator", "Equal"), raw.get("effect", "")
    if not isinstance(key, str) or not isinstance(value, str):
        raise InvalidRequest(f"{where}: key and value must be strings (quote them), got {key!r} and {value!r}")
    if operator not in OPERATORS:
        raise InvalidRequest(f"{where}: operator: must be Equal or Exists, got {operator!r}")
    if effect not in ("", *EFFECTS):
        choices = ", ".join(EFFECTS)
        raise InvalidRequest(f"{where}: effect: must be one of {choices} (or none: every effect), got {effect!r}")
    if operator == "Exists" and value:
        raise InvalidRequest(f"{where}: value: must be empty with operator Exists, got {value!r}")
    if not key and operator != "Exists":
        raise InvalidRequest(f"{where}: key: required unless operator is Exists (which then tolerates every taint)")
    if key:
        label_key(key, f"{where}: key")
    label_value(value, f"{where}: value")
    return jobs_pb2.Toleration(key=key, operator=operator, value=value, effect=effect)


def quantity(value: Any, where: str, memory: bool = False) -> str:
    """A Kubernetes quantity above zero (`500m`, `2`, `4Gi`), as text."""
    text = str(value).strip() if isinstance(value, str | int | float) and not isinstance(value, bool) else ""
    match = _QUANTITY.fullmatch(text)
    if match is None or float(match["number"]) <= 0:
        example = "512Mi or 4Gi" if memory else "500m or 2"
        raise InvalidRequest(f"{where}: must be a Kubernetes quantity above zero such as {example}, got {value!r}")
    if memory and match["suffix"] == "m":
        raise InvalidRequest(f"{where}: {text!r} means {match['number']} thousandths of a byte; use Mi or Gi")
    return text


def label_key(key: str, where: str) -> None:
    """A Kubernetes label key: `name` or `prefix/name`."""
    prefix, _, name = key.rpartition("/")
    if not _LABEL_NAME.fullmatch(name) or (prefix and not _DNS_SUBDOMAIN.fullmatch(prefix)) or key.startswith("/"):
        raise InvalidRequest(f"{where}: {key!r} is not a Kubernetes label key ([prefix/]name of at most 63 characters)")


def label_value(value: str, where: str) -> None:
    if value and not _LABEL_NAME.fullmatch(value):
        raise InvalidRequest(
            f"{where}: {value!r} is not a Kubernetes label value (at most 63 letters, digits, '-', '_' or '.')"
        )


def _container(raw: Any, where: str) -> jobs_pb2.Container:
    raw = _mapping(raw, where)
    if "compute" in raw:  # where Cortex's latest shape puts it; one block per API is enough for a worker
        raise InvalidRequest(f"{where}: compute: set it on the API, beside pod: it applies to each of its containers")
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


def _known_keys(raw: dict[str, Any], known: tuple[str, ...], where: str) -> dict[str, Any]:
    unknown = [key for key in raw if key not in known]
    if unknown:
        raise InvalidRequest(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(known)})")
    return raw


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)
