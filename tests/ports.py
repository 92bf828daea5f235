"""Loopback ports for the servers the tests start.

A port that the kernel hands out for a bind to port 0 is an ephemeral one, which it hands to outgoing connections
too: between the moment a test picks it and the moment its server binds it, any connection of the suite may take it
(a cluster's six nodes start one after the other, seconds apart; its third node once found its port taken). These
ports come from below the ephemeral range instead, where no connection is ever given one, each xdist process from a
range of its own, so that two processes cannot pick the same one either; a process walks through its range, so that
it gives a port again only after all the others (two servers made before either starts get two ports; and
pytest-randomly seeds `random` alike before every test, so that random picks would repeat from test to test).
"""

from __future__ import annotations

import itertools
import os
import random
import socket
from pathlib import Path

LOWEST = 10_000
#: Ports per xdist process (`gw0`, `gw1`, …; the one process of a run without xdist is `gw0`).
SPAN = 2_500
#: Where this process's walk through its range has got to (it starts anywhere, apart from another run's).
_walk = itertools.count(random.SystemRandom().randrange(SPAN))


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


EPHEMERAL_START = _ephemeral_start()


def _worker_index() -> int:
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)


def bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port(*, offset_free: int = 0) -> int:
    """A loopback port nothing listens on, outside the ephemeral range; with `offset_free`, one whose port that much
    higher is free and outside it too (a Redis cluster node's bus)."""
    ceiling = EPHEMERAL_START - offset_free
    start = LOWEST + (_worker_index() * SPAN) % max(ceiling - LOWEST - SPAN, 1)
    span = min(SPAN, ceiling - start)
    for _ in range(span):
        port = start + next(_walk) % span
        if bindable(port) and (not offset_free or bindable(port + offset_free)):
            return port
    raise RuntimeError(f"no free loopback port in {start}-{start + span} below the ephemeral range")
