"""How many of a job's batches are terminal: counted once, then kept up to date as batches become terminal.

A job settles when that number reaches its total, which the ledger checks in every transaction. Counting the rows
each time would cost a million-batch job a million index entries per transaction; the count is instead read once
per job (and again after a restart) and moved by the transactions that change it. The ledger's thread alone uses it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from services.monitor.accounting import TERMINAL_STATES


class TerminalCounts:
    def __init__(self) -> None:
        self._committed: dict[str, int] = {}  # job id -> its terminal batches as of the last commit (jobs not settled)

    def count(self, db: sqlite3.Connection, job_id: str, added: int) -> int:
        """The job's terminal batches, inside a transaction that made `added` of them terminal."""
        if job_id not in self._committed:
            (count,) = db.execute(
                "SELECT COUNT(*) FROM batches WHERE job_id = ? AND state IN (?, ?)",
                (job_id, *(state.value for state in TERMINAL_STATES)),
            ).fetchone()
            self._committed[job_id] = count - added
        return self._committed[job_id] + added

    def commit(self, added: Mapping[str, int]) -> None:
        """The transaction that made `added` batches terminal (by job) is committed."""
        for job_id, count in added.items():
            if job_id in self._committed:
                self._committed[job_id] += count

    def forget(self, job_id: str) -> None:
        """The job has settled: its count is not needed again."""
        self._committed.pop(job_id, None)
