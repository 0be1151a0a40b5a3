"""Ports picked for workers and services: free, outside the kernel's ephemeral range, never handed out twice."""

from __future__ import annotations

import contextlib
import random
import socket

from thresher.core.ports import PICK_FROM, _ephemeral_range, free_port


def test_ports_are_free_outside_the_ephemeral_range_and_never_handed_out_twice() -> None:
    ephemeral = _ephemeral_range()
    ports = [free_port() for _ in range(200)]

    assert len(set(ports)) == len(ports), "a port handed out is not handed out again while its process starts"
    assert not [p for p in ports if p in ephemeral]
    for port in ports[:20]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # free indeed


def test_a_port_in_use_is_not_handed_out() -> None:
    # Given 800 ports of the range (one in 16) taken by listeners that did not get them from free_port
    listeners = []
    try:
        for port in random.sample(PICK_FROM, 800):
            s = socket.socket()
            listeners.append(s)
            with contextlib.suppress(OSError):  # taken already by something else: fine too
                s.bind(("127.0.0.1", port))
                s.listen()
        taken = {s.getsockname()[1] for s in listeners}
        # Then none of them is handed out while they listen
        assert not taken & {free_port() for _ in range(100)}
    finally:
        for s in listeners:
            s.close()
