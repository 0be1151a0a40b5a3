"""The worker helper's request reader: strict, small HTTP/1.1 over a buffered socket file (standard library only).

It reads what a dequeuer, a readiness probe or curl sends: a request line, header fields and a body framed by
Content-Length, with keep-alive. Anything else (a POST without Content-Length, a chunked body, a malformed line, a
line too long, too many fields) raises BadRequest, which the server answers before closing the connection, as the
standard library's http.server does. It costs a fraction of http.server's parsing, whose header fields go through
the `email` package.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time: see thresher/worker/__init__.py
if TYPE_CHECKING:
    from io import BufferedIOBase

MAX_LINE_BYTES = 65536  # the request line, and each header field (as http.server)
MAX_HEADERS = 100
_VERSIONS = ("HTTP/1.1", "HTTP/1.0")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# The reason phrases of the statuses the helper answers with (http.HTTPStatus costs a worker's start 3 ms).
REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    411: "Length Required",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
}


class BadRequest(Exception):
    """A request this reader does not take: answer `status` with the message, then close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Request:
    __slots__ = ("method", "target", "line", "headers", "keep_alive")

    def __init__(self, method: str, target: str, line: str, headers: dict[str, str], keep_alive: bool) -> None:
        self.method = method
        self.target = target  # as sent: the path and query
        self.line = line  # the request line, for logs
        self.headers = headers  # field names in lower case; a repeated field keeps its last value
        self.keep_alive = keep_alive  # the client may send another request on this connection

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


def read_request(rfile: BufferedIOBase) -> Request | None:
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


def read_body(request: Request, rfile: BufferedIOBase, wfile: BufferedIOBase) -> bytes | None:
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
