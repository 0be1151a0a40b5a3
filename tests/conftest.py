"""Fixtures shared by every test folder: moto's server as the SQS and S3 endpoint and ElasticMQ as a second, strict
SQS endpoint, on 127.0.0.1 only; and the check that no API key is ever logged."""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from tests.elasticmq import ElasticMqMissing, delete_every_queue, elasticmq
from thresher.core.auth import KEY_PATTERN
from thresher.core.logs import JsonFormatter

# Dummy credentials and region for moto: tests never reach AWS, since every client is given moto's endpoint.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
DEDUPLICATION_WINDOW_S = 300  # SQS's: a FIFO queue drops a repeated deduplication id for 5 minutes


class _KeyCatcher(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.leaks: list[str] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        if KEY_PATTERN.search(line):
            self.leaks.append(line)


@pytest.fixture(scope="session", autouse=True)
def no_api_key_is_logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No API key appears in any log line of the run: this process's records (at the levels the tests let through)
    and the log files of every process the tests started (all under the run's temporary folder)."""
    catcher = _KeyCatcher()
    logging.getLogger().addHandler(catcher)
    yield
    logging.getLogger().removeHandler(catcher)
    leaks = catcher.leaks
    for path in tmp_path_factory.getbasetemp().rglob("*.log"):
        with open(path, encoding="utf-8", errors="replace") as f:
            leaks += [f"{path}: {line}" for line in f if KEY_PATTERN.search(line)]
    assert leaks == [], "API keys were logged"


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's server (SQS and S3 over real HTTP) in a thread on 127.0.0.1, started once; yields its URL."""
    from moto.server import ThreadedMotoServer

    _keep_deduplication_ids_after_delete()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_endpoint(moto_server: str) -> str:
    """moto's URL, with every queue and bucket of earlier tests gone."""
    request = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    return moto_server


@pytest.fixture(scope="session")
def elasticmq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """ElasticMQ (strict SQS limits, the tests' region) as a process on 127.0.0.1, started once; yields its URL.
    Fails, never skips, when it cannot be had: `make test` fetches it (`make elasticmq`)."""
    try:
        with elasticmq(tmp_path_factory.mktemp("elasticmq"), AWS_ENV["AWS_DEFAULT_REGION"]) as url:
            yield url
    except ElasticMqMissing as e:
        pytest.fail(str(e))


@pytest.fixture
def elasticmq_endpoint(elasticmq_server: str) -> str:
    """ElasticMQ's URL, with every queue of earlier tests gone."""
    delete_every_queue(moto_client("sqs", elasticmq_server))
    return elasticmq_server


def _keep_deduplication_ids_after_delete() -> None:
    """Make moto drop a FIFO message whose deduplication id was sent in the last 5 minutes, as SQS does.

    moto 5.2 compares only with the messages still in the queue, so a batch sent again after its ack would be
    delivered again; real SQS remembers the id for 5 minutes whatever happened to the message since.
    """
    from moto.sqs import models

    if getattr(models.Queue.add_message, "thresher_patched", False):
        return
    original = models.Queue.add_message

    def add_message(self: Any, message: Any) -> None:
        if self.fifo_queue and message.deduplication_id:
            seen: dict[str, int] = self.__dict__.setdefault("_thresher_deduplication_ids", {})
            sent_ms = seen.get(message.deduplication_id)
            if sent_ms is not None and message.sent_timestamp - sent_ms < DEDUPLICATION_WINDOW_S * 1000:
                return
            seen[message.deduplication_id] = message.sent_timestamp
        original(self, message)

    add_message.thresher_patched = True  # type: ignore[attr-defined]
    models.Queue.add_message = add_message


def moto_client(service: str, endpoint: str) -> Any:
    """A boto3 client of moto's server (or ElasticMQ) on loopback, with the tests' dummy credentials."""
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=AWS_ENV["AWS_DEFAULT_REGION"],
        aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    )
