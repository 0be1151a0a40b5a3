"""The fork server (thresher/core/forkserver.py), with real processes: what its children get, and their exit codes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import alive, processes_of
from tests.helpers import eventually, wait_until
from thresher.core.config import Config
from thresher.core.forkserver import TITLE_ROOM, ForkServer
from thresher.tools.supervisor import Stack

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 10.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ForkServer]:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "MARK": f"fork-server-test-{tmp_path}"}
    server = ForkServer([sys.executable, "-m", "tests.programs.fork_target", TITLE_ROOM], env)
    yield server
    server.close()
    for pid in processes_of(tmp_path):  # the children share the server's environment, which names tmp_path
        _kill(pid)


def wait_for_exit(server: ForkServer, pid: int) -> int:
    def exit_code() -> int:
        code = server.exit_code(pid, gone=not alive(pid))
        assert code is not None, f"process {pid} did not end"
        return code

    return eventually(exit_code, TIMEOUT_S, interval_s=0.01)


def wait_for_text(path: Path, text: str) -> str:
    def with_text() -> str:
        content = path.read_text() if path.exists() else ""
        assert text in content, f"{text!r} not in {path}: {content!r}"
        return content

    return eventually(with_text, TIMEOUT_S, interval_s=0.01)


def test_exit_codes_come_back_as_subprocess_gives_them(server: ForkServer, tmp_path: Path) -> None:
    ok = server.spawn(["exit", "0"], tmp_path / "ok.log", 0)
    failed = server.spawn(["exit", "75"], tmp_path / "failed.log", 0)
    killed = server.spawn(["sleep"], tmp_path / "killed.log", 0)
    wait_for_text(tmp_path / "killed.log", "sleeping")
    assert server.exit_code(killed, gone=False) is None  # running

    os.kill(killed, signal.SIGKILL)

    assert wait_for_exit(server, ok) == 0
    assert wait_for_exit(server, failed) == 75
    assert wait_for_exit(server, killed) == -signal.SIGKILL
    assert "exiting with 75" in (tmp_path / "failed.log").read_text()


def test_a_child_gets_the_servers_environment_its_log_no_stdin_and_its_own_command_line(
    server: ForkServer, tmp_path: Path
) -> None:
    log = tmp_path / "child.log"
    log.write_text("an earlier line\n")
    env = server.spawn(["env", "MARK"], log, 0)
    stdin = server.spawn(["stdin"], tmp_path / "stdin.log", 0)
    sleeper = server.spawn(["sleep", "--job-id", "j1"], tmp_path / "sleeper.log", 0)
    wait_for_text(tmp_path / "sleeper.log", "sleeping")

    assert wait_for_exit(server, env) == 0
    assert log.read_text() == f"an earlier line\nMARK=fork-server-test-{tmp_path}\n"  # appended to
    assert wait_for_exit(server, stdin) == 0
    assert (tmp_path / "stdin.log").read_text() == "stdin: ''\n"
    # What ps shows, and what the tests find a dequeuer by
    assert Path(f"/proc/{sleeper}/cmdline").read_bytes().split(b"\0")[0] == b"fork-target sleep --job-id j1"
    assert server.server_pid is not None
    assert (
        Path(f"/proc/{server.server_pid}/cmdline")
        .read_bytes()
        .split(b"\0")[0]
        .endswith(b"-m tests.programs.fork_target")
    )


def test_a_child_joins_the_process_group_it_is_given(server: ForkServer, tmp_path: Path) -> None:
    leader = subprocess.Popen(["sleep", "60"], process_group=0)
    try:
        alone = server.spawn(["sleep"], tmp_path / "alone.log", 0)
        member = server.spawn(["sleep"], tmp_path / "member.log", leader.pid)

        assert os.getpgid(alone) == alone
        assert os.getpgid(member) == leader.pid
        os.killpg(leader.pid, signal.SIGTERM)  # as the local runtime stops a worker: the whole group
        assert wait_for_exit(server, member) == -signal.SIGTERM
        assert alive(alone)
    finally:
        leader.kill()
        leader.wait()


def test_a_group_that_is_gone_fails_the_child_with_the_reason_in_its_log(server: ForkServer, tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"], process_group=0)
    gone.wait()

    pid = server.spawn(["sleep"], tmp_path / "child.log", gone.pid)

    assert wait_for_exit(server, pid) == 1
    assert "cannot start" in (tmp_path / "child.log").read_text()


def test_a_child_that_ends_before_its_pid_is_read_keeps_its_exit_code(tmp_path: Path) -> None:
    # A server that answers as a loaded machine may have it arrive: the pid and the child's end in one read
    both = '{"pid": 4242}\\n{"exited": 4242, "code": 1}\\n'
    server_program = f"import socket; s = socket.socket(fileno=0); s.recv(65536); s.sendall(b'{both}'); s.recv(1)"
    server = ForkServer([sys.executable, "-c", server_program], {"PATH": os.environ["PATH"]})
    try:
        pid = server.spawn(["exit", "1"], tmp_path / "child.log", 0)

        assert pid == 4242
        assert server.exit_code(pid, gone=True) == 1
    finally:
        server.close()


def test_a_server_that_died_is_replaced_and_its_children_go_on(server: ForkServer, tmp_path: Path) -> None:
    orphan = server.spawn(["sleep"], tmp_path / "orphan.log", 0)
    first = server.server_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: not alive(first), TIMEOUT_S, f"the server {first} to die", interval_s=0.01)

    child = server.spawn(["exit", "3"], tmp_path / "child.log", 0)

    assert server.server_pid not in (None, first)
    assert wait_for_exit(server, child) == 3
    assert alive(orphan)
    assert server.exit_code(orphan, gone=False) is None  # its exit code is lost with the server: unknown


def test_closing_the_server_leaves_its_children_running(server: ForkServer, tmp_path: Path) -> None:
    child = server.spawn(["sleep"], tmp_path / "child.log", 0)
    first = server.server_pid

    server.close()

    assert first is not None and not alive(first)
    assert alive(child)


async def test_a_stack_that_stops_leaves_no_fork_server_behind(tmp_path: Path) -> None:
    # Given the embedded stack's configuration (local runtime: stopping the stack stops leftover workers through one)
    stack = Stack(Config(data_dir=tmp_path / "data"))
    try:
        # When the stack stops
        await stack.stop()

        # Then no process of it is left, not even a fork server still importing the dequeuer
        assert processes_of(tmp_path) == []
    finally:
        for pid in processes_of(tmp_path):
            _kill(pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
