"""Small helpers shared by the tests."""

from __future__ import annotations

import asyncio
import inspect
import re
import subprocess
import time
from collections.abc import Callable
from typing import Any

from thresher.core import trust
from thresher.core.config import Config
from thresher.core.names import GRPC_TOKEN_KEY

# The tests' one way to wait for something: poll a check until it passes, then return what it returned. A check
# says "not yet" by raising AssertionError (its message then says what was awaited); any other error ends the wait.
# `assert_eventually` is for async tests, `eventually` the same loop for sync ones, `wait_until` for a condition.


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


def eventually(check: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.1) -> Any:
    """`assert_eventually` outside an event loop: blocks between tries."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
        time.sleep(interval_s)


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.1) -> Any:
    """`condition()`'s first truthy result, polled with `eventually`; `what` names it if the deadline passes."""

    def holds() -> Any:
        result = condition()
        assert result, f"{what}: not within {timeout_s} s"
        return result

    return eventually(holds, timeout_s, interval_s)


def stack_trust(config: Config) -> trust.Trust:
    """The stack secret of `config` (made as `thresher up` makes it, unless it exists), to serve and call with."""
    trust.ensure_secret(config)
    return trust.load(config)


# For tests whose servers start before their data dir is known: one stack secret, written where `thresher up` writes
# its own by `write_test_secret`.
TEST_SECRET = b"the-stack-secret-of-the-tests-" + b"0" * 34
TEST_TRUST = trust.Trust(TEST_SECRET)


def write_test_secret(config: Config) -> None:
    trust.secret_path(config).write_bytes(TEST_SECRET)


class Signed:
    """A generated stub whose calls carry `token` (or, for the methods named in `tokens`, another), as a service's
    rpc.Client's do; for tests that need the stub's own call objects (streams they read and cancel)."""

    def __init__(self, stub: Any, token: str, **tokens: str) -> None:
        self._stub = stub
        self._tokens = tokens
        self._token = token

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)
        metadata = ((GRPC_TOKEN_KEY, self._tokens.get(name, self._token)),)
        return lambda *args, **kw: method(*args, **kw, metadata=metadata)


def listening_port(proc: subprocess.Popen[bytes]) -> int:
    """The port a worker started with thresher.worker says it listens on (read from its stderr)."""
    assert proc.stderr is not None
    for line in proc.stderr:
        match = re.search(rb"worker listening on [\d.]+:(\d+)", line)
        if match:
            return int(match.group(1))
    raise AssertionError("the worker exited before listening")
