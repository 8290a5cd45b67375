"""Waiting for the embedded Redis: a server too slow to answer is "not ready yet", not a crash."""

from __future__ import annotations

import socket
import time

from predictq.redis_server import ping


def test_a_server_that_accepts_but_never_answers_is_not_ready() -> None:
    """The kernel accepts the connection; PING times out; ping says False within its bound."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"

        started = time.monotonic()
        ready = ping(url)

    assert ready is False
    assert time.monotonic() - started < 3
