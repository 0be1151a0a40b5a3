"""gRPC helpers: servers with health, reflection, caller checks and error mapping; channels; clients that send
their token and raise ThresherError.

Every call but health checks and reflection needs a token (thresher/core/trust.py): servers check it, and the role's
right to the method, in one interceptor, before the servicer sees the call; `peer()` tells the servicer who called.

A dequeuer imports this module for its channel to the monitor, at every worker start: what only servers use (health,
reflection, prometheus_client) and retries (tenacity) are imported where they are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from thresher.core.aiotasks import create_guarded_task
from thresher.core.config import TlsSettings
from thresher.core.errors import Forbidden, InvalidRequest, ThresherError, Unavailable, from_grpc
from thresher.core.names import GRPC_KIND_KEY, GRPC_TOKEN_KEY
from thresher.core.trust import OPEN_SERVICES, Peer, Trust

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # above the gateway's 10 MiB body limit, so any accepted job fits
OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # gRPC sets SO_REUSEPORT by default: two servers could then share a port silently. Fail instead.
    ("grpc.so_reuseport", 0),
]

PLAINTEXT = TlsSettings()
Registration = tuple[Callable[[Any, grpc.aio.Server], None], Any, str]  # (add_XServicer_to_server, servicer, full name)
_PEER: contextvars.ContextVar[Peer] = contextvars.ContextVar("thresher_rpc_peer")


async def start_server(
    address: str, services: Sequence[Registration], trust: Trust, tls: TlsSettings = PLAINTEXT
) -> tuple[grpc.aio.Server, int]:
    """Serve `services` on `address` ("127.0.0.1:0" picks a port) with health and reflection; returns the port.

    `trust`: the stack's, which checks each caller's token; `tls`: the service's mutual TLS settings (`config.tls`),
    plaintext when they are empty."""
    # Imported here, by servers only: a dequeuer (a client) starts faster without them.
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    from thresher.core.metrics import GRPC_REQUESTS, GRPC_SECONDS

    server = grpc.aio.server(interceptors=[_GuardInterceptor(trust, GRPC_REQUESTS, GRPC_SECONDS)], options=OPTIONS)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
    for add, servicer, name in services:
        add(servicer, server)
        names.append(name)
    reflection.enable_server_reflection(names, server)
    if tls.enabled:
        ca, cert, key = _read_tls(tls)
        credentials = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise Unavailable(f"cannot listen on {address}")
    await server.start()
    for _, _, name in services:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    if tls.enabled and tls.health_address:
        await _serve_plaintext_health(server, health_servicer, tls.health_address)
    return server, port


async def _serve_plaintext_health(server: grpc.aio.Server, servicer: Any, address: str) -> None:
    """The health service alone, without TLS, for kubelet probes; it stops when `server` does."""
    from grpc_health.v1 import health_pb2_grpc

    health_server = grpc.aio.server(options=OPTIONS)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, health_server)
    port = health_server.add_insecure_port(address)
    if port == 0:
        raise Unavailable(f"cannot listen on {address}")
    await health_server.start()
    log.info("plaintext gRPC health checks on port %d", port)

    async def stop_with_server() -> None:
        await server.wait_for_termination()
        await health_server.stop(None)

    create_guarded_task(stop_with_server(), "plaintext health server")


# gRPC's default reconnect backoff grows to 120 s: a restarted peer would stay unreachable that long.
CHANNEL_OPTIONS = [*OPTIONS, ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 2000)]


def channel(address: str, tls: TlsSettings = PLAINTEXT) -> grpc.aio.Channel:
    """A channel to `address`; `tls`: the caller's mutual TLS settings (`config.tls`), plaintext when empty."""
    if not tls.enabled:
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    ca, cert, key = _read_tls(tls)
    credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    return grpc.aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS)


def _read_tls(tls: TlsSettings) -> tuple[bytes, bytes, bytes]:
    """The CA, certificate and key files' contents."""
    files = {"ca_file": tls.ca_file, "cert_file": tls.cert_file, "key_file": tls.key_file}
    missing = [name for name, path in files.items() if not path]
    if missing:
        raise InvalidRequest(f"tls: {', '.join(missing)} missing: ca_file, cert_file and key_file go together")
    try:
        ca, cert, key = (Path(path).read_bytes() for path in files.values())
    except OSError as e:
        raise InvalidRequest(f"tls: cannot read {e.filename}: {e.strerror}") from e
    return ca, cert, key


class Client:
    """Wraps a generated stub so that every call carries `token` (thresher/core/trust.py) and failed calls raise the
    ThresherError they stand for."""

    def __init__(self, stub: Any, token: str, timeout_s: float | None = 30.0) -> None:
        self._stub = stub
        self._token = token
        self._timeout_s = timeout_s

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)
        if isinstance(method, grpc.aio.UnaryStreamMultiCallable):
            return lambda request, **kw: _stream(method(request, **self._with_token(kw)))
        return lambda request, **kw: _unary(method(request, **({"timeout": self._timeout_s} | self._with_token(kw))))

    def _with_token(self, kw: dict[str, Any]) -> dict[str, Any]:
        return kw | {"metadata": (*kw.get("metadata", ()), (GRPC_TOKEN_KEY, self._token))}


def peer() -> Peer:
    """Who made the call being served, as its token says (in a servicer method only)."""
    return _PEER.get()


