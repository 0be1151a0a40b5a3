"""The monitor: the per-batch ledger, Prometheus metrics, and the decision that a job is settled."""

from services.monitor.server import MonitorServer, create_server, serve

__all__ = ["MonitorServer", "create_server", "serve"]
