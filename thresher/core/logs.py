"""Logging as one JSON object per line, with `service`, `job_id` and `batch_id` from context variables."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

service_var: contextvars.ContextVar[str] = contextvars.ContextVar("service", default="")
job_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("job_id", default="")
batch_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("batch_id", default="")

# Attributes every LogRecord has; anything else on a record came from `extra=` and goes into the JSON.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": service_var.get(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in (("job_id", job_id_var), ("batch_id", batch_id_var)):
            if value := var.get():
                entry[key] = value
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every record to stderr as JSON lines tagged with `service`."""
    service_var.set(service)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("aiohttp.access", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
