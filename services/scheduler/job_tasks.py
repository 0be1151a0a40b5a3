"""At most one background task per job for one kind of work (launching it, cleaning it up), forgotten once done."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from thresher.core.aiotasks import create_guarded_task


class JobTasks:
    def __init__(self, work: str) -> None:
        self._work = work  # names the tasks: "<work> <job id>"
        self._tasks: dict[str, asyncio.Task[Any]] = {}

    def start(self, job_id: str, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Start `work()` for the job unless its task runs already."""
        task = self._tasks.get(job_id)
        if task is None or task.done():  # done: cancelled before it began, so it could not forget itself
            self._tasks[job_id] = create_guarded_task(self._run(job_id, work), f"{self._work} {job_id}")

    def get(self, job_id: str) -> asyncio.Task[Any] | None:
        return self._tasks.get(job_id)

    def cancel(self, job_id: str) -> None:
        """Cancel the job's task, unless it is the caller (which ends on its own)."""
        task = self._tasks.pop(job_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def cancel_all(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, job_id: str, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        try:
            await work()
        finally:  # a long-lived scheduler sees many jobs: it keeps no task of theirs
            if self._tasks.get(job_id) is asyncio.current_task():
                del self._tasks[job_id]
