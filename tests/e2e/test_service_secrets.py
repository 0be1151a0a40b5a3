"""Each service of `thresher up` holds only the credentials it uses: the gateway none, the monitor the queue's, the
scheduler and the enqueuer the queue's and the inputs'."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import children_of, cmdline, stopped_after
from thresher.tools.launcher import StackProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SECRETS = {
    "THRESHER_QUEUE_SQS_SECRET_ACCESS_KEY": "queue-secret",
    "THRESHER_INPUTS_S3_SECRET_ACCESS_KEY": "inputs-secret",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
}
EXPECTED = {
    "gateway": set(),
    "monitor": {"queue-secret", "aws-secret"},
    "enqueuer": {"queue-secret", "inputs-secret", "aws-secret"},
    "scheduler": {"queue-secret", "inputs-secret", "aws-secret"},
}


def test_each_service_is_given_only_the_credentials_it_uses(tmp_path: Path) -> None:
    # Given `thresher up` started with every kind of credential in its environment
    with stopped_after(StackProcess(tmp_path / "data", env=SECRETS)) as stack:
        # When each service's environment is read
        held = {}
        for pid in children_of(stack.proc.pid):
            name = cmdline(pid).split("services.", 1)[-1].split()[0]
            environ = Path(f"/proc/{pid}/environ").read_bytes().decode()
            held[name] = {secret for secret in SECRETS.values() if secret in environ}

    # Then each holds only those it uses
    assert held == EXPECTED
