"""Worker runtimes, chosen by name; each is imported only when chosen."""

from __future__ import annotations

from thresher.core.config import Config
from thresher.core.errors import InvalidRequest
from thresher.core.runtime.base import Runtime, WorkerCount, WorkerLaunch, WorkerPhase, WorkerState

__all__ = ["Runtime", "WorkerCount", "WorkerLaunch", "WorkerPhase", "WorkerState", "open_runtime"]


def _local(config: Config) -> Runtime:
    from thresher.core.runtime.local import LocalRuntime

    return LocalRuntime(config)


def _kubernetes(config: Config) -> Runtime:
    from thresher.core.runtime.kubernetes import KubernetesRuntime

    return KubernetesRuntime(config)


def _external(config: Config) -> Runtime:
    from thresher.core.runtime.external import ExternalRuntime

    return ExternalRuntime(config)


_RUNTIMES = {"local": _local, "kubernetes": _kubernetes, "external": _external}


def open_runtime(config: Config) -> Runtime:
    try:
        factory = _RUNTIMES[config.runtime.backend]
    except KeyError:
        raise InvalidRequest(f"unknown runtime {config.runtime.backend!r} (known: {', '.join(_RUNTIMES)})") from None
    return factory(config)
