"""KeyedLocks: one lock per key while it is in use, none kept after."""

from __future__ import annotations

import asyncio

from thresher.core.keyed_locks import KeyedLocks


async def test_one_task_at_a_time_per_key_and_other_keys_are_free() -> None:
    locks, order = KeyedLocks(), []

    async def hold(key: str, name: str) -> None:
        async with locks[key]:
            order.append(f"{name} in")
            await asyncio.sleep(0.05)
            order.append(f"{name} out")

    await asyncio.gather(hold("job-1", "a"), hold("job-1", "b"), hold("job-2", "c"))

    assert order.index("a out") < order.index("b in")  # the same key: one after the other
    assert order.index("c in") < order.index("a out")  # another key: at the same time


async def test_a_lock_nobody_holds_or_waits_for_is_not_kept() -> None:
    locks = KeyedLocks()
    for i in range(100):
        async with locks[f"job-{i}"]:
            assert len(locks) == 1
    assert len(locks) == 0
