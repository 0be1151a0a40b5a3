"""Contract messages as Cortex-shaped JSON, written once for every route."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from google.protobuf import timestamp_pb2
from yarl import URL

from thresher.core import statuses
from thresher.core.retries import ON_FAILURE_DEAD_LETTER
from thresher.v1 import jobs_pb2

KIND = "BatchAPI"
WORKER_COUNT_KEYS = (  # Cortex's keys of `worker_counts`, in its order
    "pending",
    "creating",
    "not_ready",
    "ready",
    "succeeded",
    "err_image_pull",
    "terminating",
    "failed",
    "killed",
    "killed_oom",
    "stalled",
    "unknown",
)


def job_endpoint(origin: URL, job: jobs_pb2.Job) -> str:
    """Where a Cortex client reads this job: `<api endpoint>?jobID=<id>`."""
    return str(URL(api_endpoint(origin, job.api_name)).with_query(jobID=job.job_id))


def api_endpoint(origin: URL, name: str) -> str:
    """The API's endpoint, as `cortex get` printed it: `<origin>/<api>`, where its jobs are submitted."""
    return str(origin.with_path(f"/{name}"))


def job_spec(job: jobs_pb2.Job) -> dict[str, Any]:
    """Cortex's flat job spec, the answer to a submission."""
    return {
        "job_id": job.job_id,
        "api_name": job.api_name,
        "kind": KIND,
        "workers": job.workers,
        "sqs_dead_letter_queue": _dead_letter_queue(job),
        "config": json.loads(job.config_json) if job.config_json else None,
        "timeout": job.timeout_s if job.HasField("timeout_s") else None,
        "api_id": job.api_id,
        "sqs_url": job.queue_url,
        "start_time": _time(job.start_time) if job.HasField("start_time") else None,
    }


def job_status(job: jobs_pb2.Job) -> dict[str, Any]:
    """Cortex's `job_status`, then Thresher's additive extensions."""
    status = job_spec(job)
    if job.HasField("total_batch_count"):
        status["total_batch_count"] = job.total_batch_count
    if job.HasField("end_time"):
        status["end_time"] = _time(job.end_time)
    w, b, h = job.worker_counts, job.batches, job.hook
    status |= {
        "status": statuses.json_name(job.status),
        "batches_in_queue": job.batches_in_queue,
        "worker_counts": {key: count for key in WORKER_COUNT_KEYS if (count := getattr(w, key))},  # Cortex's omitempty
        "status_reason": job.status_reason,
        "batch_counts": {
            "succeeded": b.succeeded,
            "failed_attempts": b.failed_attempts,
            "dead_lettered": b.dead_lettered,
            "in_flight": b.in_flight,
            "pending": b.pending,
            "split": b.split,
            "items_succeeded": b.items_succeeded,
            "items_dead_lettered": b.items_dead_lettered,
        },
        "workers_detail": [
            {"worker_id": w.worker_id, "phase": w.phase, "last_heartbeat": _time(w.last_seen)}
            for w in job.workers_detail
        ],
        "pace": {
            "batches_per_s": round(job.pace.batches_per_s, 3),
            "eta_s": round(job.pace.eta_s, 1) if job.pace.HasField("eta_s") else None,
            "oldest_in_flight_s": (
                round(job.pace.oldest_in_flight_s, 3) if job.pace.HasField("oldest_in_flight_s") else None
            ),
        },
        "hook": {
            "called": h.called,
            "succeeded": h.succeeded,
            "http_status": h.http_status,
            "attempts": h.attempts,
            "error": h.error,
        },
        "items_enqueued": job.items_enqueued,
        "batch_timeout": job.batch_timeout_s,
        "max_receive_count": job.max_receive_count,
        "on_failure": job.on_failure or ON_FAILURE_DEAD_LETTER,
        "worker_restarts": job.worker_restarts,
        "worker_disruptions": job.worker_disruptions,
        "retry_of": job.retry_of or None,
        "owner": job.owner or None,
        "queue_calls": {"total": sum(job.queue_calls.values()), "by_operation": dict(sorted(job.queue_calls.items()))},
        "results": {"count": job.results.count, "bytes": job.results.bytes},
    }
    if job.HasField("scaling"):  # an elastic job's
        status["scaling"] = _scaling(job.scaling)
    return status


