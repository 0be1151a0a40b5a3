"""A program served by the fork server, for its tests: `python -m tests.programs.fork_target <TITLE_ROOM>`.

Each child runs one command from its arguments: `exit N`, `sleep`, `env NAME`, `stdin`, `title`.
"""

from __future__ import annotations

import os
import sys
import time

from thresher.core.forkserver import run_server, set_command_line

if __name__ == "__main__":
    fork = run_server()
    if fork is None:
        sys.exit(0)
    set_command_line(["fork-target", *fork.args])
    command, *rest = fork.args
    if command == "exit":
        print(f"exiting with {rest[0]}")
        sys.exit(int(rest[0]))
    if command == "sleep":
        print("sleeping", flush=True)
        time.sleep(60)
    if command == "env":
        print(f"{rest[0]}={os.environ.get(rest[0], '')}")
    if command == "stdin":
        print(f"stdin: {sys.stdin.read()!r}")
