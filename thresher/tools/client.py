"""The gateway's HTTP API, a method per route answering its JSON (standard library only): the transport under
`thresher.Client` (thresher/tools/sdk.py), which the CLI and scripts use."""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from thresher.core.auth import authorization, read_api_key
from thresher.core.errors import ThresherError, Unavailable, from_kind
from thresher.core.names import ENV_API_KEY, HEADER_AUTHORIZATION

DEFAULT_URL = "http://127.0.0.1:8888"
DEFAULT_DATA_DIR = ".thresher"  # as thresher.core.config's: where `thresher up` keeps the stack's key
TIMEOUT_S = 30.0
READ_BYTES = 64 * 1024
JSON_LINES = "application/jsonl"  # the Content-Type of a job of items streamed a line each


def find_api_key(url: str) -> str | None:
    """$THRESHER_API_KEY, else the embedded stack's key, <data dir>/api_key ($THRESHER_DATA_DIR, else .thresher).

    The embedded stack's key is only sent to a gateway on this machine (a loopback address or localhost): a
    remote gateway needs $THRESHER_API_KEY, so that a local key never travels to whatever --url says.
    """
    if key := os.environ.get(ENV_API_KEY):
        return key
    if not _is_local(url):
        return None
    return read_api_key(Path(os.environ.get("THRESHER_DATA_DIR") or DEFAULT_DATA_DIR))


