"""Old code against new in paired jobs: `python -m bench.paired OLD [--pairs 6] [--items 50000]`.

On a shared machine the CPU per batch of scenario 1 moves by about 10 % from one job to the next, which is more
than most changes. This tool runs two stacks at once. One runs the code of commit OLD (copied out with
`git archive`, its protobuf code generated, its bytecode compiled as `make install` does). The other runs this
working tree. No-op jobs alternate between them (old, new, then new, old, ...), so each pair of jobs meets the same
load. It prints each job's CPU per batch by process, read from /proc as bench/profiling.py's CpuMeter does, and
then, per process, the median over the pairs of new minus old.
"""

from __future__ import annotations

import argparse
import compileall
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import yaml

from bench import overhead
from bench.profiling import CpuMeter
from bench.stack import APIS_FILE, BenchStack

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="thresher-paired-"))
    # Away from this tree: `python -m` puts the current directory first on sys.path, ahead of PYTHONPATH, and the
    # old stack must import the old code.
    os.chdir(work)
    old = work / "old"
    stacks: dict[str, BenchStack] = {}
    try:
        export(args.old, old)
        old_apis = old / "bench" / "workers" / "apis-paired.yaml"  # beside the worker script it names
        with_env(old / "bench" / "workers" / "apis.yaml", old_apis, {"PYTHONPATH": str(old)})
        stacks["old"] = BenchStack(work / "old-stack", apis=old_apis, env={"PYTHONPATH": str(old)})
        stacks["new"] = BenchStack(work / "new-stack", apis=APIS_FILE)
        for stack in stacks.values():
            overhead.job_seconds(stack, 2_000)  # warm-up
        print(f"old: {args.old}, new: this working tree; {args.items // overhead.BATCH_SIZE:,} batches per job")
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in stacks}
        for pair in range(args.pairs):
            for name in ("old", "new") if pair % 2 == 0 else ("new", "old"):
                runs[name].append(cpu_ms_per_batch(stacks[name], args.items))
                print(f"  {name}  {_line(runs[name][-1])}  (load {os.getloadavg()[0]:.1f})", flush=True)
        report(runs)
    finally:
        for stack in stacks.values():
            stack.stop()
        os.chdir(ROOT)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def export(commit: str, dest: Path) -> None:
    """The tree of `commit` in `dest`, ready to run: its generated protobuf code, its bytecode."""
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", commit], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
        archive.extractall(dest, filter="data")
    protos = sorted(str(p.relative_to(dest)) for p in (dest / "proto").rglob("*.proto"))
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-Iproto", "--python_out=.", "--grpc_python_out=.", *protos],
        cwd=dest,
        check=True,
    )
    compileall.compile_dir(dest, quiet=1)  # as `make install`: no process compiles its imports at start


def with_env(apis: Path, out: Path, env: dict[str, str]) -> None:
    """`apis` with `env` added to every container (the worker must import the helper of the same code)."""
    definitions = yaml.safe_load(apis.read_text(encoding="utf-8"))
    for api in definitions:
        for container in api["pod"]["containers"]:
            container["env"] = {**container.get("env", {}), **env}
    out.write_text(yaml.safe_dump(definitions), encoding="utf-8")


def cpu_ms_per_batch(stack: BenchStack, items: int) -> dict[str, float]:
    """One no-op job: CPU ms per batch by process (services from the job's submit, workers and dequeuers whole)."""
    meter = CpuMeter(stack)
    try:
        overhead.job_seconds(stack, items, on_submit=meter.watch)
    finally:
        meter.stop()
    batches = items // overhead.BATCH_SIZE
    return {name: seconds * 1000 / batches for name, seconds in meter.cpu_s().items()}


def report(runs: dict[str, list[dict[str, float]]]) -> None:
    names = sorted({name for job in runs["old"] + runs["new"] for name in job})
    print("\nmedian CPU ms per batch, old → new; and the median over pairs of new minus old:")
    for name in [*names, "total"]:
        old, new = (_values(runs[side], name) for side in ("old", "new"))
        differences = [n - o for o, n in zip(old, new, strict=True)]
        lower = sum(d < 0 for d in differences)
        print(
            f"  {name:10s} {statistics.median(old):.3f} → {statistics.median(new):.3f}   "
            f"{statistics.median(differences):+.3f} ({lower} of {len(differences)} pairs lower)"
        )


def _values(jobs: list[dict[str, float]], name: str) -> list[float]:
    return [sum(job.values()) if name == "total" else job.get(name, 0.0) for job in jobs]


def _line(job: dict[str, float]) -> str:
    parts = " ".join(f"{name}={ms:.3f}" for name, ms in sorted(job.items(), key=lambda kv: -kv[1]))
    return f"{sum(job.values()):.3f} ms/batch: {parts}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.paired", description=__doc__.split("\n\n")[0])
    parser.add_argument("old", help="the commit to compare this working tree with (e.g. main, HEAD~3)")
    parser.add_argument("--pairs", type=int, default=6, help="pairs of jobs (default: 6)")
    parser.add_argument("--items", type=int, default=50_000, help="no-op items per job, 10 a batch (default: 50,000)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
