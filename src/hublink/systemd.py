"""systemd integration: ``sd_notify`` readiness, status, stopping and the watchdog.

The protocol is one datagram of ``KEY=VALUE`` lines sent to ``$NOTIFY_SOCKET``
(a path, or an abstract socket written ``@name``). Outside systemd the variable
is unset and every method here does nothing, so the daemon calls them freely.

The watchdog pings come from a coroutine on the daemon's own event loop: if
something blocks the loop, the pings stop and systemd restarts the service,
which is the whole point of a watchdog.
"""

from __future__ import annotations

import asyncio
import os
import socket

import structlog

log = structlog.get_logger(__name__)


class Notifier:
    """Talks to systemd's notify socket; a no-op when there is none."""

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: int | None = None,
    ) -> None:
        self._address = _socket_address(address) if address else None
        self._watchdog_usec = watchdog_usec
        self._failing = False

    @classmethod
    def from_env(cls) -> Notifier:
        """A notifier for ``$NOTIFY_SOCKET``, honouring ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``."""
        return cls(os.environ.get("NOTIFY_SOCKET") or None, watchdog_usec=_watchdog_usec())

    @property
    def enabled(self) -> bool:
        """Whether systemd is listening (``$NOTIFY_SOCKET`` was set)."""
        return self._address is not None

    def notify(self, **fields: object) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; whether it was sent.

        Never raises: a daemon must not die because systemd went away.
        """
        if self._address is None or not fields:
            return False
        payload = "\n".join(f"{key}={_one_line(value)}" for key, value in fields.items())
        try:
            # A socket per message, as libsystemd's sd_notify does: nothing to
            # close on shutdown, and one syscall more every few seconds is free.
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # A full receive queue must never stall the event loop.
                sock.setblocking(False)
                sock.sendto(payload.encode(), self._address)
        except OSError as err:
            # Log the first failure of a streak only: the watchdog would
            # otherwise repeat the same warning every few seconds.
            if not self._failing:
                log.warning("systemd notification failed", error=str(err), fields=list(fields))
            self._failing = True
            return False
        if self._failing:
            log.info("systemd notifications work again")
        self._failing = False
        return True

    def ready(self) -> bool:
        """``READY=1``: the service is up (config, credentials, control socket)."""
        return self.notify(READY=1)

    def status(self, text: str) -> bool:
        """``STATUS=text``: the one line ``systemctl status`` shows."""
        return self.notify(STATUS=text)

    def stopping(self) -> bool:
        """``STOPPING=1``: shutdown has begun."""
        return self.notify(STOPPING=1)

    def watchdog_ping(self) -> bool:
        """``WATCHDOG=1``: the service is alive."""
        return self.notify(WATCHDOG=1)

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of ``$WATCHDOG_USEC``), or None without a watchdog."""
        if self._address is None or not self._watchdog_usec:
            return None
        return self._watchdog_usec / 2_000_000

    async def watchdog(self) -> None:
        """Ping the watchdog from this event loop until cancelled.

        Without a watchdog it just waits to be cancelled, so a supervisor can
        treat it like any other long-running task.
        """
        interval = self.watchdog_interval()
        if interval is None:
            await asyncio.Event().wait()
            return
        log.debug("systemd watchdog enabled", interval=interval)
        while True:
            self.watchdog_ping()
            await asyncio.sleep(interval)


def _socket_address(address: str) -> str | bytes:
    # "@name" is Linux's abstract namespace, spelled with a leading NUL byte.
    if address.startswith("@"):
        return b"\0" + address[1:].encode()
    return address


def _watchdog_usec() -> int | None:
    # WATCHDOG_PID names the process systemd expects pings from; a child that
    # inherited the variables (a hook, say) must stay silent.
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


def _one_line(value: object) -> str:
    # A newline would start a new KEY=VALUE assignment in the datagram.
    return " ".join(str(value).splitlines())
