"""Settings: defaults here, then a YAML file (`thresher.yaml`), then `THRESHER_<SECTION>_<FIELD>` variables.

Every service reads the same `Config`; `thresher up` hands each one its addresses through the environment.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thresher.core.errors import InvalidRequest

ENV_PREFIX = "THRESHER_"


@dataclass
class Addresses:
    """Where each service listens (host:port); every service dials the others here.

    Port 0 lets `thresher up` pick a free port; it writes the chosen ones to <data_dir>/endpoints.json.
    """

    gateway: str = "127.0.0.1:8888"  # HTTP, the public API
    scheduler: str = "127.0.0.1:0"  # gRPC: Jobs and Scheduler
    enqueuer: str = "127.0.0.1:0"  # gRPC
    monitor: str = "127.0.0.1:0"  # gRPC
    monitor_metrics: str = "127.0.0.1:0"  # HTTP, Prometheus text on /metrics (the ledger's series, the process's)
    scheduler_metrics: str = "127.0.0.1:0"  # HTTP /metrics: jobs by status, worker restarts, gRPC requests
    enqueuer_metrics: str = "127.0.0.1:0"  # HTTP /metrics: enqueued batches, enqueue duration, gRPC requests
    gateway_metrics: str = ""  # HTTP /metrics of the gateway on a port of its own; empty: on the gateway's port


@dataclass
class QueueSettings:
    backend: str = "sqlite"  # a name in thresher/core/queue/registry.py: sqlite (embedded), sqs
    visibility_s: float = 30.0  # how long a received batch stays invisible unless extended
    max_receive_count: int = 3  # failed attempts before a batch goes to the dead letter queue (core/retries.py)
    # SQS only. Empty values fall back to boto3's usual chain (AWS_* variables, profile, instance role).
    sqs_endpoint_url: str = ""  # e.g. http://127.0.0.1:5000 for an SQS-compatible server; empty: AWS
    sqs_region: str = ""  # e.g. us-east-1
    sqs_access_key_id: str = ""
    sqs_secret_access_key: str = field(default="", repr=False)  # never logged


@dataclass
class DequeuerSettings:
    receive_max: int = 10  # batches per receive call (SQS's maximum)
    wait_s: float = 1.0  # long-poll wait of one receive call, seconds
    batch_timeout_s: float = 600.0  # default limit for one POST of a batch, seconds
    readiness_timeout_s: float = 300.0  # how long a worker may take to become ready, seconds
    hook_timeout_s: float = 60.0  # limit for one /on-job-complete call, seconds
    heartbeat_s: float = 2.0  # how often a dequeuer tells the monitor it is alive, seconds
    admin_address: str = "127.0.0.1:0"  # HTTP: GET /healthz (200 once its worker is ready), /metrics; 0: any port


@dataclass
class GatewaySettings:
    max_body_bytes: int = 10 * 1024 * 1024  # submissions larger than this get 413 (as Cortex: 10 MiB)
    # A job of items streamed as JSON Lines (POST /v1/apis/<api>/jobs): larger bodies get 413. Its items are staged
    # as a file as they arrive (inputs.staging_s3_prefix), never held whole.
    max_upload_bytes: int = 2 * 1024**3
    # An item list whose items take more bytes than this is staged as a file that the enqueuer reads, rather than
    # passed in gRPC messages (whatever the route it came by).
    stage_items_over_bytes: int = 256 * 1024
    # Requests with a body over 1 MiB (or of unknown length) handled at once; more wait their turn. Parsing one of
    # 10 MiB takes hundreds of MB and a second or more of CPU: four at once took the gateway to 1.28 GiB.
    max_large_bodies: int = 2
    # Against slow clients (slow-loris): a connection that has not sent a whole request this long after it opened
    # (or after its last answer) is closed, and a body still arriving after it gets 408. Seconds.
    read_timeout_s: float = 60.0
    # Origins (scheme://host[:port], comma-separated; "*": any) whose web pages may call the API from a browser
    # (CORS: their preflight OPTIONS is answered). Empty: none.
    cors_origins: str = ""
    # For a trusted network only: a file holding an API key (`thresher add-key`) that requests to Cortex's job routes
    # (POST/GET/DELETE /batch/<api> and /<api>) made without a key act with, as Cortex's routes took none. The
    # gateway warns at start. Empty: every route needs a key whenever keys are on. Never opens another route.
    open_routes_key_file: str = ""


@dataclass
class AuthSettings:
    """API keys of the public API (the gateway's job and API routes, the scheduler's Jobs service), and the secret
    that authenticates the services to each other."""

    # A file of hashed keys, a line each (thresher/core/auth.py); empty: no keys, the API is open to anyone who can
    # reach it. `thresher up` makes <data_dir>/api_keys, with the key of <data_dir>/api_key, unless this is set.
    keys_file: str = ""
    # The secret every internal gRPC call's token is made from (thresher/core/trust.py); empty:
    # <data_dir>/internal_secret, which `thresher up` makes (mode 0600). On Kubernetes: the Secret
    # thresher-internal, mounted in each service.
    internal_secret_file: str = ""


@dataclass
class LimitSettings:
    """Caps on what submissions may ask for, checked by the scheduler before anything is created."""

    max_workers: int = 100  # a job's `workers`
    max_batch_size: int = 10_000  # items per batch (`batch_size` of every source)
    max_jobs_in_progress_per_api: int = 50  # more submissions to the API get 429 until one of its jobs ends
    # The workers of every job not yet ended, together: a submission that would pass it gets 429 (each worker is
    # a process, or a pod, whoever submits it).
    max_workers_in_progress: int = 200


@dataclass
class RuntimeSettings:
    backend: str = "local"  # local (processes) or kubernetes
    stop_grace_s: float = 30.0  # how long stopping workers may take before they are killed, seconds
    max_worker_restarts: int = 5  # crashed workers replaced per job before it ends worker_error


@dataclass
class ScalingSettings:
    """Elastic jobs (`min_workers` / `max_workers`): the scheduler's scaler (services/scheduler/scaler.py)."""

    # Workers are added while the job's backlog (batches in its queue x recent seconds per batch / workers) would
    # take longer than this to drain, seconds.
    target_drain_s: float = 30.0
    # A worker of an elastic job that finds nothing to receive for this long exits and is not replaced, seconds.
    idle_s: float = 10.0


