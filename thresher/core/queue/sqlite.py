"""SqliteQueue: the embedded queue. One file (WAL) holds every job's queue; many processes share it.

A message row is `ready` (visible when `visible_at` has passed, otherwise in flight), `done` (acked; the
row is kept, without its body, so that sending the same batch id again is a no-op) or `dead`.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from thresher.core.config import Config
from thresher.core.errors import InvalidRequest, QueueNotFound
from thresher.core.queue.base import KIND_BATCH, Batch, DeadLetter, Delivery, Depth, Queue, QueueBackend
from thresher.core.sqlite import SqliteFile, transaction

POLL_MIN_S = 0.005  # first pause of an empty long poll; doubles up to POLL_MAX_S
POLL_MAX_S = 0.1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queues (
    name TEXT PRIMARY KEY,
    visibility_s REAL NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    body BLOB,
    state TEXT NOT NULL DEFAULT 'ready',
    visible_at REAL NOT NULL DEFAULT 0,
    receive_count INTEGER NOT NULL DEFAULT 0,
    lease TEXT,
    error TEXT,
    UNIQUE (queue, id)
);
-- Receiving walks a queue's ready rows in seq order and skips the few in flight: O(batches received), where an
-- index on visible_at made each receive sort every visible row. (messages_ready was that index.)
DROP INDEX IF EXISTS messages_ready;
CREATE INDEX IF NOT EXISTS messages_next ON messages (queue, state, seq);
"""


def open_sqlite_backend(config: Config) -> SqliteQueueBackend:
    return SqliteQueueBackend(Path(config.data_dir) / "queue" / "queues.db")


class SqliteQueueBackend(QueueBackend):
    def __init__(self, path: Path) -> None:
        self.path = path
        # The reader: depth reads (a job's status) must not queue behind writes waiting for another process's lock.
        self._file = SqliteFile(path, _SCHEMA, reader=True)
        self.run = self._file.run
        self.read = self._file.read

    async def create(self, name: str, visibility_s: float, dead_letter_arn: str = "") -> str:
        if dead_letter_arn:
            await self.check_dead_letter_target(dead_letter_arn)

        def create(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR IGNORE INTO queues (name, visibility_s, created) VALUES (?, ?, ?)",
                (name, visibility_s, time.time()),
            )

        await self.run(create)
        return f"sqlite://{self.path}#{name}"

    async def delete(self, name: str) -> None:
        def delete(db: sqlite3.Connection) -> None:
            with transaction(db):
                db.execute("DELETE FROM queues WHERE name = ?", (name,))
                db.execute("DELETE FROM messages WHERE queue = ?", (name,))

        await self.run(delete)

    async def check_dead_letter_target(self, target: str) -> None:
        raise InvalidRequest(
            f"sqs_dead_letter_queue: {target}: a named dead letter queue needs the sqs queue backend"
            " (queue.backend is sqlite here, which keeps every job's dead letters itself)"
        )

    def open(self, name: str) -> Queue:
        return SqliteQueue(self, name)

    async def close(self) -> None:
        await self._file.close()


