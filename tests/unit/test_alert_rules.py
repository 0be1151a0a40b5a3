"""The Prometheus alerting rules are valid and fire when they should (promtool's rule unit tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: `make test` installs it (Debian's prometheus package)")
        pytest.skip("promtool is not installed (`make test` installs it)")
    return path


@pytest.mark.parametrize(
    "command", [["check", "rules", "thresher-alerts.yml"], ["test", "rules", "thresher-alerts.test.yml"]]
)
def test_the_alerting_rules_pass_promtool(promtool: str, command: list[str]) -> None:
    result = subprocess.run([promtool, *command], cwd=RULES, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
