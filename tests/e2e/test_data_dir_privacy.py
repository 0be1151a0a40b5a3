"""The embedded stack's data dir is its user's alone, whatever the umask `thresher up` starts with: the job store,
logs, job specs and keys are readable by no one else, and the keys file cannot be replaced by another user."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.e2e.conftest import WORKERS_DIR, Stack, stopped_after
from thresher.core.auth import API_KEY_FILE, KEYS_FILE

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask 022", "umask 000"])
def test_the_data_dir_is_0700_and_what_is_in_it_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    # Given `thresher up` started under a umask that would let other users read (022) or write (000) its files
    data_dir = tmp_path / "data"
    previous = os.umask(umask)
    try:
        stack = Stack(data_dir, WORKERS_DIR / "apis.yaml")
    finally:
        os.umask(previous)
    with stopped_after(stack):
        # When a job has run: the job store, the services' logs, the job's spec and its worker's log exist
        submission = {"workers": 1, "item_list": {"items": [1, 2], "batch_size": 1}}
        job = stack.client.submit("recorder", submission | {"config": {"out_dir": str(tmp_path / "out")}})
        assert stack.wait_for_final("recorder", job["job_id"])["job_status"]["status"] == "succeeded"
        entries = {path.relative_to(data_dir): path.lstat().st_mode for path in data_dir.rglob("*")}

    # Then the data dir is 0700, and nothing in it grants anything to its group or to others
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert {Path(API_KEY_FILE), Path(KEYS_FILE), Path("logs/scheduler.log")} <= set(entries)
    assert any(path.parts[0] == "jobs" and path.name.endswith(".log") for path in entries), sorted(entries)
    open_to_others = {str(path): oct(stat.S_IMODE(mode)) for path, mode in entries.items() if mode & 0o077}
    assert open_to_others == {}
