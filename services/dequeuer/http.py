"""A small HTTP/1.1 client for the worker beside the dequeuer, over keep-alive connections (asyncio streams only).

Thousands of batches a second go through it, so it does only what talking to one local worker needs: a request with
a body, an answer with Content-Length, chunked or read-to-close framing, and connections kept open between requests.
It costs a third of aiohttp's client per request and needs no import beyond asyncio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

MAX_BODY_BYTES = 64 * 1024  # of an answer, kept (only for errors); a longer one closes its connection
_HEAD_END = b"\r\n\r\n"


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.x as this client reads it."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes  # at most MAX_BODY_BYTES


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    used: bool = False  # has answered a request: the server may have closed it since

    def close(self) -> None:
        self.writer.close()


class HttpClient:
    """Requests to http://host:port; each on an idle kept-alive connection when there is one, else on a new one."""

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._host_header = f"Host: {host}:{port}\r\n"
        self._idle: list[_Connection] = []

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Response:
        """One request; OSError when the server cannot be reached or hangs up, ProtocolError on a malformed answer.

        Cancelling it (a timeout) closes its connection. A kept-alive connection the server closed while idle is
        replaced, and the request made again on the new one, as browsers and HTTP libraries do.
        """
        head = f"{method} {path} HTTP/1.1\r\n{self._host_header}Content-Length: {len(body)}\r\n"
        if headers:
            head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        message = head.encode("latin-1") + b"\r\n" + body
        while True:
            connection = self._idle.pop() if self._idle else await self._connect()
            try:
                connection.writer.write(message)
                response, keep_alive = await _read_response(connection.reader, method)
            except (OSError, asyncio.IncompleteReadError) as e:
                connection.close()
                if connection.used and not (isinstance(e, asyncio.IncompleteReadError) and e.partial):
                    continue  # closed while idle, before it read our request
                raise ConnectionResetError(f"the server closed the connection: {e}") from e
            except BaseException:  # a malformed answer, or cancelled mid-request: the connection is unusable
                connection.close()
                raise
            if keep_alive:
                connection.used = True
                self._idle.append(connection)
            else:
                connection.close()
            return response

    async def _connect(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self._host, self._port)
        return _Connection(reader, writer)

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()


async def _read_response(reader: asyncio.StreamReader, method: str) -> tuple[Response, bool]:
    """(the answer, whether the connection can take another request)."""
    while True:
        try:
            head = await reader.readuntil(_HEAD_END)
        except asyncio.LimitOverrunError as e:
            raise ProtocolError("the answer's header is too long") from e
        lines = head[: -len(_HEAD_END)].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:100]!r}")
        status = int(parts[1])
        if not 100 <= status < 200:  # informational answers (100 Continue, 102 Processing) precede the real one
            break
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    connection = headers.get(b"connection", b"")
    keep_alive = b"close" not in connection if parts[0] == b"HTTP/1.1" else b"keep-alive" in connection
    if method == "HEAD" or status in (204, 304):
        return Response(status, b""), keep_alive
    if b"chunked" in headers.get(b"transfer-encoding", b""):
        body, whole = await _read_chunked(reader)
        return Response(status, body), keep_alive and whole
    length = headers.get(b"content-length")
    if length is not None:
        if not length.isdigit():
            raise ProtocolError(f"bad Content-Length: {length[:40]!r}")
        body = await reader.readexactly(min(int(length), MAX_BODY_BYTES))
        return Response(status, body), keep_alive and int(length) <= MAX_BODY_BYTES
    return Response(status, await reader.read(MAX_BODY_BYTES)), False  # framed by the end of the connection


async def _read_chunked(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    """(the body, up to MAX_BODY_BYTES; whether it was read to its end)."""
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
        if len(body) + size > MAX_BODY_BYTES:
            return bytes(body), False
        body += await reader.readexactly(size)
        await reader.readexactly(2)  # the CRLF after each chunk
