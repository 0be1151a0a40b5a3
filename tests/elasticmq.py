"""ElasticMQ, a second SQS server (on the JVM, stricter than moto), as a process on 127.0.0.1 for the tests.

Its jars come from Maven Central once (`make elasticmq`, tests/fixtures/fetch-elasticmq.sh) into a cache outside the
repository. It runs with `sqs-limits = strict` and the region of the tests' clients.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.helpers import eventually
from thresher.core.ports import free_port

FIXTURES = Path(__file__).parent / "fixtures"
POM = FIXTURES / "elasticmq" / "pom.xml"
READY_TIMEOUT_S = 60.0  # a cold JVM start takes 3-5 s on an idle machine; give a busy one room
STOP_TIMEOUT_S = 10.0

_CONFIG = """\
include classpath("application.conf")
node-address {{ protocol = http, host = "127.0.0.1", port = {port}, context-path = "" }}
rest-sqs {{ enabled = true, bind-port = {port}, bind-hostname = "127.0.0.1", sqs-limits = strict }}
rest-stats {{ enabled = false }}
generate-node-address = false
aws {{ region = {region}, accountId = "000000000000" }}
"""


def jars_dir() -> Path:
    """Where fetch-elasticmq.sh puts the jars of the pom's version (the same rule as the script's)."""
    version = re.search(r"<elasticmq.version>(.+)</elasticmq.version>", POM.read_text())
    assert version is not None, f"{POM} names no elasticmq.version"
    user_cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    cache = Path(os.environ["THRESHER_CACHE"]) if os.environ.get("THRESHER_CACHE") else user_cache / "thresher"
    return cache / f"elasticmq-{version[1]}"


class ElasticMqMissing(Exception):
    """ElasticMQ cannot be run here: the message says what to do."""


@contextlib.contextmanager
def elasticmq(work_dir: Path, region: str) -> Iterator[str]:
    """Run ElasticMQ until the block ends; yields its URL. ElasticMqMissing when its jars or Java are missing."""
    jars = jars_dir()
    if not any(jars.glob("elasticmq-server_*.jar")):
        raise ElasticMqMissing(f"ElasticMQ is not fetched ({jars} holds no server jar): run `make elasticmq`")
    java = shutil.which("java")
    if java is None:
        raise ElasticMqMissing("ElasticMQ needs a Java runtime (java is not on PATH)")
    port = free_port()
    work_dir.mkdir(parents=True, exist_ok=True)
    config = work_dir / "elasticmq.conf"
    config.write_text(_CONFIG.format(port=port, region=region))
    with open(work_dir / "elasticmq.out", "wb") as out:
        command = [java, "-Xmx256m", f"-Dconfig.file={config}", "-cp", f"{jars}/*", "org.elasticmq.server.Main"]
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(url, proc, work_dir / "elasticmq.out")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_ready(url: str, proc: subprocess.Popen[bytes], output: Path) -> None:
    def serving() -> None:
        if proc.poll() is not None:
            raise ElasticMqMissing(f"ElasticMQ exited with {proc.returncode}: {output.read_text()[-2000:]}")
        try:  # any HTTP answer (an SQS error for a bare GET) means it is serving
            urllib.request.urlopen(url, timeout=1).close()
        except urllib.error.HTTPError:
            pass
        except OSError as e:
            raise AssertionError(e) from e

    try:
        eventually(serving, READY_TIMEOUT_S, interval_s=0.2)
    except AssertionError:
        raise ElasticMqMissing(
            f"ElasticMQ was not ready in {READY_TIMEOUT_S} s: {output.read_text()[-2000:]}"
        ) from None


def delete_every_queue(client: Any) -> None:
    """ElasticMQ has no reset: a test starts from no queue by deleting every one."""
    for url in client.list_queues().get("QueueUrls", []):
        client.delete_queue(QueueUrl=url)
