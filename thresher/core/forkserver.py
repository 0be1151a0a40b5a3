"""A fork server: one process imports a program once, then starts each instance of it by forking itself.

A fresh dequeuer spends about 0.17 s of CPU importing asyncio, grpc and protobuf before it does anything; a fork of
a process that has them costs a few milliseconds. On a small machine that decides how soon, and how evenly, the
workers of a job start. The local runtime starts every dequeuer this way (services/dequeuer/forkserver.py).

The server holds no threads and no connections when it forks: it only imports. Its children are its own, so it
reaps them and reports their exit codes (as `subprocess` gives them: negative for a signal) to its client.
Linux only (pidfd_open, /proc), like the local runtime.

Protocol, one JSON object per line over the server's stdin (one end of a Unix socket pair):
    client → server  {"args": [...], "log": "path", "pgid": N, "env": {...}}  (env: added to the server's)
    server → client  {"pid": N} or {"error": "why"}; later, at any time, {"exited": N, "code": C}
The server ends when its client closes the socket; the processes it started go on.
"""

from __future__ import annotations

import collections
import json
import os
import selectors
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The last argument of the server's command line: each child writes its own command line over that memory
# (set_command_line), so `ps` and /proc/<pid>/cmdline show what it is, not "the fork server".
TITLE_ROOM = " " * 4096
SPAWN_TIMEOUT_S = 30.0  # the first spawn may wait for the server's imports; a fork takes milliseconds
EXIT_REPORT_WAIT_S = 1.0  # a child gone from /proc: its exit code is on its way (reaped, then written)


@dataclass
class Fork:
    """What a forked child is to run: the program's arguments (stdout, stderr, stdin and group already set)."""

    args: list[str]


def run_server() -> Fork | None:
    """The server's main, serving on stdin: returns in each child (with its request), and None once the client is
    gone (the server then exits)."""
    argv = sys.orig_argv
    set_command_line(argv[: argv.index(TITLE_ROOM)] if TITLE_ROOM in argv else argv)
    # A copy of fd 0: each child puts /dev/null on fd 0 and closes its copy of the channel.
    return _serve(socket.socket(fileno=os.dup(0)))


def _serve(channel: socket.socket) -> Fork | None:
    selector = selectors.DefaultSelector()
    selector.register(channel, selectors.EVENT_READ)
    children: dict[int, int] = {}  # pidfd -> pid
    buffer = b""
    try:
        while True:
            for key, _ in selector.select():
                if key.fileobj is not channel:
                    pid = children.pop(key.fd)
                    selector.unregister(key.fd)
                    os.close(key.fd)
                    _, status = os.waitpid(pid, 0)
                    _send(channel, {"exited": pid, "code": os.waitstatus_to_exitcode(status)})
                    continue
                data = channel.recv(65536)
                if not data:
                    return None
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    request = json.loads(line)
                    pid = _fork(channel, request)
                    if pid == 0:  # the child leaves the server's loop and runs the program
                        for pidfd in children:
                            os.close(pidfd)
                        return Fork(list(request["args"]))
                    if pid > 0:
                        pidfd = os.pidfd_open(pid)
                        children[pidfd] = pid
                        selector.register(pidfd, selectors.EVENT_READ)
    except BrokenPipeError:  # the client is gone
        return None
    finally:
        selector.close()
        channel.close()


