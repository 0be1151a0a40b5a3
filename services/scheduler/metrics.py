"""The scheduler's own series: jobs by API and status (read from the store at each scrape) and worker restarts."""

from __future__ import annotations

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily

from services.scheduler.store import JobStore
from thresher.metrics import exposition
from thresher.names import METRIC_PREFIX
from thresher.runtime import WorkerState

WORKER_RESTARTS = Counter(
    f"{METRIC_PREFIX}worker_restarts", "Workers that crashed and were replaced, by reason.", ["api_name", "reason"]
)


class RestartCounter:
    """Counts each job's crashed workers into WORKER_RESTARTS once each, though every look at a job sees them all."""

    def __init__(self) -> None:
        self._counted: dict[str, int] = {}  # job id -> its crashes already counted

    def count(self, api_name: str, job_id: str, crashes: list[WorkerState]) -> None:
        for crash in crashes[self._counted.get(job_id, 0) :]:
            WORKER_RESTARTS.labels(api_name, crash.phase.value).inc()
        self._counted[job_id] = len(crashes)

    def forget(self, job_id: str) -> None:
        self._counted.pop(job_id, None)


async def jobs_by_status(store: JobStore) -> bytes:
    """Jobs by API and status, as Prometheus text."""
    jobs = GaugeMetricFamily(f"{METRIC_PREFIX}jobs", "Jobs by API and status.", labels=["api_name", "status"])
    for (api_name, status), count in sorted((await store.count_by_status()).items()):
        jobs.add_metric([api_name, status], count)
    return exposition([jobs])
