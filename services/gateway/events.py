"""`GET /v1/jobs/{job_id}/events`: a job's changes as server-sent events, until its final status."""

from __future__ import annotations

import json

from aiohttp import web

from services.gateway import views
from services.gateway.routes import JOBS
from thresher.errors import ThresherError
from thresher.v1 import jobs_pb2


async def job_events(request: web.Request) -> web.StreamResponse:
    """One `status` event per change (the job as `GET /v1/jobs/{id}` shows it); the last one is final.

    Errors before the first event are ordinary JSON errors; after it, an `error` event ends the stream.
    """
    ref = jobs_pb2.JobRef(job_id=request.match_info["job_id"])
    updates = request.app[JOBS].WatchJob(ref, timeout=None)
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


async def _send(response: web.StreamResponse, event: str, data: dict) -> None:
    await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
