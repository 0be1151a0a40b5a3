"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import inspect
import re
import subprocess
import time
from collections.abc import Callable
from typing import Any


async def assert_eventually(check: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.05) -> Any:
    """Call `check` (sync or async) until it stops raising AssertionError; re-raise the last one at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
            if inspect.isawaitable(result):
                result = await result
            return result
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        await asyncio.sleep(interval_s)


def listening_port(proc: subprocess.Popen[bytes]) -> int:
    """The port a worker started with thresher.worker says it listens on (read from its stderr)."""
    assert proc.stderr is not None
    for line in proc.stderr:
        match = re.search(rb"worker listening on [\d.]+:(\d+)", line)
        if match:
            return int(match.group(1))
    raise AssertionError("the worker exited before listening")
