"""Free TCP ports for processes that bind them a moment later: workers, and the embedded stack's services.

A port found by binding port 0 comes from the kernel's ephemeral range, which every outgoing connection draws from
too: between the check and the process's own bind, a connection may take it, and the process fails to start. Ports
are picked below that range instead, where only a program binding that very number could take them; and a port
handed out is not handed out again for a while, since its process may not have bound it yet.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from pathlib import Path

PICK_FROM = range(20000, 32768)  # below Linux's default ephemeral range (32768-60999)
HELD_S = 60.0  # a port handed out is not handed out again within this time
TRIES = 64

_handed_out: dict[int, float] = {}  # port -> when (time.monotonic())
_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` that is free now and that nothing else should take before the caller's process binds it."""
    ephemeral = _ephemeral_range()
    with _lock:
        now = time.monotonic()
        for port in [p for p, at in _handed_out.items() if now - at >= HELD_S]:
            del _handed_out[port]
        for port in random.sample(PICK_FROM, TRIES):
            if port not in ephemeral and port not in _handed_out and _bindable(host, port):
                _handed_out[port] = now
                return port
    with socket.socket() as s:  # the range is crowded (or is all ephemeral here): the kernel chooses
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral_range() -> range:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    return range(low, high + 1)
