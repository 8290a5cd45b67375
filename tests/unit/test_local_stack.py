"""The local stack's parts that need no process: restart back-off, the embedded server's socket, the
data dir's lock, and the socket URL as Celery's Redis transport reads it."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from kombu import Connection

from predictq.local import Backoff, describe_exit, exclusive_redis_dir
from predictq.redis_server import claim_socket, server_command, socket_in_use, socket_path, socket_url
from worker.celery_app import kombu_redis_url


def test_backoff_doubles_from_one_second_up_to_thirty() -> None:
    """A child that keeps exiting at once waits 1, 2, 4... seconds, never more than 30."""
    backoff = Backoff()
    assert [backoff.delay_after(uptime_s=0.5) for _ in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]


def test_backoff_starts_over_after_a_minute_of_uptime() -> None:
    backoff = Backoff()
    for _ in range(4):
        backoff.delay_after(uptime_s=1)
    assert backoff.delay_after(uptime_s=60) == 1
    assert backoff.delay_after(uptime_s=2) == 2


def test_exit_codes_name_the_signal() -> None:
    assert describe_exit(-9) == "code -9 (SIGKILL)"
    assert describe_exit(3) == "code 3"


def test_the_embedded_server_listens_on_its_socket_only(tmp_path: Path) -> None:
    """Port 0 (no TCP), the socket in the data dir with mode 700, the append-only file there too."""
    argv = server_command(Path("/bin/valkey-server"), tmp_path, unix_socket=tmp_path / "redis.sock")
    options = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert options["--port"] == "0" and "--bind" not in options
    assert options["--unixsocket"] == str(tmp_path / "redis.sock")
    assert options["--unixsocketperm"] == "700"
    assert options["--dir"] == str(tmp_path) and options["--appendonly"] == "yes"


def test_a_socket_path_too_long_for_the_kernel_is_refused_with_the_setting_to_change(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="set PREDICTQ_DATA_DIR to a shorter path"):
        socket_path(tmp_path / ("d" * 120))


def test_a_stale_socket_file_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "redis.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))
    assert path.exists() and not socket_in_use(path)

    claim_socket(path)

    assert not path.exists()


def test_a_live_socket_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "redis.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        with pytest.raises(RuntimeError, match=f"a Redis server already answers on {path}"):
            claim_socket(path)
        assert socket_in_use(path)


def test_one_supervisor_at_a_time_holds_a_data_dir(tmp_path: Path) -> None:
    """A second hold on the same directory is refused with the holder's pid; once released it can be taken."""
    refusal = f"another `predictq up` \\(pid {os.getpid()}\\) is running"
    with exclusive_redis_dir(tmp_path), pytest.raises(RuntimeError, match=refusal), exclusive_redis_dir(tmp_path):
        pass
    with exclusive_redis_dir(tmp_path):
        pass


def test_the_socket_url_reaches_the_socket_for_redis_py_and_for_kombu(tmp_path: Path) -> None:
    """redis-py reads unix://<path>?db=0; kombu gets redis+socket://<path>?virtual_host=0 for the same socket."""
    path = tmp_path / "with space" / "redis.sock"
    url = socket_url(path)
    assert url == f"unix://{str(path).replace(' ', '%20')}?db=0"

    broker = kombu_redis_url(url)
    assert broker == f"redis+socket://{str(path).replace(' ', '%20')}?virtual_host=0"
    connection = Connection(broker)
    assert connection.transport_cls == "redis"
    assert connection.hostname == f"socket://{str(path).replace(' ', '%20')}?virtual_host=0"
    assert kombu_redis_url("unix:///run/r.sock?db=3").endswith("?virtual_host=3")
    assert kombu_redis_url("redis://cache:6379/1") == "redis://cache:6379/1"