@dataclass
class MonitorSettings:
    heartbeat_timeout_s: float = 10.0  # a worker silent this long is lost; its batches are released, seconds


@dataclass
class InputSettings:
    """Where file sources (file_path_lister, delimited_files) are read: s3:// paths, file:// and local paths."""

    # S3. Empty values fall back to boto3's usual chain (AWS_* variables, profile, instance role).
    s3_endpoint_url: str = ""  # e.g. http://127.0.0.1:5000 for an S3-compatible server; empty: AWS
    s3_region: str = ""  # e.g. us-east-1
    s3_access_key_id: str = ""
    s3_secret_access_key: str = field(default="", repr=False)  # never logged
    # Local paths: directories that file sources may read, separated by ":"; empty: none ("/": any readable path).
    local_roots: str = ""
    read_chunk_bytes: int = 32 * 1024 * 1024  # delimited files are read in ranges of this size (Cortex: 32 MiB)
    # s3://bucket/prefix where the gateway stages large item lists (one file each, deleted with its job); empty:
    # <data_dir>/staged when stage_in_data_dir (an embedded stack: every service shares the data dir), else none:
    # item lists then travel in gRPC messages, and a JSON Lines upload takes at most gateway.max_body_bytes.
    staging_s3_prefix: str = ""
    stage_in_data_dir: bool = True


@dataclass
class ResultSettings:
    """Where batches' results are kept (thresher/core/results/): under <data_dir>/results, or under an S3 prefix."""

    s3_prefix: str = ""  # s3://bucket/prefix: every job's results under <prefix>/<job_id>/; empty: the data dir
    s3_endpoint_url: str = ""  # e.g. http://127.0.0.1:5000 for an S3-compatible server; empty: AWS
    s3_region: str = ""  # e.g. us-east-1
    max_batch_bytes: int = 10 * 1024 * 1024  # a larger answer fails the attempt
    ttl_s: float = 0.0  # results of jobs ended this long ago are deleted; 0: kept until DELETE .../results
    # A job may name its own S3 path for its results ("results": {"s3_path": ...}); local dequeuers then get the
    # AWS_* variables (boto3's credentials), which they get otherwise only for s3_prefix or an SQS queue.
    job_s3_paths: bool = False


@dataclass
class KubernetesSettings:
    """How the kubernetes runtime (runtime.backend = kubernetes) runs workers: one batch/v1 Job per job.

    The worker_* sizes, node_selector and tolerations are defaults: an API definition's own `compute`,
    `node_selector` and `tolerations` replace them for its workers.
    """

    namespace: str = ""  # where worker Jobs run; empty: the scheduler's own namespace in a pod, else "default"
    kubeconfig: str = ""  # a kubeconfig file; empty: in-cluster credentials in a pod, else ~/.kube/config
    image: str = "thresher:latest"  # the Thresher image: it runs each worker's dequeuer
    image_pull_policy: str = "IfNotPresent"  # Always, IfNotPresent or Never, for every container of a worker
    service_account: str = ""  # worker pods' service account (e.g. IRSA for SQS and S3); empty: the default one
    env_secret: str = ""  # a Secret whose keys become the dequeuer's environment (e.g. queue credentials); empty: none
    tls_secret: str = ""  # with tls on: a Secret (ca.crt, tls.crt, tls.key) for the dequeuers' client certificate
    stalled_after_s: float = 900.0  # a worker unschedulable this long is reported stalled, seconds (Cortex: 15 min)
    worker_cpu: str = "200m"  # CPU request of each API container (Cortex's default); empty: none
    worker_memory: str = ""  # memory request and limit of each API container, e.g. 2Gi; empty: none
    worker_gpu: int = 0  # nvidia.com/gpu limit of each API container
    node_selector: str = ""  # "key=value,...": worker pods run only on nodes with these labels (a node group)
    preferred_nodes: str = ""  # "key=value,...": worker pods prefer such nodes, e.g. spot pools
    tolerations: str = ""  # "key=value:Effect,..." or "key:Effect": taints worker pods tolerate (GPU, spot)
    node_group_label: str = "eks.amazonaws.com/nodegroup"  # the node label an API's node_groups name (EKS's)


