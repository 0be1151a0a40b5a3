"""aiohttp's own refusals in the gateway's JSON shape.

aiohttp answers a request it cannot parse (a bad request line or method, a URL or header over its limits, too many
headers, a malformed chunked body) before any handler or middleware runs, in plain text. `GatewayRunner` serves
connections whose refusals are JSON `{"kind", "message"}`, as every other error of the gateway's. The message says
what was wrong, never the request's text: a parser's error quotes the line it refused, which may hold an API key.
"""

from __future__ import annotations

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler

from services.gateway.middleware import error_response
from thresher.core.errors import InvalidRequest, ThresherError

# The request line, each header and the number of headers: longer or more get 400 and the connection closes
# (aiohttp's own limits, stated here so that they are visibly ours).
MAX_LINE_BYTES = 8190
MAX_FIELD_BYTES = 8190
MAX_HEADERS = 100

# What each parser error means, most specific first; the parsers' own messages may quote the request.
_WHAT = (
    (http_exceptions.LineTooLong, f"the request line or a header is over {MAX_FIELD_BYTES} bytes"),
    (http_exceptions.BadHttpMethod, "the request method is not a valid HTTP method"),
    (http_exceptions.InvalidURLError, "the request's URL is not valid"),
    (http_exceptions.BadStatusLine, "the request line is not valid HTTP/1.1"),
    (http_exceptions.InvalidHeader, "a header is not valid HTTP/1.1"),
    (http_exceptions.TransferEncodingError, "the chunked body is malformed"),
    (http_exceptions.ContentLengthError, "the body does not match its Content-Length"),
)
_OTHERWISE = f"the request is not valid HTTP/1.1 (a header, or a chunk of its body), or has over {MAX_HEADERS} headers"


def describe(status: int, exc: BaseException | None) -> tuple[str, str]:
    """The kind and message of aiohttp's refusal with `status` for `exc`."""
    if status >= 500:
        return ThresherError.kind, "internal error"
    return InvalidRequest.kind, next((what for cls, what in _WHAT if isinstance(exc, cls)), _OTHERWISE)


class _JsonRefusals(RequestHandler):
    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs it; raises when an answer was already sent
        response = error_response(status, *describe(status, exc))
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _JsonRefusals(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """An AppRunner whose connections answer aiohttp's refusals in JSON."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        json_server = _Server.__new__(_Server)  # the same server (its app, limits, loggers), with our connections
        json_server.__dict__.update(server.__dict__)
        return json_server
