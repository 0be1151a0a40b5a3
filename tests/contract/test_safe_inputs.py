"""Hostile inputs through the API: file sources stay inside inputs.local_roots, S3 paths are checked before any call,
and a job's config reaches its workers as data. The real gateway and scheduler on loopback."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.contract.test_auth import Stack, running_stack
from tests.helpers import assert_eventually
from thresher.core.config import Config

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    for folder, name in ((allowed / "in", "a.json"), (secret, "key.json")):
        folder.mkdir(parents=True)
        (folder / name).write_text("1\n")
    (allowed / "in" / "link.json").symlink_to(secret / "key.json")
    (allowed / "in" / "linked-dir").symlink_to(secret)
    (allowed / "up").symlink_to(tmp_path)

    def roots(config: Config) -> None:
        config.inputs.local_roots = str(allowed)

    async with running_stack(tmp_path, roots) as stack:
        yield stack


def lister(*paths: str) -> dict[str, Any]:
    return {"workers": 1, "delimited_files": {"s3_paths": list(paths), "batch_size": 1}}


async def test_local_paths_cannot_escape_the_input_roots(stack: Stack, tmp_path: Path) -> None:
    allowed, secret = tmp_path / "allowed", tmp_path / "secret"
    escapes = [
        f"{allowed}/../secret/",  # ..
        f"file://{allowed}/in/../../secret/key.json",  # .. in a file:// URL
        f"{allowed}/in/linked-dir/",  # a symlinked folder
        f"{allowed}/in/link.json",  # a symlinked file
        f"{allowed}/up/secret/",  # a symlink to a folder above the root
        str(secret),
        f"{allowed}/in/",  # fine, but the next one is not: every path is checked, not only the first
    ]
    for i, path in enumerate(escapes):
        paths = [path, str(secret)] if i == len(escapes) - 1 else [path]
        status, error = await stack.call("admin", "POST", "/batch/sum", lister(*paths))
        assert (status, error["kind"]) == (400, "invalid"), (path, error)
        assert "outside the directories that inputs may read" in error["message"], (path, error)
        status, text = await stack.call("admin", "POST", "/batch/sum?dryRun=true", lister(*paths))
        assert status == 400 and "outside the directories that inputs may read" in text, (path, text)

    # Listing from above the root shows only what lies inside it: the symlinks to the secret are skipped
    status, listed = await stack.call("admin", "POST", "/batch/sum?dryRun=true", lister(f"{tmp_path}/"))
    assert (status, listed) == (200, f"{allowed}/in/a.json\nvalidations passed")
    assert (await stack.call("admin", "GET", "/v1/jobs"))[1] == {"jobs": []}, "nothing was created"


@pytest.mark.parametrize(
    ("path", "kind", "message"),
    [
        ("s3://bad bucket/in/", "aws.invalid_s3_path", "'bad bucket' is not an S3 bucket name"),
        ("s3:///in/", "aws.invalid_s3_path", "with a bucket"),
        ("relative/in/", "invalid", "must be absolute"),
        ("http://example.com/in/", "aws.invalid_s3_path", "expected s3://bucket[/key]"),
    ],
)
async def test_malformed_paths_are_refused_before_any_store_is_called(
    stack: Stack, path: str, kind: str, message: str
) -> None:
    status, error = await stack.call("admin", "POST", "/batch/sum", lister(path))
    assert (status, error["kind"]) == (400, kind) and message in error["message"], error


async def test_a_jobs_config_reaches_its_workers_as_data_byte_for_byte(stack: Stack) -> None:
    config = {"cmd": "$(touch /tmp/x)", "template": "{{ 7 * 7 }}", "__class__": {"__init__": "os.system"}, "n": 1e3}
    status, job = await stack.call("alice", "POST", "/batch/sum", {"workers": 1, "item_list": {"items": [1],
                                   "batch_size": 1}, "config": config})  # fmt: skip
    assert status == 200, job
    spec = Path(stack.harness.config.data_dir) / "jobs" / job["job_id"] / "job.json"

    def written() -> dict[str, Any]:
        assert spec.exists()
        return dict(json.loads(spec.read_text()))

    assert (await assert_eventually(written))["config"] == config
