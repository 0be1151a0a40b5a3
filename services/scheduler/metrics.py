"""The scheduler's own series: jobs by API and status (read from the store at each scrape), worker restarts and
worker disruptions."""

from __future__ import annotations

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily

from services.scheduler.store import JobStore
from thresher.core.metrics import exposition
from thresher.core.names import METRIC_PREFIX
from thresher.core.runtime import WorkerState

WORKER_RESTARTS = Counter(
    f"{METRIC_PREFIX}worker_restarts", "Workers that crashed and were replaced, by reason.", ["api_name", "reason"]
)
WORKER_DISRUPTIONS = Counter(
    f"{METRIC_PREFIX}worker_disruptions",
    "Workers ended by their infrastructure (spot reclaim, eviction, preemption, drain) and replaced.",
    ["api_name"],
)


class EndedWorkerCounter:
    """Counts each job's crashed and disrupted workers into WORKER_RESTARTS and WORKER_DISRUPTIONS once each,
    though every look at a job sees them all (a runtime lists a job's workers in the order they came)."""

    def __init__(self) -> None:
        self._counted: dict[str, tuple[int, int]] = {}  # job id -> its crashes and disruptions already counted

    def count(self, api_name: str, job_id: str, workers: list[WorkerState]) -> None:
        crashes = [w for w in workers if w.crashed]
        disruptions = sum(w.disrupted for w in workers)
        counted_crashes, counted_disruptions = self._counted.get(job_id, (0, 0))
        for crash in crashes[counted_crashes:]:
            WORKER_RESTARTS.labels(api_name, crash.phase.value).inc()
        if disruptions > counted_disruptions:
            WORKER_DISRUPTIONS.labels(api_name).inc(disruptions - counted_disruptions)
        self._counted[job_id] = (len(crashes), max(disruptions, counted_disruptions))

    def counted(self, job_id: str) -> tuple[int, int]:
        """The job's crashed and disrupted workers counted so far."""
        return self._counted.get(job_id, (0, 0))

    def forget(self, job_id: str) -> None:
        self._counted.pop(job_id, None)


async def jobs_by_status(store: JobStore) -> bytes:
    """Jobs by API and status, as Prometheus text."""
    jobs = GaugeMetricFamily(f"{METRIC_PREFIX}jobs", "Jobs by API and status.", labels=["api_name", "status"])
    for (api_name, status), count in sorted((await store.count_by_status()).items()):
        jobs.add_metric([api_name, status], count)
    return exposition([jobs])
