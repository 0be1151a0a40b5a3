"""A job's log lines, as the runtime keeps them: read once, or followed until the job has ended."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from services.scheduler.store import JobStore
from thresher.core.runtime import Runtime
from thresher.v1 import jobs_pb2

LOG_POLL_S = 0.5  # how often a followed log is read again


async def job_logs(
    store: JobStore, runtime: Runtime, job_id: str, follow: bool
) -> AsyncIterator[list[jobs_pb2.LogLine]]:
    """The job's lines, oldest first, in groups; following, new ones until the job has ended (and a last read after)."""
    offsets: dict[str, int] = {}  # per log file: how far it was read
    while True:
        job = await store.get_job(job_id)  # before reading: the last read after the end gets every line
        lines = await runtime.read_logs(job_id, offsets)
        if lines:
            yield [jobs_pb2.LogLine(worker_id=w, source=s, line=text) for w, s, text in lines]
        if not follow or (job.status.is_final and job.cleaned):
            return
        await asyncio.sleep(LOG_POLL_S)
