"""The dequeuer: the sidecar that feeds one worker from its job's queue and reports every batch to the monitor."""

from services.dequeuer.loop import Dequeuer
from services.dequeuer.reporter import Reporter
from services.dequeuer.settings import Settings, parse_args
from services.dequeuer.worker import Outcome, WorkerClient

__all__ = ["Dequeuer", "Outcome", "Reporter", "Settings", "WorkerClient", "parse_args"]
