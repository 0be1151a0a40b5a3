"""Where scenario 1's time goes: py-spy samples every process of the stack during one more no-op job.

py-spy (not a Thresher dependency: `.venv/bin/pip install py-spy`) attaches to `thresher up` with
--subprocesses, so it follows the services, the dequeuers and the workers. Samples of threads that only wait
(an event loop's select, an idle thread pool) are set apart: py-spy cannot always tell them from work. The rest
is grouped by process and by the innermost Thresher function on the stack ("which call"), with the library
function below it that most of those samples were in ("what it spends on").
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from bench import overhead
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
        return "py-spy is not installed (`.venv/bin/pip install py-spy`); no profile"
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
    try:
        seconds = overhead.job_seconds(stack, items)
    finally:
        recorder.send_signal(signal.SIGINT)
        _, errors = recorder.communicate(timeout=120)
    if not output.exists():
        return f"py-spy wrote no profile: {errors.strip()[-300:]}"
    profile = Profile(batches=items // overhead.BATCH_SIZE, seconds=seconds)
    read_samples(output, profile)
    return profile


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
    if "thresher.cli up" in frame:
        return "thresher up"
    return frame[:40]
