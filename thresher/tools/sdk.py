"""`thresher.Client`: Thresher from Python scripts and notebooks (standard library only); README "Python client"."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from thresher.core.bisect import item_range
from thresher.core.errors import InvalidRequest, ThresherError
from thresher.tools.client import GatewayClient
from thresher.tools.job import Job
from thresher.tools.submission import SubmissionBody

__all__ = ["Client", "Job", "JobFailed"]


class JobFailed(ThresherError):
    """`Client.map` cannot give every item's result: a batch was dead-lettered, or the job ended without it."""

    kind = "job_failed"

    def __init__(self, message: str, job: Job) -> None:
        super().__init__(message)
        self.job = job


class Client:
    def __init__(self, url: str | None = None, api_key: str | None = None) -> None:
        """`url`: default $THRESHER_URL, else http://127.0.0.1:8888. `api_key`: default $THRESHER_API_KEY, else
        (for a gateway on this machine) the embedded stack's key under $THRESHER_DATA_DIR or ./.thresher."""
        self.gateway = GatewayClient(url, api_key)

    @property
    def url(self) -> str:
        return self.gateway.url

    def deploy(self, apis: list[dict[str, Any]], working_dir: str | Path = ".") -> list[dict[str, Any]]:
        """Deploy (or update) Batch API definitions; relative paths in them are relative to `working_dir`."""
        deployed: list[dict[str, Any]] = self.gateway.deploy(apis, working_dir)
        return deployed

    def delete_api(self, name: str, delete_jobs: bool = False) -> dict[str, Any]:
        """Delete a Batch API: its jobs in progress end stopped (`stopped_jobs`); `delete_jobs` forgets its jobs too."""
        return self.gateway.delete_api(name, delete_jobs)

    def job(self, job_id: str) -> Job:
        """A job submitted before, by its id."""
        return Job(self.gateway, job_id)

    def jobs(self, api: str = "", limit: int = 20) -> list[dict[str, Any]]:
        """Jobs' statuses, newest first; `api` narrows to one API."""
        found: list[dict[str, Any]] = self.gateway.jobs(api, limit)
        return found

    def submit(
        self,
        api: str,
        items: Iterable[Any] | None = None,
        source: dict[str, Any] | None = None,
        batch_size: int | None = None,
        workers: int | None = None,
        config: dict[str, Any] | None = None,
        **more: Any,
    ) -> Job:
        """Submit a job of `items` (any iterable of JSON values, streamed as it is sent), or of a `source` as
        Cortex names it, such as `{"file_path_lister": {"s3_paths": [...]}}`. `batch_size` goes to that source;
        `more` are other submission fields (`timeout`, `batch_timeout`, `sqs_dead_letter_queue`)."""
        return self._submit(api, items, source, batch_size, workers, config, more)[0]

    def submit_text(self, api: str, submission: bytes) -> Job:
        """Submit a job written as JSON text (a job file), sent as it is: its items reach the workers as written."""
        spec = self.gateway.submit(api, submission)
        return Job(self.gateway, spec["job_id"], spec["api_name"])

    def map(
        self,
        api: str,
        items: Iterable[Any],
        batch_size: int,
        workers: int | None = None,
        config: dict[str, Any] | None = None,
        **more: Any,
    ) -> Iterator[Any]:
        """Submit `items`, follow the results and yield one result per item, in input order, as they arrive.

        Each batch's worker must return a list with one entry per item of the batch (the entries, in order, are
        the items' results); any other result, a dead-lettered batch or a job that ends without every result
        raises (InvalidRequest, JobFailed). Neither the items nor the results are held: memory stays flat.
        The job is submitted before map returns; leaving the iteration early leaves the job running.
        """
        job, count = self._submit(api, items, None, batch_size, workers, config, more)  # now, not when iterated
        return _results_by_item(job, count, batch_size)

    def _submit(
        self,
        api: str,
        items: Iterable[Any] | None,
        source: dict[str, Any] | None,
        batch_size: int | None,
        workers: int | None,
        config: dict[str, Any] | None,
        more: dict[str, Any],
    ) -> tuple[Job, int]:
        """The job, and how many items it was given (0 for a file source)."""
        fields = {k: v for k, v in (("workers", workers), ("config", config)) if v is not None} | more
        if source is not None and items is None:
            sized = {kind: spec | {"batch_size": batch_size} for kind, spec in source.items()} if batch_size else source
            spec = self.gateway.submit(api, fields | sized)
            return Job(self.gateway, spec["job_id"], spec["api_name"]), 0
        if items is None or source is not None:
            raise InvalidRequest("submit: give exactly one of items or source")
        body = SubmissionBody(fields, items, batch_size)
        spec = self.gateway.submit_items(api, body.chunks())
        return Job(self.gateway, spec["job_id"], spec["api_name"]), body.count


def _results_by_item(job: Job, count: int, batch_size: int) -> Iterator[Any]:
    """Each item's result, from the results in batch order: a batch split in two (on_failure bisect) has a result
    for each of its halves (thresher/core/bisect.py), each for a range of its items."""
    expected = math.ceil(count / batch_size)
    next_index, next_item = 0, 0  # the batch whose items come next, and its first item not given yet
    for line in job.results(follow=True):
        batch_items = min(batch_size, count - line["index"] * batch_size)
        first, items = item_range(line["batch_id"], batch_items)
        if (line["index"], first) != (next_index, next_item):
            raise JobFailed(f"job {job.id}: batch {next_index} has no result from its item {next_item} on "
                            "(see job.failed())", job)  # fmt: skip
        yield from _spread(line["result"], items, line, job)
        next_item = first + items
        if next_item == batch_items:
            next_index, next_item = next_index + 1, 0
    if next_index < expected:
        status = job.status()["job_status"]["status"]
        raise JobFailed(f"job {job.id} ended {status} with {next_index} of {expected} batches' results", job)


def _spread(result: Any, size: int, line: dict[str, Any], job: Job) -> Iterator[Any]:
    if not isinstance(result, list) or len(result) != size:
        got = f"a list of {len(result)}" if isinstance(result, list) else type(result).__name__
        raise InvalidRequest(
            f"job {job.id}: batch {line['index']} ({line['batch_id']}) has {size} items but its result is {got}: "
            "for map, a worker returns a list with one result per item (job.results() gives any result as is)"
        )
    return iter(result)