class SqliteQueue(Queue):
    def __init__(self, backend: SqliteQueueBackend, name: str) -> None:
        self._backend = backend
        self.name = name

    async def send(self, batches: Sequence[Batch]) -> None:
        rows = [(self.name, b.batch_id, b.kind, b.body) for b in batches]

        def send(db: sqlite3.Connection) -> None:
            with transaction(db):
                self._visibility_s(db)
                db.executemany("INSERT OR IGNORE INTO messages (queue, id, kind, body) VALUES (?, ?, ?, ?)", rows)

        await self._backend.run(send)

    async def receive(self, max_batches: int, wait_s: float) -> list[Delivery]:
        deadline = time.monotonic() + wait_s
        pause = POLL_MIN_S
        while True:
            claim = functools.partial(self._claim, max_batches=max_batches, asked_at=time.monotonic())
            deliveries = await self._received(self._backend.run(claim))
            if deliveries or time.monotonic() >= deadline:
                return deliveries
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, POLL_MAX_S)

    def _claim(self, db: sqlite3.Connection, max_batches: int, asked_at: float) -> list[Delivery]:
        now = time.time()
        query = "SELECT seq FROM messages WHERE queue = ? AND state = 'ready' AND visible_at <= ? ORDER BY seq LIMIT ?"
        # A plain read first: an empty poll takes no write lock.
        if not db.execute(query, (self.name, now, max_batches)).fetchall():
            self._visibility_s(db)
            return []
        with transaction(db):
            visibility_s = self._visibility_s(db)
            rows = db.execute(
                "UPDATE messages SET visible_at = ?, receive_count = receive_count + 1, lease = seq || ':' || ?"
                f" WHERE seq IN ({query}) RETURNING seq, id, kind, body, receive_count, lease",
                (now + visibility_s, secrets.token_hex(8), self.name, now, max_batches),
            ).fetchall()
        held_until = asked_at + visibility_s
        return [Delivery(Batch(r[1], bytes(r[3]), r[2]), r[5], r[4], held_until) for r in sorted(rows)]

    async def extend(self, deliveries: Sequence[Delivery], visibility_s: float) -> list[Delivery]:
        statement = "UPDATE messages SET visible_at = ? WHERE seq = ? AND lease = ? AND state = 'ready'"

        def extend(db: sqlite3.Connection) -> list[Delivery]:
            visible_at = time.time() + visibility_s
            with transaction(db):
                self._visibility_s(db)
                return [d for d in deliveries if db.execute(statement, (visible_at, _seq(d), d.receipt)).rowcount == 0]

        return await self._backend.run(extend) if deliveries else []

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        statement = "UPDATE messages SET state = 'done', body = NULL, lease = NULL WHERE seq = ?"
        await self._finish(statement, [(_seq(d),) for d in deliveries])

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        statement = "UPDATE messages SET visible_at = 0, lease = NULL WHERE seq = ? AND lease = ?"
        await self._finish(statement, [(_seq(d), d.receipt) for d in deliveries])

    async def dead_letter(self, delivery: Delivery, error: str) -> None:
        statement = "UPDATE messages SET state = 'dead', error = ?, lease = NULL WHERE seq = ? AND state = 'ready'"
        await self._finish(statement, [(error, _seq(delivery))])

    async def _finish(self, statement: str, rows: list[tuple[object, ...]]) -> None:
        """One statement per row, in one transaction; a row it changes not (another delivery holds the batch, or
        it is settled already) is not an error, unless the queue is gone."""

        def finish(db: sqlite3.Connection) -> None:
            with transaction(db):
                if db.executemany(statement, rows).rowcount < len(rows):
                    self._visibility_s(db)  # raises if the queue is gone

        if rows:
            await self._backend.run(finish)

    async def depth(self) -> Depth:
        def depth(db: sqlite3.Connection) -> Depth:
            self._visibility_s(db)
            counts = dict(
                db.execute(
                    "SELECT CASE WHEN state = 'dead' THEN 'dead' WHEN visible_at <= ? THEN 'visible'"
                    " ELSE 'in_flight' END, count(*) FROM messages"
                    " WHERE queue = ? AND kind = ? AND state IN ('ready', 'dead') GROUP BY 1",
                    (time.time(), self.name, KIND_BATCH),
                ).fetchall()
            )
            return Depth(counts.get("visible", 0), counts.get("in_flight", 0), counts.get("dead", 0))

        return await self._backend.read(depth)

    async def dead_letters(self) -> list[DeadLetter]:
        def dead(db: sqlite3.Connection) -> list[DeadLetter]:
            self._visibility_s(db)
            rows = db.execute(
                "SELECT id, kind, body, receive_count, error FROM messages"
                " WHERE queue = ? AND state = 'dead' ORDER BY seq",
                (self.name,),
            )
            return [DeadLetter(Batch(r[0], bytes(r[2]), r[1]), r[3], r[4] or "") for r in rows]

        return await self._backend.run(dead)

    def _visibility_s(self, db: sqlite3.Connection) -> float:
        row = db.execute("SELECT visibility_s FROM queues WHERE name = ?", (self.name,)).fetchone()
        if row is None:
            raise QueueNotFound(f"queue {self.name} does not exist")
        return float(row[0])


def _seq(delivery: Delivery) -> int:
    return int(delivery.receipt.split(":", 1)[0])