async def _unary(call: Awaitable[Any]) -> Any:
    try:
        return await call
    except grpc.aio.AioRpcError as e:
        raise _to_error(e) from e


async def _stream(call: AsyncIterable[Any]) -> AsyncIterator[Any]:
    try:
        async for message in call:
            yield message
    except grpc.aio.AioRpcError as e:
        raise _to_error(e) from e


def _to_error(e: grpc.aio.AioRpcError) -> ThresherError:
    kind = next((str(v) for k, v in (e.trailing_metadata() or ()) if k == GRPC_KIND_KEY), None)
    return from_grpc(e.code(), e.details() or "", kind)


async def retry_unavailable(fn: Callable[[], Awaitable[Any]], deadline_s: float = 60.0) -> Any:
    """Call `fn` until it does not raise Unavailable (a peer restarting), for up to `deadline_s`."""
    from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

    async for attempt in AsyncRetrying(
        retry=retry_if_exception_type(Unavailable),
        wait=wait_exponential(multiplier=0.05, max=2.0),
        stop=stop_after_delay(deadline_s),
        reraise=True,
    ):
        with attempt:
            return await fn()


class _GuardInterceptor(grpc.aio.ServerInterceptor):
    """Lets a call through only with a token (checked by `trust`) whose role may call the method, unless its service
    is open to all; turns ThresherError into a gRPC status carrying its kind (anything else is logged once as
    INTERNAL); counts and times every request in `requests` (by method and code) and `seconds` (by method)."""

    def __init__(self, trust: Trust, requests: Any, seconds: Any) -> None:
        self._trust = trust
        self._meters = (requests, seconds)

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        wrap, make = (
            (_guard_unary, grpc.unary_unary_rpc_method_handler)
            if handler.unary_unary
            else (_guard_unary, grpc.stream_unary_rpc_method_handler)
            if handler.stream_unary
            else (_guard_stream, grpc.unary_stream_rpc_method_handler)
            if handler.unary_stream
            else (_guard_stream, grpc.stream_stream_rpc_method_handler)
        )
        behavior = handler.unary_unary or handler.stream_unary or handler.unary_stream or handler.stream_stream
        service = details.method.lstrip("/").split("/", 1)[0]
        trust = None if service in OPEN_SERVICES else self._trust
        return make(
            wrap(behavior, details.method, trust, self._meters),
            request_deserializer=_lenient(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


class _Malformed:
    """A request message that did not parse. gRPC would answer UNKNOWN; the guards answer INVALID_ARGUMENT."""

    def __init__(self, error: DecodeError) -> None:
        self.error = error


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as e:
            return _Malformed(e)

    return deserialize


def _checked(request: Any) -> Any:
    """The request (or, for a client stream, its messages), raising InvalidRequest for one that did not parse."""
    if isinstance(request, _Malformed):
        raise InvalidRequest(f"malformed request message: {request.error}")
    if not hasattr(request, "__aiter__"):
        return request

    async def messages() -> AsyncIterator[Any]:
        async for message in request:
            yield _checked(message)

    return messages()


def _authorize(trust: Trust | None, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    """Unauthenticated without a valid token, Forbidden when its role may not call `method`; `peer()` is its holder."""
    if trust is None:
        return
    token = next((str(v) for k, v in (context.invocation_metadata() or ()) if k == GRPC_TOKEN_KEY), None)
    caller = trust.peer(token)
    if not caller.may_call(method):
        raise Forbidden(f"a {caller.role} may not call {method}")
    _PEER.set(caller)


def _guard_unary(behavior: Any, method: str, trust: Trust | None, meters: tuple[Any, Any]) -> Any:
    async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        with _measured(method, meters) as outcome:
            try:
                _authorize(trust, method, context)
                return await behavior(_checked(request), context)
            except Exception as e:
                outcome.append(_code_of(e))
                await _abort(context, e, method)

    return guarded


def _guard_stream(behavior: Any, method: str, trust: Trust | None, meters: tuple[Any, Any]) -> Any:
    async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        with _measured(method, meters) as outcome:
            try:
                _authorize(trust, method, context)
                async for response in behavior(_checked(request), context):
                    yield response
            except Exception as e:
                outcome.append(_code_of(e))
                await _abort(context, e, method)

    return guarded


@contextlib.contextmanager
def _measured(method: str, meters: tuple[Any, Any]) -> Iterator[list[str]]:
    """Count the request by its status code (the caller appends one when it fails) and time it."""
    requests, seconds = meters
    outcome: list[str] = []
    started = time.perf_counter()
    try:
        yield outcome
    except asyncio.CancelledError:
        outcome.append(grpc.StatusCode.CANCELLED.name)
        raise
    finally:
        requests.labels(method, outcome[0] if outcome else grpc.StatusCode.OK.name).inc()
        seconds.labels(method).observe(time.perf_counter() - started)


def _code_of(e: Exception) -> str:
    return e.grpc_code.name if isinstance(e, ThresherError) else grpc.StatusCode.INTERNAL.name


async def _abort(context: grpc.aio.ServicerContext[Any, Any], e: Exception, method: str) -> None:
    if isinstance(e, grpc.aio.AbortError):
        raise e
    if not isinstance(e, ThresherError):
        log.exception("unexpected error in %s", method)
        e = ThresherError(f"internal error in {method}: {type(e).__name__}")
    await context.abort(e.grpc_code, str(e), trailing_metadata=((GRPC_KIND_KEY, e.kind),))