@dataclass
class TlsSettings:
    """Mutual TLS for gRPC: between services, and from each dequeuer to the monitor. All empty: plaintext.

    With them, every gRPC server asks its clients for a certificate signed by the CA, and every client checks the
    server's certificate against the CA and the host name it dials. PEM files; read when a server or channel opens.
    """

    ca_file: str = ""  # the CA that signs every peer's certificate, e.g. /etc/thresher/tls/ca.crt
    cert_file: str = ""  # this process's certificate (chain), shown as a server and as a client
    key_file: str = ""  # its private key
    # Kubelet gRPC probes cannot show a certificate: with TLS on, a plaintext listener here answers only the gRPC
    # health service (a NetworkPolicy keeps other pods off it). Empty: none.
    health_address: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.ca_file or self.cert_file or self.key_file)


@dataclass
class Config:
    data_dir: Path = Path(".thresher")  # every durable file of the embedded stack lives here
    addresses: Addresses = field(default_factory=Addresses)
    queue: QueueSettings = field(default_factory=QueueSettings)
    dequeuer: DequeuerSettings = field(default_factory=DequeuerSettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    inputs: InputSettings = field(default_factory=InputSettings)
    results: ResultSettings = field(default_factory=ResultSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)


def load_config(path: str | os.PathLike[str] | None = None, env: typing.Mapping[str, str] | None = None) -> Config:
    """Defaults, overlaid by the YAML file (`path`, else $THRESHER_CONFIG), overlaid by THRESHER_* variables."""
    env = os.environ if env is None else env
    config = Config()
    path = path or env.get(ENV_PREFIX + "CONFIG")
    if path:
        # Imported here: most processes (every dequeuer) have no settings file, and yaml costs their start.
        from thresher.core.yamlfile import load_yaml

        with open(path, encoding="utf-8") as f:
            _apply_mapping(config, load_yaml(f.read(), str(path)) or {}, where=str(path))
    _apply_env(config, env)
    return config


def _apply_mapping(target: Any, values: Any, where: str) -> None:
    if not isinstance(values, dict):
        raise InvalidRequest(f"{where}: expected a mapping")
    fields = {f.name: f for f in dataclasses.fields(target)}
    for key, value in values.items():
        if key not in fields:
            raise InvalidRequest(f"{where}: unknown setting {key!r} (known: {', '.join(fields)})")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            _apply_mapping(current, value, f"{where}: {key}")
        else:
            setattr(target, key, _coerce(value, _field_type(target, key), f"{where}: {key}"))


def _apply_env(config: Config, env: typing.Mapping[str, str]) -> None:
    for top in dataclasses.fields(config):
        section = getattr(config, top.name)
        if not dataclasses.is_dataclass(section):
            name = ENV_PREFIX + top.name.upper()
            if name in env:
                setattr(config, top.name, _coerce(env[name], _field_type(config, top.name), name))
            continue
        for f in dataclasses.fields(section):
            name = f"{ENV_PREFIX}{top.name.upper()}_{f.name.upper()}"
            if name in env:
                setattr(section, f.name, _coerce(env[name], _field_type(section, f.name), name))


def _field_type(target: Any, name: str) -> Any:
    # A class is hashable; mypy checks type[...] against Hashable with object.__hash__ as if unbound.
    return _type_hints(type(target))[name]  # type: ignore[arg-type]


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)  # evaluates every annotation of the class: once per class, not per field


def _coerce(value: Any, kind: Any, where: str) -> Any:
    if isinstance(kind, types.UnionType):
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            return {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}[str(value).lower()]
        if kind is Path:
            return Path(value)
        return kind(value)
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidRequest(f"{where}: {value!r} is not a valid {kind.__name__}") from e


def config_env(config: Config, leave_out: typing.Collection[str] = ()) -> dict[str, str]:
    """The THRESHER_* variables that reproduce `config` in another process, but for the sections in `leave_out`."""
    env = {ENV_PREFIX + "DATA_DIR": str(config.data_dir)}
    for top in dataclasses.fields(config):
        section = getattr(config, top.name)
        if dataclasses.is_dataclass(section) and top.name not in leave_out:
            for f in dataclasses.fields(section):
                env[f"{ENV_PREFIX}{top.name.upper()}_{f.name.upper()}"] = str(getattr(section, f.name))
    return env
