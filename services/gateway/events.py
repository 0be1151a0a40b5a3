"""Streamed routes: a job's changes as server-sent events (`/events`), and its workers' logs (`/logs`)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from services.gateway import views
from services.gateway.calls import calls, jobs
from thresher.core.errors import ThresherError
from thresher.v1 import jobs_pb2


@calls("WatchJob")
async def job_events(request: web.Request) -> web.StreamResponse:
    """One `status` event per change (the job as `GET /v1/jobs/{id}` shows it); the last one is final.

    Errors before the first event are ordinary JSON errors; after it, an `error` event ends the stream.
    """
    ref = jobs_pb2.JobRef(job_id=request.match_info["job_id"])
    updates = jobs(request).WatchJob(ref, timeout=None)
    first = await anext(updates)  # NotFound and the like answer as JSON, before any event is sent
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    origin = request.url.origin()
    try:
        await _send(response, "status", views.job_response(origin, first))
        async for job in updates:
            await _send(response, "status", views.job_response(origin, job))
    except ThresherError as e:
        await _send(response, "error", {"kind": e.kind, "message": e.message})
    await response.write_eof()
    return response


async def _send(response: web.StreamResponse, event: str, data: dict[str, Any]) -> None:
    await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())


@calls("GetJobLogs")
async def job_logs(request: web.Request) -> web.StreamResponse:
    """The job's worker and dequeuer logs as text, a line each: `<worker id> <source> | <line>`; `?follow=true`
    keeps the answer open with new lines until the job has ended."""
    follow = request.query.get("follow", "").lower() in ("1", "true", "yes")
    lines = jobs(request).GetJobLogs(jobs_pb2.JobLogsRequest(job_id=request.match_info["job_id"], follow=follow),
                                     timeout=None)  # fmt: skip
    response: web.StreamResponse | None = None
    try:
        async for line in lines:
            if response is None:
                response = await _start_text(request)
            await response.write(f"{line.worker_id} {line.source} | {line.line}\n".encode())
    except ThresherError:
        if response is None:
            raise  # nothing sent yet: an ordinary JSON error
        await response.write(b"(the log stream broke; read it again)\n")
    response = response or await _start_text(request)
    await response.write_eof()
    return response


async def _start_text(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-cache"})
    await response.prepare(request)
    return response
