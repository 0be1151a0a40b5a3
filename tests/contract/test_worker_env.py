"""Workers get only what they need: the local runtime hands neither API keys nor the control plane's credentials to
a worker or its dequeuer. The real scheduler starts real worker processes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.contract.test_auth import running_stack
from tests.helpers import assert_eventually
from thresher.core.names import ENV_JOB_SPEC, ENV_PORT

pytestmark = pytest.mark.timeout(60)

# The control plane's secrets, as the scheduler's own environment holds them.
SECRETS = {
    "AWS_ACCESS_KEY_ID": "control-plane-key-id",
    "AWS_SECRET_ACCESS_KEY": "control-plane-secret",
    "THRESHER_API_KEY": "thr_the-operators-key",
    "GITHUB_TOKEN": "a-token",
}
DUMP_ENV = "import json, os, sys, time; json.dump(dict(os.environ), open(sys.argv[1], 'w')); time.sleep(60)"


async def test_a_worker_and_its_dequeuer_get_a_minimal_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    dump = tmp_path / "worker-env.json"
    api = {"name": "env", "pod": {"containers": [{"name": "api", "command": [sys.executable, "-c", DUMP_ENV],
                                                  "args": [str(dump)], "env": {"MODEL": "v2"}}]}}  # fmt: skip

    async with running_stack(tmp_path) as stack:
        assert (await stack.call("admin", "POST", "/v1/apis", {"apis": [api], "working_dir": str(tmp_path)}))[0] == 200
        submission = {"workers": 1, "item_list": {"items": [1], "batch_size": 1}}
        status, job = await stack.call("alice", "POST", "/batch/env", submission)
        assert status == 200, job

        def dumped() -> dict[str, str]:
            assert dump.exists() and dump.stat().st_size > 0
            return dict(json.loads(dump.read_text()))

        worker_env = await assert_eventually(dumped)
        pods = json.loads((Path(stack.harness.config.data_dir) / "jobs" / job["job_id"] / "workers.json").read_text())
        [dequeuer_pid] = [p["pid"] for p in pods[0]["processes"] if p["name"] == "dequeuer"]
        raw = Path(f"/proc/{dequeuer_pid}/environ").read_bytes()
        dequeuer_env = dict(entry.split("=", 1) for entry in raw.decode().split("\0") if entry)

    assert {"MODEL", ENV_PORT, ENV_JOB_SPEC, "PATH"} <= worker_env.keys()
    assert not [k for k in worker_env if k.startswith(("AWS_", "THRESHER_")) and k != ENV_JOB_SPEC]
    assert not [v for v in [*worker_env.values(), *dequeuer_env.values()] if v in SECRETS.values()]
    assert "THRESHER_QUEUE_BACKEND" in dequeuer_env and "THRESHER_ADDRESSES_MONITOR" in dequeuer_env
    assert not [k for k in dequeuer_env if k.startswith(("THRESHER_AUTH_", "THRESHER_INPUTS_", "AWS_", "GITHUB_"))]
