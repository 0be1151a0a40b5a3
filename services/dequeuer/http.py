"""A small HTTP/1.1 client for the worker beside the dequeuer, over keep-alive connections (asyncio streams only).

Thousands of batches a second go through it, so it does only what talking to one local worker needs: a request with
a body, an answer with Content-Length, chunked or read-to-close framing, and connections kept open between requests.
It costs a third of aiohttp's client per request and needs no import beyond asyncio.

A request can also be pipelined: written on a connection behind one whose answer has not come yet, for a server that
answers its requests one after another and says so (the worker helper's `X-Thresher-Pipelining` header). The server
then finds the next request waiting as soon as it has answered one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from thresher.core import names

MAX_BODY_BYTES = 64 * 1024  # of an answer, kept by default; the rest of a longer one is read past
PIPELINING_HEADER = names.HEADER_PIPELINING.lower().encode()  # "1": the server answers pipelined requests, in order
_HEAD_END = b"\r\n\r\n"


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.x as this client reads it."""


class NotStarted(ConnectionResetError):
    """A pipelined request that the server did not read: it closed the connection after answering the one before
    (Connection: close, or that answer failed). It was not handled and may be sent again."""


@dataclass(slots=True)
class Response:
    """An answer (not to be changed: not frozen only because that makes it slower)."""

    status: int
    body: bytes  # at most the client's max_body_bytes
    pipelining: bool = False  # the server says it takes pipelined requests
    content_type: bytes = b""  # lower case
    cut: bool = False  # the body was longer than the client's max_body_bytes: `body` is its start


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    used: bool = False  # has answered a request: the server may have closed it since
    pending: int = 0  # requests written, not answered yet
    closed: bool = False

    def close(self) -> None:
        self.closed = True
        self.writer.close()


