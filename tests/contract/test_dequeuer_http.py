"""The dequeuer's HTTP client against a raw HTTP server on 127.0.0.1: what it keeps of long answers, and that a long
answer does not cost the request pipelined behind it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from services.dequeuer.http import MAX_BODY_BYTES, HttpClient

LONG = 200 * 1024  # bytes of the first answer's body: more than the client keeps


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, list[int]]]:
    """Answers each request in order on its connection: the first with a long body, the others with its number.
    Yields the port and, per connection accepted, how many requests it answered."""
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(0)
        index = len(connections) - 1
        while head := await reader.readuntil(b"\r\n\r\n"):
            length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))[15:])
            await reader.readexactly(length)
            body = b"x" * LONG if connections[index] == 0 else b"%d" % connections[index]
            connections[index] += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await serve(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client closed the connection
        finally:
            writer.close()

    listener = await asyncio.start_server(guarded, "127.0.0.1", 0)
    yield listener.sockets[0].getsockname()[1], connections
    listener.close()
    await listener.wait_closed()


async def test_a_long_answer_is_cut_to_what_is_kept_and_the_request_pipelined_behind_it_is_answered(
    server: tuple[int, list[int]],
) -> None:
    port, connections = server
    client = HttpClient("127.0.0.1", port)
    try:
        first = await client.send("POST", "/", b"[1]")
        second = await client.send("POST", "/", b"[2]", after=first)

        long_answer, next_answer = await first.response(), await second.response()
        third = await client.request("POST", "/", b"[3]")
    finally:
        client.close()

    assert (long_answer.status, len(long_answer.body)) == (200, MAX_BODY_BYTES)
    assert (next_answer.status, next_answer.body) == (200, b"1")
    assert third.body == b"2", "the connection stayed usable"
    assert connections == [3]
