"""sd_notify against a real notify socket (path or abstract); the watchdog runs on the loop."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hublink.systemd import Notifier
from support.polling import wait_until


@dataclass
class Received:
    """Datagrams a fake systemd received, with their arrival times."""

    messages: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def texts(self) -> list[str]:
        with self.lock:
            return [text for _, text in self.messages]

    def times_of(self, text: str) -> list[float]:
        with self.lock:
            return [at for at, got in self.messages if got == text]


class FakeSystemd:
    """A bound AF_UNIX datagram socket read by a thread, as systemd reads NOTIFY_SOCKET."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = b"\0" + address[1:].encode() if address.startswith("@") else address
        self.sock.bind(bind_to)
        self.sock.settimeout(0.05)
        self.received = Received()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            with self.received.lock:
                self.received.messages.append((time.monotonic(), data.decode()))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def fake_systemd(request: pytest.FixtureRequest) -> Iterator[FakeSystemd]:
    # A short folder of our own: AF_UNIX paths are limited to 108 bytes.
    with tempfile.TemporaryDirectory(prefix="hl-") as folder:
        if request.param == "path":
            address = str(Path(folder) / "notify")
        else:
            address = f"@hublink-test-{uuid.uuid4().hex}"
        server = FakeSystemd(address)
        try:
            yield server
        finally:
            server.close()


async def test_ready_status_stopping_reach_the_socket(
    fake_systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", fake_systemd.address)
    notifier = Notifier.from_env()
    assert notifier.enabled
    assert notifier.ready()
    assert notifier.status("link connected\ntunnel running")
    assert notifier.stopping()
    assert notifier.notify(RELOADING=1, STATUS="reloading")

    expected = [
        "READY=1",
        "STATUS=link connected tunnel running",
        "STOPPING=1",
        "RELOADING=1\nSTATUS=reloading",
    ]
    await wait_until(lambda: len(fake_systemd.received.texts()) == len(expected), timeout=10.0)
    assert fake_systemd.received.texts() == expected


async def test_watchdog_pings_at_half_the_interval(
    fake_systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", fake_systemd.address)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier.from_env()
    assert notifier.watchdog_interval() == pytest.approx(0.1)

    task = asyncio.create_task(notifier.watchdog())
    try:
        await wait_until(
            lambda: len(fake_systemd.received.times_of("WATCHDOG=1")) >= 4, timeout=10.0
        )
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    times = fake_systemd.received.times_of("WATCHDOG=1")
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Never faster than half the watchdog timeout; a busy CI box may be slower.
    assert min(gaps) >= 0.08


async def test_watchdog_pid_of_another_process_means_no_pings(
    fake_systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", fake_systemd.address)
    monkeypatch.setenv("WATCHDOG_USEC", "20000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    notifier = Notifier.from_env()
    assert notifier.watchdog_interval() is None

    task = asyncio.create_task(notifier.watchdog())
    # Ten of the would-be ping intervals pass, then a marker goes out; the
    # marker must be the first and only thing systemd saw.
    await asyncio.sleep(0.1)
    assert not task.done()
    notifier.status("marker")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: fake_systemd.received.texts() != [], timeout=10.0)
    assert fake_systemd.received.texts() == ["STATUS=marker"]


async def test_blocked_loop_stops_the_pings(
    fake_systemd: FakeSystemd, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", fake_systemd.address)
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a ping every 50 ms
    notifier = Notifier.from_env()
    received = fake_systemd.received

    task = asyncio.create_task(notifier.watchdog())
    try:
        await wait_until(lambda: len(received.times_of("WATCHDOG=1")) >= 3, timeout=10.0)
        blocked_at = time.monotonic()
        time.sleep(0.8)  # the bug being simulated: blocking work on the loop
        unblocked_at = time.monotonic()
        await wait_until(
            lambda: any(t > unblocked_at for t in received.times_of("WATCHDOG=1")), timeout=10.0
        )
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    times = received.times_of("WATCHDOG=1")
    # At most one ping was in flight when the loop blocked; none was sent during the block.
    during = [t for t in times if blocked_at + 0.1 < t < unblocked_at]
    assert during == []
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) >= 0.7


async def test_without_notify_socket_everything_is_a_no_op(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    notifier = Notifier.from_env()
    assert not notifier.enabled
    assert notifier.watchdog_interval() is None
    assert not notifier.ready()
    assert not notifier.status("x")
    assert not notifier.stopping()
    assert not notifier.watchdog_ping()
    task = asyncio.create_task(notifier.watchdog())
    await asyncio.sleep(0)
    assert not task.done()  # waits quietly for cancellation
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_vanished_socket_is_logged_not_raised(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    notifier = Notifier(str(tmp_path / "gone"))
    with capture_logs() as logs:
        assert not notifier.ready()
        assert not notifier.watchdog_ping()
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    # One warning for the streak of failures, not one per ping.
    assert len(warnings) == 1
    assert "systemd notification failed" in warnings[0]["event"]
