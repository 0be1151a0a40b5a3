"""One SQLite file (WAL) used from asyncio: a single thread owns the connection, so calls never block the loop."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
BUSY_TIMEOUT_S = 60  # other processes share the file; wait this long for their write lock


class SqliteFile:
    def __init__(
        self,
        path: Path,
        schema: str,
        synchronous: str = "NORMAL",
        reader: bool = False,
        added: Mapping[str, str] | None = None,
    ) -> None:
        """`synchronous`: NORMAL survives a process crash; FULL also survives power loss (an fsync per commit).
        `reader`: a second, read-only connection on a thread of its own, for `read`. `added`: "table.column" -> its
        definition, for columns added to the schema's tables since a file was made (CREATE TABLE IF NOT EXISTS leaves
        an existing table as it was)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{path.stem}")
        self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(schema)
        for name, definition in (added or {}).items():
            table, column = name.split(".")
            if column not in {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        self._with_reader = reader
        self._reader: tuple[ThreadPoolExecutor, sqlite3.Connection] | None = None  # made at the first read

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(connection)` on the connection's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, self._db)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(read-only connection)` on the reader's thread: WAL lets it read what is committed while `run` writes,
        so a read never queues behind writes, their fsyncs and their waits for another process's lock. Without a
        reader, on the writer's thread."""
        if not self._with_reader:
            return await self.run(fn)
        if self._reader is None:
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA query_only=ON")
            self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{self.path.stem}-read"), db
        executor, db = self._reader
        return await asyncio.get_running_loop().run_in_executor(executor, fn, db)

    async def close(self) -> None:
        if self._reader is not None:
            await self.read(lambda db: db.close())
            self._reader[0].shutdown()
        await self.run(lambda db: db.close())
        self._executor.shutdown()


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): takes the write lock up front, so no deadlock on upgrade."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
