"""`/ui/`: the web console, static files from `console/` served under a strict Content Security Policy.

The console is a client of the documented HTTP API like any other: it holds no key of its own and calls nothing
private. Only the files of `console/` are served, each found by name in a table made at start (no path is ever
joined from the request), with a policy that allows scripts, styles and requests from the gateway's own origin only.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from thresher.core.errors import NotFound

CONSOLE_DIR = Path(__file__).parent / "console"
INDEX = "index.html"
# Scripts, styles, images and calls from this origin only; no inline script or style, no plugin, no framing, and no
# form sent anywhere (the key form is read by script: without it, the key must not land in a URL).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated each time: a new gateway's console is seen at once
}
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".svg": "image/svg+xml"}


def _console_files() -> dict[str, Path]:
    return {path.name: path for path in CONSOLE_DIR.iterdir() if path.suffix in _TYPES}


def add_console_routes(app: web.Application) -> None:
    files = _console_files()

    async def console_file(request: web.Request) -> web.Response:
        """A file of the console; `/ui/` is its page."""
        name = request.match_info["file"] or INDEX
        path = files.get(name)
        if path is None:
            raise NotFound(f"the console has no file {name!r}")
        content_type = _TYPES[path.suffix]
        return web.Response(body=path.read_bytes(), content_type=content_type, charset="utf-8", headers=HEADERS)

    app.router.add_get("/ui/{file:[^/]*}", console_file)