class HttpClient:
    """Requests to http://host:port; each on an idle kept-alive connection when there is one, else on a new one."""

    def __init__(self, host: str, port: int, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self._host = host
        self._port = port
        self.max_body_bytes = max_body_bytes  # of an answer, kept
        self._host_header = f"Host: {host}:{port}\r\n"
        self._idle: list[_Connection] = []

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Response:
        """One request; OSError when the server cannot be reached or hangs up, ProtocolError on a malformed answer.

        Cancelling it (a timeout) closes its connection. A kept-alive connection the server closed while idle is
        replaced, and the request made again on the new one, as browsers and HTTP libraries do.
        """
        return await (await self.send(method, path, body, headers)).response()

    async def send(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        after: Exchange | None = None,
        header_lines: str = "",
    ) -> Exchange:
        """Write a request; its answer is `await exchange.response()`, and the caller may work meanwhile.

        `after`: pipeline it on that exchange's connection (its answer must be awaited first); else it goes on an
        idle connection, or a new one. `header_lines`: more header fields, already as "Name: value\\r\\n" lines.
        """
        head = f"{method} {path} HTTP/1.1\r\n{self._host_header}Content-Length: {len(body)}\r\n{header_lines}"
        if headers:
            head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        exchange = Exchange(self, method, head.encode("latin-1") + b"\r\n" + body)
        if after is None:
            exchange.write_on(self._idle.pop() if self._idle else await self._connect(), pipelined=False)
        elif after.open:
            exchange.write_on(after.connection, pipelined=True)  # type: ignore[arg-type]
        else:  # never on another connection: the server would run the two requests at once
            raise NotStarted("the connection to pipeline on is closed")
        return exchange

    @property
    def idle(self) -> bool:
        """A kept-alive connection is free: send() writes at once, without connecting."""
        return bool(self._idle)

    async def _connect(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self._host, self._port)
        return _Connection(reader, writer)

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()


class Exchange:
    """One request written on a connection, and its answer to come."""

    def __init__(self, client: HttpClient, method: str, message: bytes) -> None:
        self._client = client
        self._method = method
        self._message = message
        self.connection: _Connection | None = None
        self.pipelined = False
        self.answered = False

    @property
    def open(self) -> bool:
        """Not answered yet, on an open connection: another request can be pipelined behind it."""
        return self.connection is not None and not self.connection.closed and not self.answered

    def write_on(self, connection: _Connection, pipelined: bool) -> None:
        self.connection, self.pipelined = connection, pipelined
        connection.pending += 1
        connection.writer.write(self._message)

    async def response(self) -> Response:
        """The answer; see HttpClient.request for the errors, and NotStarted. Await it once, in the order sent."""
        client = self._client
        while True:
            connection = self.connection
            assert connection is not None
            if connection.closed:  # after the answer before ours (or its failure), without reading ours
                raise NotStarted("the server closed the connection before reading this request")
            try:
                response, keep_alive = await _read_response(connection.reader, self._method, client.max_body_bytes)
            except (OSError, asyncio.IncompleteReadError) as e:
                connection.close()
                if connection.used and not (isinstance(e, asyncio.IncompleteReadError) and e.partial):
                    # Closed while idle, before it read our request: again, on another connection.
                    self.write_on(client._idle.pop() if client._idle else await client._connect(), pipelined=False)
                    continue
                raise ConnectionResetError(f"the server closed the connection: {e}") from e
            except BaseException:  # a malformed answer, or cancelled mid-request: the connection is unusable
                connection.close()
                raise
            self.answered = True
            connection.pending -= 1
            connection.used = True
            if not keep_alive:
                connection.close()
            elif connection.pending == 0:
                client._idle.append(connection)
            return response


async def _read_response(reader: asyncio.StreamReader, method: str, keep: int) -> tuple[Response, bool]:
    """(the answer, its body's first `keep` bytes; whether the connection can take another request)."""
    while True:
        try:
            head = await reader.readuntil(_HEAD_END)
        except asyncio.LimitOverrunError as e:
            raise ProtocolError("the answer's header is too long") from e
        status_line, _, fields = head[: -len(_HEAD_END)].partition(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {status_line[:100]!r}")
        status = int(parts[1])
        if not 100 <= status < 200:  # informational answers (100 Continue, 102 Processing) precede the real one
            break
    headers = {}
    for line in fields.lower().split(b"\r\n"):  # one lower() for all of them: thousands of answers a second
        name, _, value = line.partition(b":")
        headers[name.strip()] = value.strip()
    connection = headers.get(b"connection", b"")
    keep_alive = b"close" not in connection if parts[0] == b"HTTP/1.1" else b"keep-alive" in connection
    pipelining = headers.get(PIPELINING_HEADER) == b"1"
    content_type = headers.get(b"content-type", b"")
    if method == "HEAD" or status in (204, 304):
        return Response(status, b"", pipelining, content_type), keep_alive
    if b"chunked" in headers.get(b"transfer-encoding", b""):
        body, whole = await _read_chunked(reader, keep)
        return Response(status, body, pipelining, content_type, cut=not whole), keep_alive and whole
    length = headers.get(b"content-length")
    if length is not None:
        if not length.isdigit():
            raise ProtocolError(f"bad Content-Length: {length[:40]!r}")
        size = int(length)
        body = await reader.readexactly(min(size, keep))
        # The rest is read past, not left to a close: a request pipelined behind this one may be running already,
        # and a closed connection would make it look unread.
        left = size - len(body)
        while left:
            left -= len(await reader.readexactly(min(left, MAX_BODY_BYTES)))
        return Response(status, body, pipelining, content_type, cut=size > keep), keep_alive
    body = b""  # framed by the connection's end
    while len(body) <= keep and (chunk := await reader.read(keep + 1 - len(body))):
        body += chunk
    return Response(status, body[:keep], pipelining, content_type, cut=len(body) > keep), False


async def _read_chunked(reader: asyncio.StreamReader, keep: int) -> tuple[bytes, bool]:
    """(the body, up to `keep` bytes; whether it was read to its end)."""
    body = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0], 16)
        except ValueError as e:
            raise ProtocolError(f"bad chunk size: {size_line[:40]!r}") from e
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailer fields, if any, up to the empty line
                pass
            return bytes(body), True
        if len(body) + size > keep:
            return bytes(body), False
        body += await reader.readexactly(size)
        await reader.readexactly(2)  # the CRLF after each chunk
