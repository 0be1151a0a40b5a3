"""Run `thresher up` as a child process and wait until it answers: for the demo, tests and scripts."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from thresher.core.auth import read_api_key

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0
_READY = re.compile(r"Thresher is up: (\S+)")


class StackProcess:
    """`thresher up` in `data_dir`; `url` is the gateway's once it is up, `api_key` the key it made (admin).

    Its output is kept in `output`."""

    def __init__(
        self,
        data_dir: Path,
        port: int = 0,
        apis: Path | None = None,
        echo: bool = False,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`args`: more `thresher up` options (e.g. --queue-backend sqs); `env`: variables added to this process's."""
        self.data_dir = Path(data_dir)
        self.output: list[str] = []
        self.url = ""
        self._echo = echo
        argv = [sys.executable, "-m", "thresher.tools.cli", "up", "--data-dir", str(data_dir), "--port", str(port)]
        if apis:
            argv += ["--apis", str(apis)]
        argv += args
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})}
        )
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        if not self._ready.wait(START_TIMEOUT_S) or not self.url:
            self.stop()
            raise RuntimeError("thresher up did not start:\n" + "".join(self.output))
        self.api_key = read_api_key(self.data_dir)  # None when the settings name a keys file of their own

    def _read_output(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if self._echo:
                print(f"  | {line}", end="", flush=True)
            if match := _READY.search(line):
                self.url = match.group(1)
                self._ready.set()
        self.proc.stdout.close()
        self._ready.set()  # it ended: no need to wait any longer

    def stop(self) -> int:
        """SIGTERM, as Ctrl-C would; the stack stops its services and their workers. Returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        code = self.proc.wait()
        self._reader.join(timeout=5)
        return code
