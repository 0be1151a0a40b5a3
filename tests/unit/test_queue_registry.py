"""The queue backend registry is the one list of backends: each entry can be opened, and the CLI offers its names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import get_type_hints

import pytest

from thresher.core.config import Config, QueueSettings
from thresher.core.errors import InvalidRequest
from thresher.core.queue import QUEUE_BACKENDS, QueueBackend, open_queue_backend, queue_backend_entry
from thresher.core.queue.registry import backend_factory
from thresher.tools import cli


@pytest.mark.parametrize("name", list(QUEUE_BACKENDS))
def test_each_entry_names_a_module_that_imports_and_a_factory_in_it(name: str) -> None:
    factory = backend_factory(QUEUE_BACKENDS[name])
    assert issubclass(get_type_hints(factory)["return"], QueueBackend), f"{name}'s factory makes a QueueBackend"


def test_the_cli_offers_exactly_the_registry_s_backends(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["up", "--help"])
    assert f"--queue-backend {{{','.join(QUEUE_BACKENDS)}}}" in capsys.readouterr().out


def test_an_unknown_backend_is_refused_naming_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="unknown queue backend 'nope' \\(known: sqlite, sqs\\)"):
        open_queue_backend(Config(data_dir=str(tmp_path), queue=QueueSettings(backend="nope")))
    with pytest.raises(InvalidRequest, match="unknown queue backend"):
        queue_backend_entry("nope")


def test_opening_the_sqlite_backend_imports_neither_the_sqs_backend_nor_boto3(tmp_path: Path) -> None:
    """The dequeuer imports its backend at every worker start: SQLite's must stay light."""
    script = (
        "import sys\n"
        "from thresher.core.config import Config\n"
        "from thresher.core.queue import open_queue_backend\n"
        f"backend = open_queue_backend(Config(data_dir={str(tmp_path)!r}))\n"
        "print(type(backend).__name__, 'boto3' in sys.modules, 'thresher.core.queue.sqs' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["SqliteQueueBackend", "False", "False"]
