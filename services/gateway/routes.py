"""HTTP routes: decode the request, call the scheduler's Jobs service, encode the answer."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from services.gateway import views
from services.gateway.calls import calls, jobs
from services.gateway.middleware import has_large_body
from services.gateway.submission import parse_json_body, parse_submission
from services.gateway.uploads import drop_staged, read_upload, stage_large_list
from thresher.core.apis import RESERVED_NAMES, parse_api_definitions
from thresher.core.config import Config
from thresher.core.errors import InvalidRequest, QueryParamRequired
from thresher.core.sources import SCHEMA_HINT
from thresher.v1 import jobs_pb2

CONFIG = web.AppKey("config", Config)
T = TypeVar("T")
JOB_ID_PARAM = "jobID"  # Cortex's query parameter
# `/<api>`, for any name but those the gateway's own routes take (apis.RESERVED_NAMES: no API has one), so that
# `/metrics` without its route, say, is a 404 rather than a job route.
API_ENDPOINT = "/{api:(?!(?:" + "|".join(RESERVED_NAMES) + ")$)[^/]+}"
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})  # Go's strconv.ParseBool, which Cortex uses


def add_routes(app: web.Application) -> None:
    """Every route; Cortex's job routes twice: at `/batch/<api>` (the operator's path) and at `/<api>` (the API's
    endpoint that `cortex get` printed)."""
    cortex = [
        route
        for path in ("/batch/{api}", API_ENDPOINT)
        for route in (web.post(path, submit_job), web.get(path, get_job), web.delete(path, stop_job))
    ]
    app.router.add_routes(
        [
            *cortex,
            web.get("/v1/apis", list_apis),
            web.post("/v1/apis", deploy_apis),
            web.get("/v1/apis/{name}", get_api),
            web.post("/v1/apis/{name}/jobs", submit_items),
            web.delete("/v1/apis/{name}", delete_api),
            web.get("/v1/jobs", list_jobs),
            web.get("/v1/jobs/{job_id}", get_job_by_id),
            web.delete("/v1/jobs/{job_id}", stop_job_by_id),
            web.get("/v1/jobs/{job_id}/failed", list_failed_batches),
            web.post("/v1/jobs/{job_id}/retry", retry_failed),
            web.get("/v1/key", get_key),
            web.get("/healthz", healthz),
        ]
    )


@calls("SubmitJob", cortex=True)
async def submit_job(request: web.Request) -> web.Response:
    """Cortex's submit; `?dryRun=true` runs every check, creates nothing and answers in Cortex's text."""
    body = await _read_body(request)
    try:
        submission = await _off_the_loop_if_large(request, parse_submission, request.match_info["api"], body)
    except InvalidRequest as e:  # a body that does not decode into a submission: as Cortex, say where the schema is
        raise e.followed_by(SCHEMA_HINT) from e
    await stage_large_list(request.app, request.app[CONFIG], submission)
    return await _submit(request, submission)


@calls("SubmitJob")
async def submit_items(request: web.Request) -> web.Response:
    """A job of items streamed as JSON Lines: the submission on the first line, then an item a line (README,
    "HTTP API"); its items are staged as they arrive, so that a job of millions of them holds no process's memory.
    `?dryRun=true` as for Cortex's submit."""
    submission = await read_upload(request, request.app[CONFIG], request.match_info["name"])
    return await _submit(request, submission)


async def _submit(request: web.Request, submission: jobs_pb2.JobSubmission) -> web.Response:
    """Submit the job, or check it (`?dryRun=true`); its staged items (if any) go unless a job was made of them."""
    made = False
    try:
        if request.query.get("dryRun") in _TRUE:
            return await _dry_run(request, submission)
        job = await jobs(request).SubmitJob(jobs_pb2.SubmitJobRequest(submission=submission))
        made = True
        return web.json_response(views.job_spec(job))
    finally:
        if not made:
            await drop_staged(request.app, submission)


async def _dry_run(request: web.Request, submission: jobs_pb2.JobSubmission) -> web.Response:
    """Cortex's text: each file a file source would read on its own line, then `validations passed` (no newline);
    a submission that fails a check gets 400 and its message between two newlines."""
    try:
        job = await jobs(request).SubmitJob(jobs_pb2.SubmitJobRequest(submission=submission, dry_run=True))
    except InvalidRequest as e:
        return web.Response(status=400, text=f"\n{e.message}\n")
    return web.Response(text="".join(f"{path}\n" for path in job.dry_run_paths) + "validations passed")


@calls("GetJob", cortex=True)
async def get_job(request: web.Request) -> web.Response:
    job = await jobs(request).GetJob(_cortex_job_ref(request))
    return web.json_response(views.job_response(request.url.origin(), job))


@calls("StopJob", cortex=True)
async def stop_job(request: web.Request) -> web.Response:
    ref = _cortex_job_ref(request)
    await jobs(request).StopJob(ref)
    return web.json_response({"message": f"stopped job {ref.job_id}"})


@calls("ListApis")
async def list_apis(request: web.Request) -> web.Response:
    reply = await jobs(request).ListApis(jobs_pb2.ListApisRequest())
    origin = request.url.origin()
    return web.json_response({"apis": [views.api_spec(origin, api) for api in reply.apis]})


@calls("GetApi")
async def get_api(request: web.Request) -> web.Response:
    api = await jobs(request).GetApi(jobs_pb2.GetApiRequest(name=request.match_info["name"]))
    return web.json_response(views.api_spec(request.url.origin(), api))


