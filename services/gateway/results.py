"""A job's results: `GET /v1/jobs/{id}/results` streams them as JSON Lines in batch order, `DELETE` frees them."""

from __future__ import annotations

import logging

from aiohttp import web

from services.gateway.calls import calls, jobs
from thresher.core.errors import InvalidRequest, ThresherError
from thresher.core.results import StoredResult
from thresher.v1 import jobs_pb2

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"
_YES = ("1", "true", "yes")


@calls("ReadResults")
async def read_results(request: web.Request) -> web.StreamResponse:
    """One line per batch that has a result: `{"batch_id", "index", "result"[, "items"]}`, in index order.

    `?after=<index>` resumes after that batch, `?follow=true` keeps the answer open until the job is final and every
    result is sent, `?items=true` adds each batch's items. Errors before the first line are JSON errors; a stream
    that breaks after it is cut short (no final chunk), so that a client never takes a part for the whole.
    """
    job_id = request.match_info["job_id"]
    await jobs(request).GetJob(jobs_pb2.JobRef(job_id=job_id))  # unknown or not the caller's: a JSON error first
    query = jobs_pb2.ReadResultsRequest(
        job_id=job_id,
        follow=request.query.get("follow", "").lower() in _YES,
        items=request.query.get("items", "").lower() in _YES,
    )
    if "after" in request.query:
        after = request.query["after"]
        if not (after.isascii() and after.isdigit()) or int(after) > 2**63 - 1:
            raise InvalidRequest("after: must be a batch index (a non-negative integer)")
        query.after = int(after)
    response = web.StreamResponse(headers={"Content-Type": NDJSON, "Cache-Control": "no-cache"})
    await response.prepare(request)
    try:
        async for page in jobs(request).ReadResults(query, timeout=None):
            lines = (StoredResult(o.index, o.batch_id, o.result_json, o.items_json) for o in page.outputs)
            await response.write(b"".join(line.json_line(query.items) for line in lines))
    except ThresherError as e:
        log.warning("the results stream of job %s broke: %s", job_id, e)
        raise ConnectionResetError(f"the results stream broke: {e}") from e
    await response.write_eof()
    return response


@calls("DeleteResults")
async def delete_results(request: web.Request) -> web.Response:
    reply = await jobs(request).DeleteResults(jobs_pb2.JobRef(job_id=request.match_info["job_id"]))
    return web.json_response(
        {"job_id": reply.job_id, "deleted_results": reply.deleted_results, "deleted_bytes": reply.deleted_bytes}
    )
