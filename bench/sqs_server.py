"""moto's server on 127.0.0.1, counting every SQS API call by operation: `python -m bench.sqs_server`.

It prints `listening on <port>` once it serves. `GET /_bench/calls` answers the counts as JSON, `POST
/_bench/reset` sets them to zero. A separate process, so that moto's work does not slow the bench's timing.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
from collections import Counter
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server


class CountingApp:
    def __init__(self, app: Any) -> None:
        self._app = app
        self._calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == "/_bench/calls":
            with self._lock:
                body = json.dumps(dict(self._calls)).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        if path == "/_bench/reset":
            with self._lock:
                self._calls.clear()
            start_response("200 OK", [("Content-Length", "0")])
            return [b""]
        if not path.startswith("/moto-api"):
            with self._lock:
                self._calls[_operation(environ)] += 1
        return self._app(environ, start_response)


def _operation(environ: dict[str, Any]) -> str:
    """`AmazonSQS.ReceiveMessage` (JSON protocol, what boto3 sends) or the query protocol's Action."""
    target: str = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return target.rpartition(".")[2]
    action = urllib.parse.parse_qs(environ.get("QUERY_STRING", "")).get("Action")
    return action[0] if action else "other"


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    app = CountingApp(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
