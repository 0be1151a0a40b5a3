"""Trust between services: every internal gRPC call carries a token made from one secret of the stack.

A token names the role of its holder and, for a dequeuer, the job and worker it speaks for:

    <role>:<job id>:<worker id>:<hex HMAC-SHA256 of "<role>:<job id>:<worker id>" under the stack secret>

The services read the secret (`auth.internal_secret_file`, else <data_dir>/internal_secret, which `thresher up`
makes) and make their own tokens. A dequeuer never sees the secret: the runtime that starts it hands it a token for
its job and worker (`*`: any worker of the job, on Kubernetes, where pod names are not known in advance). Every
server checks tokens in one interceptor (thresher/core/rpc.py) against ROLE_METHODS, and the monitor checks that each
report is for the job and worker of the token that sent it.

Imported by every dequeuer (through thresher/core/rpc.py): nothing heavy at import.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from thresher.core.config import Config
from thresher.core.errors import Forbidden, InvalidRequest, Unauthenticated
from thresher.core.names import GRPC_TOKEN_KEY

SECRET_FILE = "internal_secret"  # <data_dir>/internal_secret, mode 0600, unless auth.internal_secret_file names one
MIN_SECRET_CHARS = 32
ANY_WORKER = "*"

GATEWAY, SCHEDULER, MONITOR, DEQUEUER = "gateway", "scheduler", "monitor", "dequeuer"
# What each role may call: a whole service ("thresher.v1.Jobs") or one method ("thresher.v1.Monitor/Report").
# The enqueuer calls no one: its totals go back to the scheduler on the scheduler's own Enqueue call.
ROLE_METHODS: dict[str, frozenset[str]] = {
    # The public API; the scheduler checks the API key each call carries on top (thresher/core/auth.py).
    GATEWAY: frozenset({"thresher.v1.Jobs"}),
    SCHEDULER: frozenset(
        {
            "thresher.v1.Enqueuer/Enqueue",
            "thresher.v1.Monitor/TrackJob",
            "thresher.v1.Monitor/GetJobProgress",
            "thresher.v1.Monitor/RecordQueueCalls",
            "thresher.v1.Monitor/GetSettledBatches",
        }
    ),
    MONITOR: frozenset({"thresher.v1.Scheduler/JobSettled", "thresher.v1.Scheduler/HookFinished"}),
    DEQUEUER: frozenset({"thresher.v1.Monitor/Report"}),  # only for its own job and worker
}
# Open to any caller: health checks (kubelet probes, `thresher up` waiting for its services) and reflection (the
# schema, public in proto/ anyway).
OPEN_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"})


@dataclass(frozen=True)
class Peer:
    """Who made a call, as its token says."""

    role: str
    job_id: str = ""
    worker_id: str = ""

    def may_call(self, method: str) -> bool:
        """`method` as gRPC names it: "/thresher.v1.Monitor/Report"."""
        service = method.lstrip("/").split("/", 1)[0]
        allowed = ROLE_METHODS.get(self.role, frozenset())
        return service in allowed or method.lstrip("/") in allowed

    def check_speaks_for(self, job_id: str, worker_id: str) -> None:
        """Forbidden unless the token is for this job and worker: a dequeuer reports for itself only."""
        if job_id != self.job_id or self.worker_id not in (ANY_WORKER, worker_id):
            raise Forbidden(
                f"this token reports for job {self.job_id!r}, worker {self.worker_id!r}; not for job {job_id!r},"
                f" worker {worker_id!r}"
            )


class Trust:
    """The stack secret: makes tokens and tells who holds one."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_CHARS:
            raise InvalidRequest(f"the internal secret must have at least {MIN_SECRET_CHARS} characters")
        self._secret = secret

    def token(self, role: str, job_id: str = "", worker_id: str = "") -> str:
        """A token for `role` (for a dequeuer: speaking for `job_id` and `worker_id` only)."""
        if role not in ROLE_METHODS:
            raise InvalidRequest(f"unknown role {role!r} (known: {', '.join(ROLE_METHODS)})")
        if (role == DEQUEUER) != bool(job_id and worker_id):
            raise InvalidRequest("a dequeuer's token, and only a dequeuer's, names a job and a worker")
        if ":" in job_id + worker_id:
            raise InvalidRequest(f"job and worker ids in a token must not hold ':' ({job_id!r}, {worker_id!r})")
        claim = f"{role}:{job_id}:{worker_id}"
        return f"{claim}:{self._mac(claim)}"

    def peer(self, token: str | None) -> Peer:
        """The holder of `token`; Unauthenticated when there is none or it was not made with this secret."""
        if not token:
            raise Unauthenticated(
                f"internal calls need a token (metadata {GRPC_TOKEN_KEY}); see README.md, Trust between services"
            )
        claim, _, mac = token.rpartition(":")
        fields = claim.split(":")
        if len(fields) != 3 or not hmac.compare_digest(mac.encode(), self._mac(claim).encode()):
            raise Unauthenticated("the internal token is not valid for this stack")
        return Peer(*fields)

    def _mac(self, claim: str) -> str:
        return hmac.new(self._secret, claim.encode(), hashlib.sha256).hexdigest()


def secret_path(config: Config) -> Path:
    return Path(config.auth.internal_secret_file or Path(config.data_dir) / SECRET_FILE)


def load(config: Config) -> Trust:
    """The stack's Trust, from its secret file; InvalidRequest saying what to do when it cannot be read."""
    path = secret_path(config)
    try:
        secret = path.read_bytes().strip()
    except OSError as e:
        raise InvalidRequest(
            f"cannot read the internal secret {path}: {e.strerror}; `thresher up` makes it at start, on Kubernetes"
            " mount the Secret thresher-internal (deploy/README.md)"
        ) from e
    return Trust(secret)


def ensure_secret(config: Config) -> Path:
    """Make the stack secret (mode 0600, whatever the umask) unless it exists; returns its path."""
    import secrets  # here: only `thresher up` makes secrets, and every dequeuer imports this module

    path = secret_path(config)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    with os.fdopen(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="ascii") as f:
        os.fchmod(f.fileno(), 0o600)  # a umask may have taken our own bits too
        f.write(secrets.token_hex(32) + "\n")
    try:
        os.link(draft, path)  # whole or not at all, and never over another start's secret
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path
