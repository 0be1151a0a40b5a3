"""The layering is checked, not hoped for: services are independent; shared code never imports a service."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint_imports)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_generated_code_is_not_committed() -> None:
    tracked = subprocess.run(["git", "ls-files", "thresher/v1"], cwd=ROOT, capture_output=True, text=True).stdout
    assert [path for path in tracked.split() if "_pb2" in path] == []
