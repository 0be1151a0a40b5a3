"""What only the embedded SQLite queue promises, beyond the queue contract (test_queue_contract.py)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from thresher.core.config import Config
from thresher.core.queue import Batch, open_queue_backend


async def test_depth_is_answered_while_a_write_waits_for_another_process(tmp_path: Path) -> None:
    """A job's status reads its queue's depth: with a thousand workers receiving and acking, writes wait for the
    file's lock, and a read queued behind them waited as long."""
    backend = open_queue_backend(Config(data_dir=tmp_path))
    try:
        await backend.create("q", visibility_s=30)
        queue = backend.open("q")
        await queue.send([Batch("b1", b"[1]")])
        with contextlib.closing(sqlite3.connect(tmp_path / "queue" / "queues.db", isolation_level=None)) as other:
            other.execute("BEGIN IMMEDIATE")  # another process's write: the backend's next write waits for it
            waiting = asyncio.ensure_future(queue.send([Batch("b2", b"[2]")]))
            await asyncio.sleep(0.5)  # time for the send to reach the backend's writer

            depth = await asyncio.wait_for(queue.depth(), 10)

            assert (depth.visible, depth.in_flight) == (1, 0)  # what is committed
            assert not waiting.done()
            other.execute("COMMIT")
        await waiting
        assert (await queue.depth()).visible == 2
    finally:
        await backend.close()
