"""The scheduler's own series: jobs by API and status (read from the store at each scrape) and worker restarts."""

from __future__ import annotations

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily

from services.scheduler.store import JobStore
from thresher.metrics import exposition
from thresher.names import METRIC_PREFIX

WORKER_RESTARTS = Counter(
    f"{METRIC_PREFIX}worker_restarts", "Workers that crashed and were replaced, by reason.", ["api_name", "reason"]
)


async def jobs_by_status(store: JobStore) -> bytes:
    """Jobs by API and status, as Prometheus text."""
    jobs = GaugeMetricFamily(f"{METRIC_PREFIX}jobs", "Jobs by API and status.", labels=["api_name", "status"])
    for (api_name, status), count in sorted((await store.count_by_status()).items()):
        jobs.add_metric([api_name, status], count)
    return exposition([jobs])
