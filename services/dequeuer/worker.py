"""The worker's HTTP side: its readiness check, `POST /` for a batch and `POST /on-job-complete` for the hook."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from services.dequeuer.http import HttpClient, ProtocolError
from thresher import names
from thresher.queue import Batch

log = logging.getLogger(__name__)

HOST = "127.0.0.1"  # the worker runs beside the dequeuer (same pod or machine)
READINESS_INTERVAL_S = 0.02  # a refused connect costs next to nothing; every worker start waits for this poll
READINESS_PROBE_TIMEOUT_S = 1.0  # one probe; the overall limit is readiness_timeout_s
ERROR_BODY_BYTES = 500  # how much of a failed answer goes into the batch's error


@dataclass(frozen=True)
class Outcome:
    """The result of one call to the worker."""

    ok: bool
    http_status: int  # 0 when no answer was received
    error: str  # empty when ok
    duration_s: float
    unreachable: bool = False  # no answer at all: the worker may be gone (the caller checks)


class WorkerClient:
    def __init__(self, port: int, job_id: str) -> None:
        self._http = HttpClient(HOST, port)
        self._port = port
        self._job_id = job_id

    def close(self) -> None:
        self._http.close()

    async def wait_ready(self, readiness_path: str | None, timeout_s: float) -> bool:
        """Poll until the worker is ready (HTTP 2xx on `readiness_path`, else a TCP connect); False at the deadline."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await (self._http_ready(readiness_path) if readiness_path else self._tcp_ready()):
                return True
            await asyncio.sleep(READINESS_INTERVAL_S)
        return False

    async def _http_ready(self, path: str) -> bool:
        try:
            async with asyncio.timeout(READINESS_PROBE_TIMEOUT_S):
                response = await self._http.request("GET", path)
        except (OSError, ProtocolError, TimeoutError):
            return False
        return 200 <= response.status < 300

    async def _tcp_ready(self) -> bool:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(HOST, self._port), READINESS_PROBE_TIMEOUT_S)
        except (OSError, TimeoutError):
            return False
        writer.close()
        await writer.wait_closed()
        return True

    async def post_batch(self, batch: Batch, attempt: int, timeout_s: float) -> Outcome:
        """POST the batch body as is; any 2xx is success."""
        headers = {
            names.HEADER_CORTEX_JOB_ID: self._job_id,
            names.HEADER_JOB_ID: self._job_id,
            names.HEADER_BATCH_ID: batch.batch_id,
            names.HEADER_ATTEMPT: str(attempt),
        }
        return await self._post("/", batch.body, headers, timeout_s, accept_404=False)

    async def post_hook(self, summary: bytes, timeout_s: float) -> Outcome:
        """POST the job summary to the completion hook; 404 means the worker has no hook, which is success."""
        headers = {
            names.HEADER_CORTEX_JOB_ID: self._job_id,
            names.HEADER_JOB_ID: self._job_id,
            names.HEADER_IDEMPOTENCY_KEY: f"{self._job_id}:on-job-complete",
        }
        return await self._post(names.HOOK_PATH, summary, headers, timeout_s, accept_404=True)

    async def _post(
        self, path: str, body: bytes, headers: dict[str, str], timeout_s: float, accept_404: bool
    ) -> Outcome:
        headers = {"Content-Type": "application/json", **headers}
        started = time.monotonic()
        status, error, unreachable = 0, "", False
        try:
            async with asyncio.timeout(timeout_s):
                response = await self._http.request("POST", path, body, headers)
            status = response.status
            if not (200 <= status < 300 or (accept_404 and status == 404)):
                text = response.body[:ERROR_BODY_BYTES].decode("utf-8", errors="replace")
                error = f"worker answered HTTP {status} to POST {path}: {text}"
        except TimeoutError:
            error = f"worker did not answer POST {path} within {timeout_s:g} s (timeout)"
        except (OSError, ProtocolError) as e:
            error = f"worker not reachable for POST {path}: {type(e).__name__}: {e}"
            unreachable = True
        duration_s = time.monotonic() - started
        return Outcome(ok=not error, http_status=status, error=error, duration_s=duration_s, unreachable=unreachable)

    async def alive(self) -> bool:
        """The worker still accepts connections on its port."""
        return await self._tcp_ready()
