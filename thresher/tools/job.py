"""`Job`: one submitted job, as `thresher.Client` hands it back (status, wait, results, failed, retry, stop, ...)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

from thresher.core.errors import ThresherError, Unavailable
from thresher.core.statuses import FINAL_NAMES
from thresher.tools.client import GatewayClient
from thresher.tools.progress import ProgressLine, progress_line

POLL_S = 0.5
# A results stream that breaks is opened again after the last index it gave, this many times in a row at most
# (each success starts the count again), waiting a little longer each time: a gateway restarting takes seconds.
RESUME_ATTEMPTS = 8
RESUME_PAUSE_S = 0.5


class WaitTimeout(ThresherError, TimeoutError):
    """`Job.wait(timeout_s=...)` ran out of time; the job goes on."""

    kind = "timeout"


class Job:
    def __init__(self, gateway: GatewayClient, job_id: str, api_name: str = "") -> None:
        self._gateway = gateway
        self.id = job_id
        self.api_name = api_name

    def __repr__(self) -> str:
        return f"Job({self.id!r}, api_name={self.api_name!r})"

    def status(self) -> dict[str, Any]:
        """The job as `GET /v1/jobs/<id>` shows it: `job_status`, `metrics`, `endpoint`."""
        status: dict[str, Any] = self._gateway.job(self.id)
        self.api_name = status["job_status"]["api_name"]
        return status

    def wait(self, progress: bool = True, timeout_s: float | None = None, out: TextIO | None = None) -> dict[str, Any]:
        """Poll until the job ends and answer its final status; `progress` shows a line that updates, on `out`
        (default standard error). WaitTimeout after `timeout_s` seconds (None: no limit)."""
        started = time.monotonic()
        line = ProgressLine(out or sys.stderr) if progress else None
        while True:
            status = self.status()
            if line:
                line.show(progress_line(status, time.monotonic() - started))
            if status["job_status"]["status"] in FINAL_NAMES:
                if line:
                    line.end()
                return status
            if timeout_s is not None and time.monotonic() - started + POLL_S > timeout_s:
                raise WaitTimeout(f"job {self.id} is still {status['job_status']['status']} after {timeout_s:g} s")
            time.sleep(POLL_S)

    def results(self, after: int | None = None, follow: bool = False, items: bool = False) -> Iterator[dict[str, Any]]:
        """The batches' results in batch order, each `{"batch_id", "index", "result"}` (and `"items"` when asked):
        those after index `after`; `follow` waits for the rest while the job runs. A dropped connection is opened
        again from the last index given, so no line is lost and none comes twice."""
        return (line for _, line in self._resuming_results(after, follow, items))

    def result_lines(self, after: int | None = None, follow: bool = False, items: bool = False) -> Iterator[bytes]:
        """As results(), each line as the gateway sent it: JSON ending in a newline."""
        return (raw for raw, _ in self._resuming_results(after, follow, items))

    def _resuming_results(self, after: int | None, follow: bool, items: bool) -> Iterator[tuple[bytes, Any]]:
        failures = 0
        given: tuple[int, str] | None = None  # the last line's (index, batch id)
        while True:
            # Again from the last index given: a batch split by on_failure bisect has a line per half, all with its
            # index, and those after the last one given may still come; the ones given are passed over.
            start = after if given is None else (given[0] - 1 if given[0] > 0 else None)
            try:
                for raw in self._gateway.results(self.id, start, follow, items):
                    line = json.loads(raw)
                    if given is not None and (line["index"], line["batch_id"]) <= given:
                        continue
                    given, failures = (line["index"], line["batch_id"]), 0
                    yield raw, line
                return
            except Unavailable as e:  # the gateway restarting, or the connection broken
                failures += 1
                if failures > RESUME_ATTEMPTS:
                    raise Unavailable(
                        f"the results of job {self.id} broke off after {given[1] if given else 'none'}: {e}"
                    ) from None
                time.sleep(RESUME_PAUSE_S * failures)

    def delete_results(self) -> dict[str, Any]:
        """Free the job's stored results: `{"job_id", "deleted_results", "deleted_bytes"}`."""
        return self._gateway.delete_results(self.id)

    def failed(self) -> list[dict[str, Any]]:
        """The dead-lettered batches, each with `batch_id`, `items`, `attempts` and the last `error`."""
        return self._gateway.failed(self.id)

    def retry(self) -> Job:
        """A new job made of this finished job's failed batches."""
        spec = self._gateway.retry(self.id)
        return Job(self._gateway, spec["job_id"], spec["api_name"])

    def stop(self) -> dict[str, Any]:
        """Stop the job; answers its status after the stop."""
        return self._gateway.stop(self.id)

    def events(self) -> Iterator[dict[str, Any]]:
        """The job's status at each change, as `status()` shows it; the last one is final."""
        return self._gateway.events(self.id)

    def logs(self, follow: bool = False) -> Iterator[str]:
        """Its workers' and dequeuers' log lines, `<worker id> <source> | <line>`; `follow` until the job ends."""
        return self._gateway.logs(self.id, follow)