@calls("DeleteApi")
async def delete_api(request: web.Request) -> web.Response:
    """Stop the API's jobs in progress (each ends `stopped`) and delete it; `?delete_jobs=true` forgets its jobs too."""
    name = request.match_info["name"]
    delete_jobs = request.query.get("delete_jobs") in _TRUE
    reply = await jobs(request).DeleteApi(jobs_pb2.DeleteApiRequest(name=name, delete_jobs=delete_jobs))
    stopped = list(reply.stopped_job_ids)
    return web.json_response(
        {"message": f"deleted api {name}", "stopped_jobs": stopped, "deleted_jobs": reply.deleted_jobs}
    )


@calls("DeployApi")
async def deploy_apis(request: web.Request) -> web.Response:
    """Deploy `{"apis": [...Cortex API definitions], "working_dir": "/abs"}`; every definition is checked first."""
    body = await _off_the_loop_if_large(request, parse_json_body, await _read_body(request))
    if not isinstance(body, dict):
        raise InvalidRequest("request body: must be an object")
    if body.get("apis") is None:
        raise InvalidRequest("apis: required, a list of API definitions")
    working_dir = body.get("working_dir") or ""
    if not isinstance(working_dir, str) or (working_dir and not os.path.isabs(working_dir)):
        raise InvalidRequest("working_dir: must be an absolute path")
    specs = parse_api_definitions(body["apis"], working_dir)
    scheduler, origin = jobs(request), request.url.origin()
    deployed = [await scheduler.DeployApi(jobs_pb2.DeployApiRequest(api=spec)) for spec in specs]
    return web.json_response({"apis": [views.api_spec(origin, api) for api in deployed]})


@calls("ListJobs")
async def list_jobs(request: web.Request) -> web.Response:
    """Newest first, as the scheduler lists them; `?api=` narrows to one API, `?limit=` caps the count."""
    limit = request.query.get("limit", "0")
    if not (limit.isascii() and limit.isdigit()) or int(limit) > 2**31 - 1:
        raise InvalidRequest("limit: must be a non-negative integer")
    query = jobs_pb2.ListJobsRequest(api_name=request.query.get("api", ""), limit=int(limit))
    reply = await jobs(request).ListJobs(query)
    origin = request.url.origin()
    return web.json_response({"jobs": [views.job_response(origin, job) for job in reply.jobs]})


@calls("GetJob")
async def get_job_by_id(request: web.Request) -> web.Response:
    job = await jobs(request).GetJob(jobs_pb2.JobRef(job_id=request.match_info["job_id"]))
    return web.json_response(views.job_response(request.url.origin(), job))


@calls("StopJob")
async def stop_job_by_id(request: web.Request) -> web.Response:
    """Stop a job and answer its state after the stop."""
    job = await jobs(request).StopJob(jobs_pb2.JobRef(job_id=request.match_info["job_id"]))
    return web.json_response(views.job_response(request.url.origin(), job))


@calls("ListFailedBatches")
async def list_failed_batches(request: web.Request) -> web.Response:
    """The job's dead-lettered batches with their items, attempts and last error."""
    ref = jobs_pb2.JobRef(job_id=request.match_info["job_id"])
    reply = await jobs(request).ListFailedBatches(ref)
    body = views.failed_batches_json(ref.job_id, reply.batches)
    return web.Response(body=body, content_type="application/json", charset="utf-8")


@calls("RetryFailed")
async def retry_failed(request: web.Request) -> web.Response:
    """Submit a new job made of the failed batches of a finished one; answers it as a submission does."""
    job = await jobs(request).RetryFailed(jobs_pb2.JobRef(job_id=request.match_info["job_id"]))
    return web.json_response(views.job_spec(job) | {"retry_of": job.retry_of})


async def get_key(request: web.Request) -> web.Response:
    """The caller's API key: its name and scopes, so that a client (the console) offers only what it may do.
    Asked as for a listing of jobs, which every scope may call: a missing or wrong key gets 401."""
    caller = await jobs(request).Authorize(jobs_pb2.AuthorizeRequest(method="ListJobs"))
    return web.json_response({"name": caller.name, "scopes": list(caller.scopes)})


async def healthz(request: web.Request) -> web.Response:
    """The gateway itself is up; says nothing about the scheduler."""
    return web.json_response({"status": "ok"})


async def _read_body(request: web.Request) -> bytes:
    """The request's body. One still arriving after gateway.read_timeout_s (a slow client) gets 408."""
    timeout_s = request.app[CONFIG].gateway.read_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            body = await request.read()
    except TimeoutError:
        raise web.HTTPRequestTimeout(reason=f"the request body did not arrive within {timeout_s:g} s") from None
    except web.RequestPayloadError as e:  # a gzip or deflate body that does not decode: the rest cannot be read
        reason = "the request body does not decode as its Content-Encoding says"
        raise web.HTTPBadRequest(reason=reason, headers={"Connection": "close"}) from e
    return body


async def _off_the_loop_if_large(request: web.Request, parse: Callable[..., T], *args: Any) -> T:
    """`parse(*args)`, in a thread for a large body: the event loop goes on serving other requests meanwhile."""
    return await asyncio.to_thread(parse, *args) if has_large_body(request) else parse(*args)


def _cortex_job_ref(request: web.Request) -> jobs_pb2.JobRef:
    job_id = request.query.get(JOB_ID_PARAM)
    if not job_id:
        raise QueryParamRequired(f"query param required: {JOB_ID_PARAM}")
    return jobs_pb2.JobRef(api_name=request.match_info["api"], job_id=job_id)
