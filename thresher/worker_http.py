"""The worker helper's request reader: strict, small HTTP/1.1 over a buffered socket file (standard library only).

It reads what a dequeuer, a readiness probe or curl sends: a request line, header fields and a body framed by
Content-Length, with keep-alive. Anything else (a POST without Content-Length, a chunked body, a malformed line, a
line too long, too many fields) raises BadRequest, which the server answers before closing the connection, as the
standard library's http.server does. It costs a fraction of http.server's parsing, whose header fields go through
the `email` package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

MAX_LINE_BYTES = 65536  # the request line, and each header field (as http.server)
MAX_HEADERS = 100
_VERSIONS = ("HTTP/1.1", "HTTP/1.0")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class BadRequest(Exception):
    """A request this reader does not take: answer `status` with the message, then close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Request:
    method: str
    target: str  # as sent: the path and query
    line: str  # the request line, for logs
    headers: dict[str, str]  # field names in lower case; a repeated field keeps its last value
    keep_alive: bool  # the client may send another request on this connection

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


def read_request(rfile: BinaryIO) -> Request | None:
    """The next request's line and header fields; None if the client closed the connection (between requests)."""
    raw = rfile.readline(MAX_LINE_BYTES + 1)
    if not raw:
        return None
    if len(raw) > MAX_LINE_BYTES:
        raise BadRequest(414, "the request line is too long")
    line = raw.rstrip(b"\r\n").decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1] or parts[2] not in _VERSIONS:
        raise BadRequest(400, f"not an HTTP/1.x request line: {line[:100]!r}")
    method, target, version = parts
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        raw = rfile.readline(MAX_LINE_BYTES + 1)
        if not raw:
            return None  # the client hung up mid-request: nothing to answer
        if len(raw) > MAX_LINE_BYTES:
            raise BadRequest(431, "a header field is too long")
        if raw in (b"\r\n", b"\n"):
            break
        name, colon, value = raw.decode("latin-1").partition(":")
        # No space before the colon, no obsolete line folding (RFC 9112 5.1, 5.2): both are refused, not guessed at.
        if not colon or not name or name != name.strip() or raw[0] in b" \t":
            raise BadRequest(400, f"malformed header field: {raw[:100]!r}")
        name, value = name.lower(), value.strip()
        if name == "content-length" and headers.get(name, value) != value:
            raise BadRequest(400, "conflicting Content-Length fields")
        headers[name] = value
    else:
        raise BadRequest(431, f"more than {MAX_HEADERS} header fields")
    connection = headers.get("connection", "").lower()
    keep_alive = "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
    return Request(method, target, line, headers, keep_alive)


def read_body(request: Request, rfile: BinaryIO, wfile: BinaryIO) -> bytes | None:
    """The request's body (b"" for a GET without one); None if the client hung up before sending all of it.

    BadRequest (411) when a request with a body does not give its length: its end could not be found.
    """
    headers = request.headers
    length = headers.get("content-length")
    if "transfer-encoding" in headers or (length is not None and not length.isdigit()):
        raise BadRequest(411, "a Content-Length header is required (no Transfer-Encoding)")
    if length is None:
        if request.method == "GET":
            return b""
        raise BadRequest(411, "a Content-Length header is required")
    size = int(length)
    if size and headers.get("expect", "").lower() == "100-continue":
        wfile.write(_CONTINUE)
    body = rfile.read(size)
    return body if len(body) == size else None
