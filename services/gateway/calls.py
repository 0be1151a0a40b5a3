"""Calls to the scheduler's Jobs service on the caller's behalf: their API key goes with every call.

The scheduler decides who may do what. Before a route reads its request, the middleware asks it (`Authorize`)
whether the caller's key allows the Jobs method the route calls: without a valid key the answer is 401 (403 without
the scope) whatever the request holds, and nothing of it is read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from thresher.core import auth
from thresher.core.names import GRPC_AUTHORIZATION_KEY, HEADER_AUTHORIZATION
from thresher.core.rpc import Client
from thresher.v1 import jobs_pb2

JOBS = web.AppKey("jobs", Client)  # the scheduler's Jobs service, open while the app runs
_JOBS_METHODS: dict[Handler, str] = {}  # route handler -> the Jobs method it calls


def calls(method: str) -> Callable[[Handler], Handler]:
    """Mark a route handler as calling the Jobs method `method`: only callers whose key allows it get in."""

    def mark(handler: Handler) -> Handler:
        _JOBS_METHODS[handler] = method
        return handler

    return mark


class CallerJobs:
    """The Jobs client, with the caller's credentials (if any) on every call."""

    def __init__(self, client: Client, metadata: tuple[tuple[str, str], ...]) -> None:
        self._client = client
        self._metadata = metadata

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        return lambda request, **kw: method(request, metadata=self._metadata, **kw)


def jobs(request: web.Request) -> CallerJobs:
    """The scheduler's Jobs service, called as the request's caller. A malformed Authorization header is a 401."""
    value = request.headers.get(HEADER_AUTHORIZATION)
    metadata = () if value is None else ((GRPC_AUTHORIZATION_KEY, auth.authorization(auth.bearer_token(value))),)
    return CallerJobs(request.app[JOBS], metadata)


@web.middleware
async def authorize_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Routes that call the Jobs service let in only callers whose key allows the method (open routes: all)."""
    method = _JOBS_METHODS.get(request.match_info.handler)
    if method is not None:
        await jobs(request).Authorize(jobs_pb2.AuthorizeRequest(method=method))
    return await handler(request)
