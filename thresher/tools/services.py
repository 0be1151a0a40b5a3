"""The services `thresher up` runs, each declared once: its program, where it serves and how it is checked, its
metrics, and the secrets it may hold. The supervisor, `thresher up`'s banner, endpoints.json and the tools that find
a service's process read them here.
"""

from __future__ import annotations

from dataclasses import dataclass

from thresher.core.config import Config

GRPC, HTTP = "grpc", "http"  # how a service serves, and so how it is health-checked (grpc.health.v1, GET /healthz)

# The credentials in the settings, by section. A service gets those of the sections it names, and the AWS_* variables
# if it names any (boto3's chain reads them for SQS and S3 alike).
CREDENTIALS = {
    "queue": ("THRESHER_QUEUE_SQS_ACCESS_KEY_ID", "THRESHER_QUEUE_SQS_SECRET_ACCESS_KEY"),
    "inputs": ("THRESHER_INPUTS_S3_ACCESS_KEY_ID", "THRESHER_INPUTS_S3_SECRET_ACCESS_KEY"),
}


@dataclass(frozen=True)
class Service:
    name: str  # its log (<data_dir>/logs/<name>.log) and its entry in endpoints.json
    module: str  # `python -m <module>`
    protocol: str  # GRPC or HTTP
    address: str  # its field in config.addresses
    metrics_address: str  # the field of its /metrics server; an empty address there: /metrics on `address`
    credentials: tuple[str, ...] = ()  # the sections of CREDENTIALS it uses
    stages_items: bool = False  # it writes staged item lists: it uses the inputs' credentials when they go to S3

    def uses(self, config: Config) -> tuple[str, ...]:
        """The sections of CREDENTIALS it uses with these settings."""
        return self.credentials + (("inputs",) if self.stages_items and config.inputs.staging_s3_prefix else ())

    def endpoint(self, config: Config) -> str:
        """Where it serves: host:port for gRPC, a URL for HTTP."""
        address = getattr(config.addresses, self.address)
        return f"http://{address}" if self.protocol == HTTP else address

    def endpoints(self, config: Config) -> dict[str, str]:
        """Its entry in endpoints.json: where it serves, and the URL of its metrics (Prometheus' scrape target)."""
        metrics = getattr(config.addresses, self.metrics_address) or getattr(config.addresses, self.address)
        return {self.protocol: self.endpoint(config), "metrics": f"http://{metrics}/metrics"}


MONITOR = Service("monitor", "services.monitor", GRPC, "monitor", "monitor_metrics", ("queue",))
ENQUEUER = Service("enqueuer", "services.enqueuer", GRPC, "enqueuer", "enqueuer_metrics", ("queue", "inputs"))
# The scheduler hands the queue's credentials on to the dequeuers it starts.
SCHEDULER = Service("scheduler", "services.scheduler", GRPC, "scheduler", "scheduler_metrics", ("queue", "inputs"))
# It calls only the scheduler, and S3 when it stages large item lists there (inputs.staging_s3_prefix).
GATEWAY = Service("gateway", "services.gateway", HTTP, "gateway", "gateway_metrics", stages_items=True)

# In start order: each after those it calls, so the gateway answers only once what it calls is there.
SERVICES = (MONITOR, ENQUEUER, SCHEDULER, GATEWAY)


def service_named(name: str) -> Service:
    for service in SERVICES:
        if service.name == name:
            return service
    raise LookupError(f"no service {name!r} (known: {', '.join(s.name for s in SERVICES)})")