def _is_local(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class GatewayClient:
    def __init__(self, url: str | None = None, api_key: str | None = None) -> None:
        """`api_key`: None finds one (find_api_key); without any, requests go without a key."""
        self.url = (url or os.environ.get("THRESHER_URL") or DEFAULT_URL).rstrip("/")
        key = api_key or find_api_key(self.url)
        self._headers = {HEADER_AUTHORIZATION: authorization(key)} if key else {}

    def deploy(self, apis: Any, working_dir: str | Path) -> Any:
        body = {"apis": apis, "working_dir": str(Path(working_dir).resolve())}
        return self._call("POST", "/v1/apis", body)["apis"]

    def delete_api(self, name: str, delete_jobs: bool = False) -> dict[str, Any]:
        query = "?delete_jobs=true" if delete_jobs else ""
        return self._call("DELETE", f"/v1/apis/{_quote(name)}{query}")

    def submit(self, api_name: str, job: dict[str, Any] | bytes | Iterator[bytes]) -> dict[str, Any]:
        """`job`: the submission; or its JSON text (bytes, sent as it is, so that its items reach the workers as
        written); or that text in chunks (sent as they come, in a chunked request body)."""
        return self._call("POST", f"/batch/{_quote(api_name)}", job)

    def submit_items(self, api_name: str, lines: Iterator[bytes]) -> dict[str, Any]:
        """A job of items as JSON Lines (submission.py), sent as `lines` yields its chunks."""
        return self._call("POST", f"/v1/apis/{_quote(api_name)}/jobs", lines, JSON_LINES)

    def get(self, api_name: str, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/batch/{_quote(api_name)}?jobID={_quote(job_id)}")

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{_quote(job_id)}")

    def jobs(self, api_name: str = "", limit: int = 20) -> Any:
        query = urllib.parse.urlencode({k: v for k, v in (("api", api_name), ("limit", limit)) if v})
        return self._call("GET", f"/v1/jobs?{query}")["jobs"]

    def failed(self, job_id: str) -> list[dict[str, Any]]:
        batches: list[dict[str, Any]] = json.loads(self.failed_json(job_id))["batches"]
        return batches

    def failed_json(self, job_id: str) -> bytes:
        """`GET /v1/jobs/<id>/failed` as the gateway wrote it: each batch's items byte for byte as its workers got
        them (decoded, `3.50` would be the float 3.5)."""
        request = urllib.request.Request(f"{self.url}/v1/jobs/{_quote(job_id)}/failed", headers=self._headers)
        with self._open(request, timeout_s=TIMEOUT_S) as response:
            answer: bytes = response.read()
            return answer

    def retry(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/jobs/{_quote(job_id)}/retry")

    def logs(self, job_id: str, follow: bool = False) -> Iterator[str]:
        """The job's log lines as the gateway streams them."""
        for raw in self._lines(f"/v1/jobs/{_quote(job_id)}/logs", {"follow": follow}, follow):
            yield raw.decode("utf-8", errors="replace").rstrip("\n")

    def events(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The job's server-sent `status` events, each the job as `job()` answers it; the last one is final."""
        event = ""
        for raw in self._lines(f"/v1/jobs/{_quote(job_id)}/events", {}, True):
            line = raw.decode("utf-8").rstrip("\n")
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: ") :])
                if event == "error":
                    raise from_kind(str(data.get("kind", "")), str(data.get("message", "")))
                yield data

    def results(
        self, job_id: str, after: int | None = None, follow: bool = False, items: bool = False
    ) -> Iterator[bytes]:
        """The job's results as one connection streams them: JSON Lines (each ending in a newline), in batch order.
        A broken connection raises Unavailable: Job.results opens the stream again after the last whole line."""
        query = {"after": after, "follow": follow, "items": items}
        for raw in self._lines(f"/v1/jobs/{_quote(job_id)}/results", query, follow):
            if not raw.endswith(b"\n"):
                raise Unavailable(f"the results of job {job_id} broke off in the middle of a line")
            yield raw

    def delete_results(self, job_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/jobs/{_quote(job_id)}/results")

    def _lines(self, path: str, query: dict[str, Any], follow: bool) -> Iterator[bytes]:
        """A streamed answer's lines; one that follows a running job has no timeout."""
        given = {k: "true" if v is True else v for k, v in query.items() if v is not None and v is not False}
        url = self.url + path + (f"?{urllib.parse.urlencode(given)}" if given else "")
        request = urllib.request.Request(url, headers=self._headers)
        with self._open(request, timeout_s=None if follow else TIMEOUT_S) as response:
            # read1, not `for line in response`: on a chunked answer, line iteration takes a connection that breaks
            # between two lines for the end of the answer, where read1 raises IncompleteRead.
            pending = bytearray()
            while chunk := response.read1(READ_BYTES):
                searched = len(pending)
                pending += chunk
                start = 0
                while (end := pending.find(b"\n", max(start, searched))) >= 0:
                    yield bytes(pending[start : end + 1])
                    start = end + 1
                del pending[:start]
            if pending:
                yield bytes(pending)

    def stop(self, job_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/jobs/{_quote(job_id)}")

    def _call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> dict[str, Any]:
        """`body`: a JSON value; or its text, as bytes or as an iterator of bytes (sent as it yields)."""
        data = body if body is None or isinstance(body, bytes | Iterator) else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=self._headers)
        request.add_header("Content-Type", content_type)
        with self._open(request, timeout_s=TIMEOUT_S) as response:
            answer: dict[str, Any] = json.loads(response.read() or b"null")  # each route answers a JSON object
            return answer

    @contextlib.contextmanager
    def _open(self, request: urllib.request.Request, timeout_s: float | None) -> Iterator[Any]:
        """The gateway's answer; its JSON errors raise the ThresherError they stand for."""
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                yield response
        except urllib.error.HTTPError as e:
            raise _error_from(e) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            raise Unavailable(f"cannot reach Thresher at {self.url}: {getattr(e, 'reason', e)}") from None
        except http.client.HTTPException as e:  # an answer cut short, such as a stream the gateway broke off
            raise Unavailable(f"the answer of Thresher at {self.url} broke off: {e!r}") from None


def _error_from(e: urllib.error.HTTPError) -> ThresherError:
    try:
        body = json.loads(e.read())
        return from_kind(str(body.get("kind", "")), str(body.get("message", e)))
    except (ValueError, AttributeError):
        return ThresherError(f"HTTP {e.code}: {e.reason}")


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")
