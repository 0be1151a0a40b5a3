"""Workers that follow the work: an elastic job's (`min_workers` / `max_workers`) worker count, decided at every look
of the supervision (supervision.py).

Up: while the job's backlog (the batches waiting in its queue, times the monitor's seconds per batch, over the workers
asked for) would take longer than `scaling.target_drain_s` to drain, enough workers for it to drain in that time, up to
`max_workers` and what `limits.max_workers_in_progress` leaves beside the other jobs. Down: never by stopping a worker;
a worker that finds nothing to receive for `scaling.idle_s` exits (its dequeuer's EXIT_IDLE) and the count asked for
drops by one, so it is not replaced. `min_workers` is where the job starts and the fewest it has while batches wait:
idle workers leave below it (so a job whose queue is empty pays for no worker), and once a batch waits again (the
enqueuer's next ones, a released batch, the completion hook's message) the job is back to `min_workers`.

The count asked for is the job's `workers` in the store (what admission adds up), so a restarted scheduler goes on from
it. The idle exits already taken off it are only in memory: after a restart those seen before are taken as counted,
so an exit missed in between at worst starts one worker too many, which idles out in its turn.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from services.scheduler.jobs import JobRecord
from services.scheduler.lookups import Lookups
from services.scheduler.store import JobStore
from thresher.core.config import Config
from thresher.core.names import METRIC_PREFIX
from thresher.core.runtime import WorkerState
from thresher.v1 import jobs_pb2, monitor_pb2

log = logging.getLogger(__name__)

SCALE_UP, HOLD, SCALE_DOWN = "scale_up", "hold", "scale_down"

_JOB = ["api_name", "job_id"]
DESIRED = Gauge(f"{METRIC_PREFIX}scaling_desired_workers", "An elastic job's workers asked for.", _JOB)
CURRENT = Gauge(f"{METRIC_PREFIX}scaling_current_workers", "An elastic job's workers not ended.", _JOB)
DECISIONS = Counter(
    f"{METRIC_PREFIX}scaling_decisions",
    "Scaler decisions that changed an elastic job's worker count, by direction.",
    ["api_name", "decision"],
)
IDLE_EXITS = Counter(
    f"{METRIC_PREFIX}scaling_idle_exits", "Workers of elastic jobs that exited idle, not replaced.", ["api_name"]
)


@dataclass(frozen=True)
class Load:
    """What a decision looks at."""

    asked: int  # workers asked for so far (the job's `workers`)
    idle_exits: int  # workers that exited idle since the last decision
    backlog: int  # batches waiting in the queue (those in flight are being worked on)
    seconds_per_batch: float | None  # see seconds_per_batch(); None before any batch ran
    room: int  # workers that limits.max_workers_in_progress leaves for this job, its own included


@dataclass(frozen=True)
class Decision:
    desired: int
    action: str  # SCALE_UP, HOLD or SCALE_DOWN
    reason: str


def decide(min_workers: int, max_workers: int, target_drain_s: float, load: Load) -> Decision:
    """The workers an elastic job should have now, and why (pure)."""
    left = max(0, load.asked - load.idle_exits)  # idle workers leave, whatever min_workers says
    base = max(left, min_workers) if load.backlog else left  # with batches waiting, never fewer than min_workers
    desired, why = base, ""
    if load.idle_exits:
        why = f"{load.idle_exits} workers exited idle, not replaced"
    if base > left:
        why = (f"{why}; " if why else "") + f"batches waiting: back to min_workers {min_workers}"
    if load.backlog == 0:
        why = why or f"no batch waiting: holding {base} workers (idle ones exit)"
    elif load.seconds_per_batch is None:
        why = why or f"no batch timing yet: holding {base} workers"
    else:
        drain_s = load.backlog * load.seconds_per_batch / base
        shape = f"{load.backlog} batches x {load.seconds_per_batch:.3g} s / {base} workers = {drain_s:.3g} s"
        if drain_s <= target_drain_s:
            why = why or f"backlog drains in time: {shape} <= target_drain_s {target_drain_s:g}"
        else:
            needed = math.ceil(load.backlog * load.seconds_per_batch / target_drain_s)
            ceiling = min(max_workers, load.room)
            desired = max(base, min(needed, ceiling))
            bound = ""
            if needed > ceiling:
                limit = f"max_workers {max_workers}" if ceiling == max_workers else "limits.max_workers_in_progress"
                bound = f" ({limit})"
            why = f"backlog too slow: {shape} > target_drain_s {target_drain_s:g}: {desired} workers{bound}"
    if desired > load.asked:
        return Decision(desired, SCALE_UP, why)
    return Decision(desired, SCALE_DOWN if desired < load.asked else HOLD, why)


def seconds_per_batch(progress: monitor_pb2.JobProgress | None) -> float | None:
    """The monitor's mean time of a successful attempt; before the first one, the age of the oldest attempt in
    progress (a batch takes at least that long), so that a job of long batches grows without waiting for one."""
    if progress is None:
        return None
    if progress.batches.HasField("average_time_per_batch_s"):
        return progress.batches.average_time_per_batch_s
    return progress.pace.oldest_in_flight_s if progress.pace.HasField("oldest_in_flight_s") else None


class Scaler:
    def __init__(self, config: Config, store: JobStore, lookups: Lookups) -> None:
        self._config = config
        self._store = store
        self._lookups = lookups
        self._idle_seen: dict[str, int] = {}  # job id -> its idle exits already taken off its count
        self._last: dict[str, jobs_pb2.Scaling] = {}  # job id -> its last decision, for the status

    async def scale(self, job: JobRecord, states: list[WorkerState]) -> JobRecord:
        """Decide the elastic job's count; stored (call under the job's lock) before the runtime is asked for it."""
        idled = sum(w.idled for w in states)
        seen = self._idle_seen.setdefault(job.job_id, idled)  # after a restart: taken as counted (see above)
        progress = await self._lookups.progress(job)
        _, workers_in_progress = await self._store.in_progress(job.api_name)
        load = Load(
            asked=job.workers,
            idle_exits=idled - seen,
            # A settled job's completion hook message waits too (the SQLite queue's depth counts batches only).
            backlog=(await self._lookups.queue_depth(job)).visible + job.settled,
            seconds_per_batch=seconds_per_batch(progress),
            room=self._config.limits.max_workers_in_progress - (workers_in_progress - job.workers),
        )
        decision = decide(job.min_workers, job.max_workers, self._config.scaling.target_drain_s, load)
        if idled > seen:
            IDLE_EXITS.labels(job.api_name).inc(idled - seen)
        if decision.desired != job.workers:
            job = dataclasses.replace(job, workers=decision.desired)
            await self._store.put_job(job)
            DECISIONS.labels(job.api_name, decision.action).inc()
            log.info("job %s: %s", job.job_id, decision.reason, extra={"job_id": job.job_id})
        self._idle_seen[job.job_id] = idled
        current = sum(not w.ended for w in states)
        DESIRED.labels(job.api_name, job.job_id).set(decision.desired)
        CURRENT.labels(job.api_name, job.job_id).set(current)
        last = jobs_pb2.Scaling(last_decision=decision.action, reason=decision.reason)
        last.decided_at.FromSeconds(int(time.time()))
        self._last[job.job_id] = last
        return job

    def status(self, job: JobRecord, states: list[WorkerState] | None) -> jobs_pb2.Scaling | None:
        """The `scaling` block of an elastic job's status; None for a fixed one. `states`: None once it has ended."""
        if not job.elastic:
            return None
        scaling = jobs_pb2.Scaling(min_workers=job.min_workers, max_workers=job.max_workers)
        scaling.desired_workers = job.workers
        if (last := self._last.get(job.job_id)) is not None:
            scaling.MergeFrom(last)
        if states is not None:
            scaling.current_workers = sum(not w.ended for w in states)
            scaling.idle_exits = sum(w.idled for w in states)
        return scaling

    def forget(self, job: JobRecord) -> None:
        """An ended job's: its series and decisions go."""
        self._idle_seen.pop(job.job_id, None)
        self._last.pop(job.job_id, None)
        for gauge in (DESIRED, CURRENT):
            try:
                gauge.remove(job.api_name, job.job_id)
            except KeyError:
                pass
