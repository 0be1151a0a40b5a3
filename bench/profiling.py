"""Where scenario 1's time goes: py-spy samples every process of the stack during one more no-op job.

py-spy (a dev dependency, pinned in pyproject.toml) attaches to `thresher up` with --subprocesses, so it follows
the services, the dequeuers and the workers. Samples of threads that only wait (an event loop's select, an idle
thread pool) are set apart: py-spy cannot always tell them from work. The rest is grouped by process and by the
innermost Thresher function on the stack ("which call"), with the library function below it that most of those
samples were in ("what it spends on"). Beside the samples, the CPU time /proc counts for each process.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench import overhead, procs
from bench.stack import BenchStack

RATE_HZ = 100
TOP = 15
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")
_OWN_CODE = ("services/", "thresher/", "bench_worker.py")
_IMPORTING = "<frozen importlib"
# Leaf functions of a thread that is waiting rather than working.
_WAITING = {
    "EpollSelector.select",
    "_PollLikeSelector.select",
    "Condition.wait",
    "Event.wait",
    "_worker",
    "Thread.run",
    "SocketIO.readinto",
    "_wait_for_tstate_lock",
    "BaseSelectorEventLoop._write_to_self",
}


@dataclass(frozen=True)
class Hotspot:
    process: str
    function: str  # the innermost Thresher function, "file function"
    samples: int
    below: str  # the leaf function most of its samples were in


@dataclass
class Profile:
    batches: int
    seconds: float  # the job's wall time while profiled (py-spy slows it somewhat)
    total: int = 0
    waiting: int = 0
    by_process: Counter[str] = field(default_factory=Counter)  # working samples only
    hotspots: list[Hotspot] = field(default_factory=list)
    cpu_s: Counter[str] = field(default_factory=Counter)  # CPU seconds by process during the job, from /proc

    def ms_per_batch(self, samples: int) -> float:
        """Active time per batch that `samples` stand for (one sample = 1/RATE_HZ s of one thread)."""
        return samples / RATE_HZ * 1000 / self.batches


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def profile_overhead(stack: BenchStack, work_dir: Path, items: int) -> Profile | str:
    """The profile of one no-op job, or why there is none."""
    spy = py_spy()
    if spy is None:
        return "py-spy is not installed (it is a dev dependency: `make install`); no profile"
    output = work_dir / "profile.txt"
    argv = [
        spy,
        "record",
        "--pid",
        str(stack.process.proc.pid),
        "--subprocesses",
        "--nonblocking",
        "--rate",
        str(RATE_HZ),
        "--format",
        "raw",
        "--output",
        str(output),
    ]
    recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    meter = CpuMeter(stack)
    try:
        seconds, _ = overhead.job_seconds(stack, items, on_submit=meter.watch)
    finally:
        meter.stop()
        recorder.send_signal(signal.SIGINT)
        _, errors = recorder.communicate(timeout=120)
    if not output.exists():
        return f"py-spy wrote no profile: {errors.strip()[-300:]}"
    profile = Profile(batches=items // overhead.BATCH_SIZE, seconds=seconds, cpu_s=meter.cpu_s())
    read_samples(output, profile)
    return profile


class CpuMeter:
    """CPU time of the stack's services and of one job's worker and dequeuer processes, read from /proc.

    Workers and dequeuers end with the job, so their counters are read every SAMPLE_S while they run (the last reading
    is at most that much short). Services count from when the meter starts.
    """

    SAMPLE_S = 0.05

    def __init__(self, stack: BenchStack) -> None:
        self._stack = stack
        self._services = {pid: name for name, pid in stack.service_pids().items()}
        self._first = {pid: procs.cpu_seconds(pid) or 0.0 for pid in self._services}
        self._last: dict[int, tuple[str, float]] = {}
        self._job_id = ""
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def watch(self, job_id: str) -> None:
        self._job_id = job_id

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def cpu_s(self) -> Counter[str]:
        totals: Counter[str] = Counter()
        for pid, (name, seconds) in self._last.items():
            # A Counter adds seconds as well as counts; typeshed types its values as int.
            totals[name] += seconds - self._first.get(pid, 0.0)  # type: ignore[assignment]
        return totals

    def _sample(self) -> None:
        while True:
            pods = self._stack.pod_pids(self._job_id) if self._job_id else []
            for pid in [*self._services, *pods]:
                seconds = procs.cpu_seconds(pid)
                if seconds is not None:
                    name = self._last[pid][0] if pid in self._last else self._name(pid)
                    self._last[pid] = (name, seconds)
            if self._done.wait(self.SAMPLE_S):
                return

    def _name(self, pid: int) -> str:
        if pid in self._services:
            return self._services[pid]
        return "dequeuer" if "services.dequeuer" in procs.cmdline(pid) else "worker"


def read_samples(path: Path, profile: Profile) -> None:
    """Add the samples of a py-spy raw (collapsed stacks) file to `profile`."""
    by_spot: Counter[tuple[str, str]] = Counter()
    below: defaultdict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        frames = stack.split(";")
        processes = [f for f in frames if f.startswith("process ")]
        code = [_parse(f) for f in frames if not f.startswith("process ")]
        profile.total += samples
        if not code or code[-1][0] in _WAITING:
            profile.waiting += samples
            continue
        process = _process_name(processes[-1] if processes else "")
        profile.by_process[process] += samples
        spot = (process, _spot(code))
        by_spot[spot] += samples
        function, file, line_number = code[-1]
        below[spot][f"{file}:{line_number} {function}"] += samples
    profile.hotspots = [
        Hotspot(process, function, samples, below[(process, function)].most_common(1)[0][0])
        for (process, function), samples in by_spot.most_common(TOP)
    ]


def _spot(code: list[tuple[str, str, str]]) -> str:
    """The innermost Thresher function of a stack; imports and bare event-loop callbacks get a name of their own."""
    if any(file.startswith(_IMPORTING) for _, file, _ in code):
        return "(start-up: importing modules)"
    own = [
        f"{file} {function}"
        for function, file, _ in code
        if file.startswith(_OWN_CODE) and function not in ("main", "<module>")
    ]
    return own[-1] if own else "(event loop callbacks, no Thresher frame)"


def _parse(frame: str) -> tuple[str, str, str]:
    """(function, file, line) of a py-spy frame `function (file:line)`."""
    match = _FRAME.match(frame)
    return (match["function"], match["file"], match["line"]) if match else (frame, "", "")


def _process_name(frame: str) -> str:
    if match := re.search(r"services\.(\w+)", frame):
        return match.group(1)
    if "bench_worker.py" in frame:
        return "worker"
    if "thresher.tools.cli up" in frame:
        return "thresher up"
    return frame[:40]
