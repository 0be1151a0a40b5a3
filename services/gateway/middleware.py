"""The middlewares: a log line per request, CORS for the allowed origins, every failure as JSON `{"kind", "message"}`,
and a cap on the requests with a large body handled at once; and the logger of aiohttp's connection handler, which
never logs the text of a request it could not parse."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from thresher.core.errors import ThresherError, TooLarge
from thresher.core.metrics import HTTP_REQUESTS, HTTP_SECONDS

log = logging.getLogger(__name__)

# What aiohttp logs before a request reaches a handler: a request line or header it cannot parse (400). Its errors
# quote the raw request, an `Authorization: Bearer <key>` header too, so records keep only the error's type and code.
PROTOCOL_LOG = logging.getLogger("services.gateway.protocol")


class _WithoutRequestText(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            what = record.getMessage()
            record.msg = "%s: %s %s (the request's text is not logged: it may hold an API key)"
            record.args = (what, type(error).__name__, getattr(error, "code", ""))
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"  # the client's mistake, not ours
        return True


PROTOCOL_LOG.addFilter(_WithoutRequestText())

# Kinds for the HTTP errors that aiohttp itself raises (no route, wrong method); others are "invalid".
_HTTP_KINDS = {404: "not_found", 405: "method_not_allowed", 408: "timeout"}


@web.middleware
async def request_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One line per request with method, path, status and duration; never the body."""
    start = time.perf_counter()
    status = 499  # stays so only when the handler is cancelled: the client went away
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as e:
        status = e.status
        raise
    finally:
        elapsed_s = time.perf_counter() - start
        ms = round(elapsed_s * 1000, 1)
        fields = {"method": request.method, "path": request.path, "status": status, "ms": ms}
        log.info("%s %s %d %.1fms", request.method, request.path, status, ms, extra=fields)
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        HTTP_REQUESTS.labels(request.method, route, str(status)).inc()
        HTTP_SECONDS.labels(route).observe(elapsed_s)


CORS_ORIGINS = web.AppKey("cors_origins", frozenset)  # gateway.cors_origins, parsed; "*" allows any
CORS_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type"
CORS_MAX_AGE_S = 600  # how long a browser may keep a preflight's answer


def cors_origins(setting: str) -> frozenset[str]:
    """The origins of gateway.cors_origins (comma-separated), without a trailing slash."""
    return frozenset(origin.strip().rstrip("/") for origin in setting.split(",") if origin.strip())


def _allowed_origin(request: web.Request) -> str | None:
    origin = request.headers.get("Origin")
    allowed = request.app[CORS_ORIGINS]
    return origin if origin is not None and (origin in allowed or "*" in allowed) else None


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A preflight (`OPTIONS` with Access-Control-Request-Method) from an allowed origin is answered here, before
    any key is asked for (browsers send none with it); other requests go on."""
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers and _allowed_origin(request):
        headers = {
            "Access-Control-Allow-Methods": CORS_METHODS,
            "Access-Control-Allow-Headers": CORS_HEADERS,
            "Access-Control-Max-Age": str(CORS_MAX_AGE_S),
        }
        return web.Response(status=204, headers=headers)
    return await handler(request)


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer to an allowed origin (errors and streams too) lets its page read it."""
    if origin := _allowed_origin(request):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.add("Vary", "Origin")


LARGE_BODY_BYTES = 1024 * 1024  # a body over this, or of unknown length, is large
LARGE_BODY_SLOTS = web.AppKey("large_body_slots", asyncio.Semaphore)  # gateway.max_large_bodies of them


def has_large_body(request: web.Request) -> bool:
    return request.body_exists and (request.content_length is None or request.content_length > LARGE_BODY_BYTES)


@web.middleware
async def large_body_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A request with a large body waits for a free slot before its body is read, and holds it until answered."""
    if not has_large_body(request):
        return await handler(request)
    async with request.app[LARGE_BODY_SLOTS]:
        return await handler(request)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """ThresherError -> its status and kind; aiohttp's own errors -> JSON; anything else -> 500, logged once."""
    try:
        return await handler(request)
    except ThresherError as e:
        return error_response(e.http_status, e.kind, e.message)
    except web.HTTPRequestEntityTooLarge:
        error = TooLarge(f"request body is larger than {request.client_max_size} bytes")
        return error_response(error.http_status, error.kind, error.message)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _http_error(request, e)
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(ThresherError.http_status, ThresherError.kind, "internal error")


def error_response(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"kind": kind, "message": message}, status=status)


def _http_error(request: web.Request, e: web.HTTPException) -> web.Response:
    if e.status == 404:
        message = f"no route for {request.method} {request.path}"
    elif isinstance(e, web.HTTPMethodNotAllowed):
        message = f"{request.method} is not allowed on {request.path} (allowed: {', '.join(sorted(e.allowed_methods))})"
    else:
        message = e.reason
    response = error_response(e.status, _HTTP_KINDS.get(e.status, "invalid"), message)
    if "Allow" in e.headers:
        response.headers["Allow"] = e.headers["Allow"]
    if e.headers.get("Connection") == "close":
        response.force_close()
    return response