def metrics(job: jobs_pb2.Job) -> dict[str, Any]:
    """Cortex's metrics: `failed` counts failed attempts, as in Cortex; `dead_lettered` is Thresher's."""
    b = job.batches
    return {
        "succeeded": b.succeeded,
        "failed": b.failed_attempts,
        "average_time_per_batch": b.average_time_per_batch_s if b.HasField("average_time_per_batch_s") else None,
        "dead_lettered": b.dead_lettered,
    }


def failed_batches_json(job_id: str, batches: Iterable[jobs_pb2.FailedBatch]) -> bytes:
    """`{"job_id", "batches": [{batch_id, items, attempts, error}]}`: each batch's items spliced in as the workers got
    them, byte for byte (decoded and encoded again, `3.50` would come back `3.5`), its last error and attempts."""
    entries = (
        b'{"batch_id": %s, "items": %s, "attempts": %d, "error": %s}'
        % (json.dumps(b.batch_id).encode(), b.items_json, b.attempts, json.dumps(b.error).encode())
        for b in batches
    )
    return b'{"job_id": %s, "batches": [%s]}' % (json.dumps(job_id).encode(), b", ".join(entries))


def job_response(origin: URL, job: jobs_pb2.Job) -> dict[str, Any]:
    """The answer to `GET /batch/<api>?jobID=<id>`, also used for every job under /v1."""
    return {"job_status": job_status(job), "metrics": metrics(job), "endpoint": job_endpoint(origin, job)}


def api_spec(origin: URL, api: jobs_pb2.ApiSpec) -> dict[str, Any]:
    """A deployed Batch API, with the endpoint that jobs are submitted to (Cortex's `get_api(...)["endpoint"]`)."""
    return {
        "name": api.name,
        "kind": KIND,
        "endpoint": api_endpoint(origin, api.name),
        "pod": {
            "port": api.port,
            "containers": [
                {"name": c.name, "image": c.image, "command": list(c.command), "args": list(c.args), "env": dict(c.env)}
                for c in api.containers
            ],
        },
        "working_dir": api.working_dir,
        "readiness_path": api.readiness_path,
        "updated_time": _time(api.updated_time) if api.HasField("updated_time") else None,
        "api_id": api.api_id,  # this deployed version; a job's api_id names the one it was submitted to
        # Kubernetes sizing and placement, as deployed; empty: the scheduler's kubernetes.* defaults apply.
        "compute": _compute(api.compute) if api.HasField("compute") else None,
        "node_groups": list(api.node_groups),
        "node_selector": dict(api.node_selector),
        "tolerations": [
            {"key": t.key, "operator": t.operator, "value": t.value, "effect": t.effect} for t in api.tolerations
        ],
    }


def _compute(compute: jobs_pb2.Compute) -> dict[str, Any]:
    return {
        "cpu": compute.cpu or None,
        "mem": compute.mem or None,
        "gpu": compute.gpu if compute.HasField("gpu") else None,
    }


def _dead_letter_queue(job: jobs_pb2.Job) -> dict[str, Any] | None:
    if not job.HasField("sqs_dead_letter_queue"):
        return None
    dlq = job.sqs_dead_letter_queue
    return {"arn": dlq.arn, "max_receive_count": dlq.max_receive_count}


def _time(ts: timestamp_pb2.Timestamp) -> str:
    """RFC 3339 in UTC with a Z and 0, 3, 6 or 9 fractional digits; Cortex clients parse any of them."""
    return ts.ToJsonString()


def _scaling(scaling: jobs_pb2.Scaling) -> dict[str, Any]:
    """An elastic job's workers: the scaler's range, count and last decision."""
    return {
        "min_workers": scaling.min_workers,
        "max_workers": scaling.max_workers,
        "current_workers": scaling.current_workers,
        "desired_workers": scaling.desired_workers,
        "idle_exits": scaling.idle_exits,
        "last_decision": scaling.last_decision or None,
        "reason": scaling.reason,
        "decided_at": _time(scaling.decided_at) if scaling.HasField("decided_at") else None,
    }
