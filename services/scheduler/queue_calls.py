"""A job's queue API calls add up at the monitor: the scheduler sends its own running totals there, and the enqueuer's.

Dequeuers send theirs with their heartbeats. Each process's totals have a name of their own (`calls_source`) and only
grow, so a repeated or late send changes nothing. Sending is best effort: a count is never worth holding a job up.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from services.scheduler.jobs import JobRecord
from thresher.core.errors import ThresherError
from thresher.core.queue import QueueBackend, calls_source
from thresher.core.rpc import Client, retry_unavailable
from thresher.v1 import jobs_pb2, monitor_pb2

log = logging.getLogger(__name__)

QUEUE_CALLS_RETRY_S = 10.0  # a count is best effort: how long a last count waits for the monitor, at most


class QueueCallsSender:
    def __init__(self, queues: QueueBackend, monitor: Client) -> None:
        self._queues = queues
        self._monitor = monitor
        self._source = calls_source("scheduler")
        self._sent: dict[str, dict[str, int]] = {}  # job id -> the scheduler's totals last sent

    async def send_own(self, job: JobRecord, calls: Mapping[str, int] | None = None, retry_s: float = 0.0) -> None:
        """Send the scheduler's totals for the job, if they changed since the last send. `calls`: the queue's
        mapping taken before its deletion (which forgets them); by default, read now."""
        totals = dict(self._queues.open(job.queue_name).calls if calls is None else calls)
        if totals and totals != self._sent.get(job.job_id):
            if await self.send(job, jobs_pb2.QueueCalls(source=self._source, calls=totals), retry_s):
                self._sent[job.job_id] = totals

    async def send(self, job: JobRecord, calls: jobs_pb2.QueueCalls, retry_s: float = 0.0) -> bool:
        """Record `calls` for the job at the monitor, trying for up to `retry_s`; False if it could not."""
        request = monitor_pb2.RecordQueueCallsRequest(job_id=job.job_id, api_name=job.api_name, queue_calls=[calls])
        try:
            await retry_unavailable(lambda: self._monitor.RecordQueueCalls(request), retry_s)
        except ThresherError as e:
            log.warning("job %s: queue calls not recorded: %s", job.job_id, e, extra={"job_id": job.job_id})
            return False
        return True

    def forget(self, job_id: str) -> None:
        self._sent.pop(job_id, None)
