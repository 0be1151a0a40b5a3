"""Calls to the scheduler's Jobs service on the caller's behalf: their API key goes with every call.

The scheduler decides who may do what. Before a route reads its request, the middleware asks it (`Authorize`)
whether the caller's key allows the Jobs method the route calls: without a valid key the answer is 401 (403 without
the scope) whatever the request holds, and nothing of it is read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from thresher.core import auth
from thresher.core.errors import InvalidRequest, Unauthenticated
from thresher.core.names import GRPC_AUTHORIZATION_KEY, HEADER_AUTHORIZATION
from thresher.core.rpc import Client
from thresher.v1 import jobs_pb2

JOBS = web.AppKey("jobs", Client)  # the scheduler's Jobs service, open while the app runs
# The key that requests to Cortex's job routes without one act with (gateway.open_routes_key_file); absent: none.
OPEN_ROUTES_KEY = web.AppKey("open_routes_key", str)
_JOBS_METHODS: dict[Handler, str] = {}  # route handler -> the Jobs method it calls
_CORTEX_ROUTES: set[Handler] = set()  # the handlers of Cortex's job routes, which OPEN_ROUTES_KEY may open


def calls(method: str, cortex: bool = False) -> Callable[[Handler], Handler]:
    """Mark a route handler as calling the Jobs method `method`: only callers whose key allows it get in.
    `cortex`: one of Cortex's job routes, which gateway.open_routes_key_file opens."""

    def mark(handler: Handler) -> Handler:
        _JOBS_METHODS[handler] = method
        if cortex:
            _CORTEX_ROUTES.add(handler)
        return handler

    return mark


def load_open_routes_key(path: str) -> str:
    """The API key in `path` (its first line); InvalidRequest, which stops the gateway, when there is none."""
    try:
        key = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidRequest(f"gateway.open_routes_key_file: cannot read {path}: {e}") from e
    try:
        return auth.bearer_token(auth.authorization(key))
    except Unauthenticated as e:
        raise InvalidRequest(f"gateway.open_routes_key_file: {path} does not hold an API key") from e


class CallerJobs:
    """The Jobs client, with the caller's credentials (if any) on every call."""

    def __init__(self, client: Client, metadata: tuple[tuple[str, str], ...]) -> None:
        self._client = client
        self._metadata = metadata

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        return lambda request, **kw: method(request, metadata=self._metadata, **kw)


def jobs(request: web.Request) -> CallerJobs:
    """The scheduler's Jobs service, called as the request's caller (on an open Cortex route without a key: as the
    open routes' key). A malformed Authorization header is a 401."""
    value = request.headers.get(HEADER_AUTHORIZATION)
    if value is None and OPEN_ROUTES_KEY in request.app and request.match_info.handler in _CORTEX_ROUTES:
        value = auth.authorization(request.app[OPEN_ROUTES_KEY])
    metadata = () if value is None else ((GRPC_AUTHORIZATION_KEY, auth.authorization(auth.bearer_token(value))),)
    return CallerJobs(request.app[JOBS], metadata)


@web.middleware
async def authorize_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Routes that call the Jobs service let in only callers whose key allows the method (open routes: all)."""
    method = _JOBS_METHODS.get(request.match_info.handler)
    if method is not None:
        await jobs(request).Authorize(jobs_pb2.AuthorizeRequest(method=method))
    return await handler(request)
