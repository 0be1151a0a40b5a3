"""One asyncio.Lock per key, for as long as some task holds or waits for it."""

from __future__ import annotations

import asyncio
import weakref


class KeyedLocks:
    """`async with locks[key]:` one task at a time per key. A long-lived service sees keys without end (a job id
    each): a key's lock is dropped once no task holds or waits for it, and the next use makes a new one."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def __getitem__(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def __len__(self) -> int:
        return len(self._locks)
