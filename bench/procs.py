"""What the bench reads from /proc: who is whose child, command lines, liveness and peak memory."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: [state, ppid, ...]; [] if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return stat[stat.rfind(")") + 2 :].split()


def alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] != "Z"


def all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def children_of(parent: int) -> list[int]:
    return [pid for pid in all_pids() if (f := _stat_fields(pid)) and f[0] != "Z" and int(f[1]) == parent]


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains `text` (never this process)."""
    return [pid for pid in all_pids() if pid != os.getpid() and text in cmdline(pid) and alive(pid)]


def processes_of(root: str) -> list[int]:
    """Live processes whose command line or environment mentions `root` (a data dir): the stack, its services
    (THRESHER_DATA_DIR), dequeuers and workers ($THRESHER_JOB_SPEC)."""
    found = []
    for pid in all_pids():
        if pid == os.getpid() or not alive(pid):
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        except OSError:
            environ = ""
        if root in cmdline(pid) or root in environ:
            found.append(pid)
    return found


def cpu_seconds(pid: int) -> float | None:
    """CPU time the process has used (user + system), None if there is no such process."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else None


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM: the most resident memory the process has used (since start or the last reset_peak_rss)."""
    return _status_mib(pid, "VmHWM:")


def rss_mib(pid: int) -> float | None:
    """VmRSS: the resident memory the process uses now."""
    return _status_mib(pid, "VmRSS:")


def _status_mib(pid: int, field: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak_rss(pid: int) -> bool:
    """Start VmHWM again from the current RSS (Linux ≥ 4.0: write 5 to clear_refs); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