def _fork(channel: socket.socket, request: dict[str, Any]) -> int:
    """The child's pid in the server (-1 if the fork failed: answered), 0 in the child."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError as e:
        _send(channel, {"error": f"fork failed: {e}"})
        return -1
    if pid == 0:
        _become(request)
        return 0
    try:
        os.setpgid(pid, request["pgid"] or pid)  # here too: a kill of the group right after the answer reaches it
    except OSError:
        pass  # the child did it first, or failed to and exits with the reason in its log
    _send(channel, {"pid": pid})
    return pid


def _become(request: dict[str, Any]) -> None:
    """In the child: its own variables, the log as stdout and stderr, nothing on stdin, the requested process group."""
    os.environ.update(request.get("env") or {})
    try:
        log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.setpgid(0, request["pgid"])  # 0: a group of its own
    except OSError as e:
        print(f"cannot start: {e}", file=sys.stderr, flush=True)
        os._exit(1)


def _send(channel: socket.socket, message: dict[str, Any]) -> None:
    channel.sendall(json.dumps(message).encode() + b"\n")


def set_command_line(argv: list[str]) -> None:
    """Show `argv` as this process's command line (ps, /proc/<pid>/cmdline), in the room its own arguments take.

    As setproctitle does: the new line, a NUL, and a non-NUL last byte, so the kernel reads up to the first NUL.
    Best effort: where /proc/self/mem cannot be written, the command line stays as it was.
    """
    try:
        stat = Path("/proc/self/stat").read_text()
        fields = stat[stat.rfind(")") + 2 :].split()
        start, end = int(fields[45]), int(fields[46])  # arg_start and arg_end: stat fields 48 and 49
        room = end - start
        title = " ".join(argv).encode()[: room - 2]
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            mem.write(title + b"\0" * (room - len(title) - 1) + b" ")
    except (OSError, ValueError, IndexError):
        pass


class ForkServer:
    """The client side: starts the server (`argv`, ending with TITLE_ROOM) at once, then asks it for processes."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self._argv = argv
        self._env = env
        self._server: subprocess.Popen[bytes] | None = None
        self._channel: socket.socket | None = None
        self._buffer = b""
        self._answers: collections.deque[dict[str, Any]] = collections.deque()
        self._children: set[int] = set()  # started by the running server, not known to have ended
        self._exit_codes: dict[int, int] = {}
        self._start()

    def _start(self) -> None:
        self.close()
        ours, theirs = socket.socketpair()
        with theirs:
            # A group of its own: a Ctrl-C meant for `thresher up` reaches the scheduler, which closes the channel.
            self._server = subprocess.Popen(self._argv, env=self._env, stdin=theirs.fileno(), process_group=0)
        self._channel = ours

    @property
    def server_pid(self) -> int | None:
        return self._server.pid if self._server is not None else None

    def spawn(self, args: list[str], log_path: Path, pgid: int, env: dict[str, str] | None = None) -> int:
        """Start the program with `args` and the server's environment plus `env`, output appended to `log_path`, in
        process group `pgid` (0: a new one). Unlike `args`, `env` never shows on the child's command line."""
        if self._server is None or self._server.poll() is not None:
            self._start()
        assert self._channel is not None
        log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            _send(self._channel, {"args": args, "log": str(log_path), "pgid": pgid, "env": env or {}})
            deadline = time.monotonic() + SPAWN_TIMEOUT_S
            while not self._answers:
                if self._channel is None:
                    raise OSError("the fork server ended")
                if time.monotonic() > deadline:
                    raise OSError(f"the fork server did not answer within {SPAWN_TIMEOUT_S:g} s")
                self._receive(deadline - time.monotonic())
        except OSError:
            self.close()  # a server that failed once is not trusted again: the next spawn starts a new one
            raise
        answer = self._answers.popleft()
        if "error" in answer:
            raise OSError(answer["error"])
        return int(answer["pid"])

    def exit_code(self, pid: int, gone: bool) -> int | None:
        """A child's exit code, None while unknown. `gone`: it has left /proc, so its code is due: wait for it."""
        self._receive(0.0)
        deadline = time.monotonic() + EXIT_REPORT_WAIT_S
        while gone and pid in self._children and self._channel is not None and time.monotonic() < deadline:
            self._receive(deadline - time.monotonic())
        return self._exit_codes.get(pid)

    def _receive(self, timeout_s: float) -> None:
        """Take what the server wrote within `timeout_s` (0: only what is there): exit codes, answers."""
        if self._channel is None:
            return
        self._channel.settimeout(max(timeout_s, 0.0))
        try:
            data = self._channel.recv(65536)
        except (BlockingIOError, TimeoutError):
            return
        except OSError:
            data = b""
        if not data:  # the server ended: the exit codes of its children are lost
            self.close()
            return
        self._buffer += data
        while b"\n" in self._buffer:
            line, self._buffer = self._buffer.split(b"\n", 1)
            message = json.loads(line)
            # In the order written: a child that ends at once has its exit code in the same read as its pid.
            if "exited" in message:
                self._children.discard(message["exited"])
                self._exit_codes[message["exited"]] = message["code"]
                continue
            if "pid" in message:
                self._exit_codes.pop(message["pid"], None)  # a reused pid's old code
                self._children.add(message["pid"])
            self._answers.append(message)

    def close(self) -> None:
        """Stop the server, at once; the processes it started go on.

        Killed, not left to see its channel close: it holds nothing but its children's exit codes, which nobody will
        ask for now, and a server still importing would see the close only once done, outliving its client.
        """
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._server is not None:
            self._server.kill()
            self._server.wait()
            self._server = None
        self._buffer = b""
        self._answers.clear()
        self._children.clear()
