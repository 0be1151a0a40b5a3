"""The dequeuer's admin endpoint: `GET /healthz` (200 once its worker is ready, else 503) and `GET /metrics`.

A few lines of asyncio rather than aiohttp (as thresher.core.metrics serves the other services): every worker
start waits for the dequeuer's imports, and aiohttp's are a third of a second. prometheus_client is imported at
the first scrape.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from http import HTTPStatus

READ_TIMEOUT_S = 5.0


async def start_admin_server(address: str, ready: Callable[[], bool]) -> tuple[asyncio.Server, int]:
    """Serve on `address` ("127.0.0.1:0" picks a port); returns the server and its port."""
    host, port = address.rsplit(":", 1)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
            method, target = (head.split(b"\r\n", 1)[0].split(b" ") + [b"", b""])[:2]
            writer.write(_answer(method, target.split(b"?", 1)[0], ready))
            await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away or sent something else than a request
        finally:
            writer.close()

    server = await asyncio.start_server(handle, host, int(port))
    return server, int(server.sockets[0].getsockname()[1])


def _answer(method: bytes, path: bytes, ready: Callable[[], bool]) -> bytes:
    if method != b"GET":
        return _response(405, b"only GET\n", "text/plain")
    if path == b"/healthz":
        is_ready = ready()
        return _response(200 if is_ready else 503, json.dumps({"ready": is_ready}).encode(), "application/json")
    if path == b"/metrics":
        from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, REGISTRY, generate_latest

        return _response(200, generate_latest(REGISTRY), CONTENT_TYPE_PLAIN_0_0_4)
    return _response(404, b"not found\n", "text/plain")


def _response(status: int, body: bytes, content_type: str) -> bytes:
    head = f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: {content_type}\r\n"
    return f"{head}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
