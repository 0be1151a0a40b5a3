"""What a worker knows: the contexts its functions get, and the job spec they come from (part of thresher.worker).

Standard library only, and only what a worker runs: a worker process starts on these imports.
"""

from __future__ import annotations

import json
import logging
import os
import threading

from thresher.core import names

TYPE_CHECKING = False  # typing is not imported at run time (see thresher/worker.py)
if TYPE_CHECKING:
    from typing import Any

    JSON = dict[str, Any]

log = logging.getLogger("thresher.worker")  # the helper's logger: one name for everything a worker logs


class _Record:
    """Read-only fields, set in `__init__`, shown and compared by value: what a frozen dataclass gives."""

    __slots__: tuple[str, ...] = ()

    def _set(self, **fields: Any) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # its config and spec are dicts

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        # For pickle and copy (a handler may pass its context to a process pool): __init__ takes the fields in order.
        return type(self), tuple(getattr(self, name) for name in self.__slots__)


class BatchContext(_Record):
    """What a worker knows about the batch it is handling."""

    __slots__ = ("job_id", "batch_id", "attempt", "config", "spec")
    job_id: str
    batch_id: str
    attempt: int  # 1 on the first delivery of this batch
    config: JSON  # the job's `config` object
    spec: JSON  # the whole job spec (job_id, api_name, total_batch_count, ...)

    def __init__(
        self, job_id: str, batch_id: str, attempt: int, config: JSON | None = None, spec: JSON | None = None
    ) -> None:
        self._set(job_id=job_id, batch_id=batch_id, attempt=attempt, config=_dict(config), spec=_dict(spec))


class JobContext(_Record):
    """What a worker knows about the job in the completion hook."""

    __slots__ = ("job_id", "config", "spec", "idempotency_key")
    job_id: str
    config: JSON
    spec: JSON
    idempotency_key: str  # the same on every try of the hook: lets a worker ignore a repeat

    def __init__(
        self, job_id: str, config: JSON | None = None, spec: JSON | None = None, idempotency_key: str = ""
    ) -> None:
        self._set(job_id=job_id, config=_dict(config), spec=_dict(spec), idempotency_key=idempotency_key)


class JobSpecFile:
    """The job spec JSON at `path`, re-read when the file changes (it gains `total_batch_count` once known)."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._version: tuple[int, int, int] | None = None
        self._spec: JSON = {}

    def read(self) -> JSON:
        if not self.path:
            return {}
        with self._lock:
            try:
                stat = os.stat(self.path)
                version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
                if version != self._version:
                    spec = json.loads(_read_text(self.path))
                    if not isinstance(spec, dict):
                        raise ValueError("not a JSON object")
                    self._spec, self._version = spec, version
            except (OSError, ValueError) as e:
                # Missing or caught mid-write: keep what was read last, and read again next time.
                log.warning("cannot read the job spec %s: %s", self.path, e)
            return self._spec


def job_spec() -> JSON:
    """The job spec named by $THRESHER_JOB_SPEC, or {} when it is unset: for set-up code that runs before serve()."""
    return JobSpecFile(os.environ.get(names.ENV_JOB_SPEC)).read()


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _dict(value: JSON | None) -> JSON:
    return {} if value is None else value
