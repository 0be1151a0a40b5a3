"""Prometheus text on /metrics, read from the ledger at each scrape (so duplicates never count, and labels are current).

Series carry `api_name` and `job_id`; a job's series are shown until RETENTION_S after its last report, which
keeps the page bounded while Prometheus keeps the history. `api_name` is empty until the job is tracked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from services.monitor.accounting import FAILED_RESULTS, Phase, Result
from services.monitor.ledger import Ledger
from services.monitor.ledger_metrics import Histogram, JobMetrics
from thresher.core.metrics import start_metrics_server as serve_metrics
from thresher.core.names import METRIC_PREFIX

BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
RETENTION_S = 24 * 3600.0
OUTCOMES = tuple(
    r.value for r in (Result.SUCCEEDED, Result.FAILED, Result.DEAD_LETTERED, Result.SPLIT, Result.RELEASED)
)
JOB_LABELS = ["api_name", "job_id"]


async def start_metrics_server(ledger: Ledger, address: str) -> tuple[web.AppRunner, int]:
    """Serve /metrics on `address`: this process's own series, then the ledger's; returns the runner and port."""

    async def ledger_series() -> bytes:
        return render(await ledger.metrics(time.time() - RETENTION_S, BUCKETS_S))

    return await serve_metrics(address, ledger_series)


def render(jobs: dict[str, JobMetrics]) -> bytes:
    return generate_latest(_Snapshot(jobs)) + _cortex_counters(jobs)


class _Snapshot:
    """A collector over one read of the ledger."""

    def __init__(self, jobs: dict[str, JobMetrics]) -> None:
        self._jobs = sorted(jobs.items())

    def collect(self) -> Iterator[Metric]:
        outcomes = CounterMetricFamily(
            METRIC_PREFIX + "batches",
            "Batch outcomes: succeeded batches (each once), failed attempts, attempts that dead-lettered their batch,"
            " attempts that split it in two (on_failure bisect), attempts released after their worker was lost.",
            labels=[*JOB_LABELS, "outcome"],
        )
        durations = HistogramMetricFamily(
            METRIC_PREFIX + "batch_duration_seconds",
            "Duration of batch attempts by outcome (a batch's first success only), seconds.",
            labels=[*JOB_LABELS, "outcome"],
        )
        cortex_time = HistogramMetricFamily(
            "cortex_time_per_batch", "Duration of successful batches, seconds (Cortex).", labels=JOB_LABELS
        )
        workers = GaugeMetricFamily(
            METRIC_PREFIX + "workers", "Workers by their last reported phase.", labels=[*JOB_LABELS, "phase"]
        )
        hooks = CounterMetricFamily(
            METRIC_PREFIX + "hook_calls",
            "Calls of /on-job-complete by outcome (a 404, no hook, counts as succeeded).",
            labels=[*JOB_LABELS, "outcome"],
        )
        batches = GaugeMetricFamily(
            METRIC_PREFIX + "job_batches",
            "A job's batches by state: pending and retrying wait on the queue, in_flight are being worked on.",
            labels=[*JOB_LABELS, "state"],
        )
        queue_calls = CounterMetricFamily(
            METRIC_PREFIX + "job_queue_calls",
            "Queue API calls made for the job by every Thresher process, by operation (SQS bills per call; the SQLite"
            " queue makes none).",
            labels=[*JOB_LABELS, "operation"],
        )
        for job_id, job in self._jobs:
            for operation, count in sorted(job.queue_calls.items()):
                queue_calls.add_metric([job.api_name, job_id, operation], count)
            for outcome in OUTCOMES:
                outcomes.add_metric([job.api_name, job_id, outcome], job.outcomes.get(outcome, 0))
                if outcome in job.durations:
                    histogram = job.durations[outcome]
                    durations.add_metric([job.api_name, job_id, outcome], _buckets(histogram), histogram.sum_s)
            succeeded = job.durations.get(Result.SUCCEEDED.value, Histogram(0, 0.0, [0] * len(BUCKETS_S)))
            cortex_time.add_metric([job.api_name, job_id], _buckets(succeeded), succeeded.sum_s)
            if job.workers:
                for phase in Phase:
                    workers.add_metric([job.api_name, job_id, phase.value], job.workers.get(phase.value, 0))
            for state, count in sorted(job.batches.items()):
                batches.add_metric([job.api_name, job_id, state], count)
            for outcome, count in sorted(job.hook_calls.items()):
                hooks.add_metric([job.api_name, job_id, outcome], count)
        yield from (outcomes, durations, cortex_time, workers, batches, hooks, queue_calls)


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    bounds = [floatToGoString(b) for b in BUCKETS_S]
    return [*zip(bounds, histogram.cumulative, strict=True), ("+Inf", histogram.count)]


def _cortex_counters(jobs: dict[str, JobMetrics]) -> bytes:
    """Cortex's counters under their exact names: prometheus_client would add `_total`, which dashboards don't query."""
    families = (
        ("cortex_batch_succeeded", "Batches that succeeded, each counted once (Cortex).", (Result.SUCCEEDED,)),
        ("cortex_batch_failed", "Failed batch attempts (Cortex's metrics.failed).", FAILED_RESULTS),
    )
    lines = []
    for name, help_text, results in families:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        for job_id, job in sorted(jobs.items()):
            value = sum(job.outcomes.get(r.value, 0) for r in results)
            lines.append(f'{name}{{api_name="{_escape(job.api_name)}",job_id="{_escape(job_id)}"}} {value}')
    return ("\n".join(lines) + "\n").encode()


def _escape(label_value: str) -> str:
    return label_value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")
