"""The Python client's parts that need no stack: how it is imported, and the submission body it streams."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from thresher.core.errors import InvalidRequest
from thresher.tools.submission import CHUNK_BYTES, SubmissionBody


def test_from_thresher_import_client_works_and_the_worker_sdk_does_not_load_it() -> None:
    code = (
        "import sys, thresher.worker; before = sorted(m for m in sys.modules if m.startswith('thresher.tools'));"
        "from thresher import Client, Job, JobFailed; print(before, Client.__module__, Job.__name__, JobFailed.kind)"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()

    assert shown == ["[]", "thresher.tools.sdk", "Job", "job_failed"]
    with pytest.raises(AttributeError, match="Nope"):
        import thresher

        thresher.Nope  # noqa: B018


@pytest.mark.parametrize("count", [0, 1, 5, 3 * CHUNK_BYTES // 7 + 11])
@pytest.mark.parametrize("fields", [{}, {"workers": 2, "config": {"lang": "en"}}])
def test_the_submission_body_is_json_lines_in_chunks(count: int, fields: dict[str, object]) -> None:
    items = ({"n": i} if i % 2 else f"item\n{i}" for i in range(count))  # a generator: read once, as it is sent
    body = SubmissionBody(fields, items, batch_size=7)

    chunks = list(body.chunks())

    head, *lines = b"".join(chunks).decode().splitlines()
    assert json.loads(head) == fields | {"item_list": {"batch_size": 7}}
    assert [json.loads(line) for line in lines] == [{"n": i} if i % 2 else f"item\n{i}" for i in range(count)]
    assert body.count == count
    assert max(len(chunk) for chunk in chunks) < CHUNK_BYTES + 100, "no chunk holds much more than CHUNK_BYTES"


def test_an_item_that_is_not_json_is_refused_naming_its_index() -> None:
    body = SubmissionBody({}, [1, 2, {3}], batch_size=None)
    with pytest.raises(InvalidRequest, match=r"items\[2\]: not JSON"):
        list(body.chunks())
