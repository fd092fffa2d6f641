"""``hublink run``: start-up, one supervised TaskGroup, graceful shutdown.

The lifecycle is a straight line::

    startup()    credentials (if any), the one-daemon lock, stores, the dispatcher
    main_loop()  one TaskGroup: uplink (link + tunnel), dispatcher, watchdog,
                 credentials watcher; each task restarted with backoff if it crashes;
                 the tunnel stops while the Cloud refuses the hub's credentials; the
                 control socket, metrics and the local page start beside the link,
                 then READY=1
    shutdown()   STOPPING=1, tasks cancelled (the link says 1001, frpc is reaped),
                 page and control socket closed, outbox closed

The link and frpc start first: aiohttp (with the two SSL contexts it builds at
import) and the control server's, the page's and the REST client's modules are
most of a cold start, so they are imported in a worker thread while the link
connects (:mod:`hublink.localservers`); the tunnel's admin-API client waits for
frpc's first poll.

READY=1 does not wait for the Cloud: a Hub must boot while its uplink is down.
Nor does it wait for a registration (contract section 5): an unregistered
daemon serves the control API and the page, says "waiting for registration",
and starts the link and tunnel the moment credentials appear, whichever way
they came (the page, ``POST /v1/register``, ``hublink register`` in another
shell). ``hublink unregister`` while it runs drops them again.
SIGTERM/SIGINT only set the stop event; a second one, or a shutdown that
overruns its deadline, cancels everything at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from hublink import statedir
from hublink.backup.schedule import BackupScheduler
from hublink.credentials import Credentials, CredentialStore, CredentialsWatch
from hublink.errors import (
    EXIT_FAILURE,
    EXIT_OK,
)
from hublink.link.connection import Link
from hublink.link.dispatch import Dispatcher
from hublink.link.messages import (
    APP_EVENT_TYPES,
    INBOUND_TYPES,
    BackupCompleted,
    BackupFailed,
    message_type,
)
from hublink.link.notices import StateStore
from hublink.link.outbox import AsyncOutbox
from hublink.live import LiveState
from hublink.localservers import LocalServers
from hublink.logs import set_hub_id
from hublink.metrics import Metrics, last_backup_time
from hublink.status import build_status
from hublink.statusreport import StatusReport
from hublink.supervise import supervise
from hublink.systemd import Notifier
from hublink.tls import ssl_context
from hublink.tunnel.supervisor import TunnelSupervisor

if TYPE_CHECKING:
    import aiohttp

    from hublink.backup.service import BackupService
    from hublink.config import Settings
    from hublink.link.messages import BackupCompleted, BackupFailed
    from hublink.link.notices import Notices

log = structlog.get_logger(__name__)

#: Graceful shutdown must end well within systemd's and the contract's 5 s.
SHUTDOWN_DEADLINE = 4.0
#: How often credentials.toml is checked for a re-registration.
CREDENTIALS_POLL = 2.0
#: Seconds frpc gets between SIGTERM and SIGKILL when the daemon stops.
TUNNEL_STOP_GRACE = 2.5
#: systemd's STATUS= line while no credentials exist (contract section 5).
WAITING = "waiting for registration"
#: The tunnel's last_error while the Cloud refuses the hub's credentials.
TUNNEL_HELD = (
    "stopped while the Cloud refuses this hub's credentials; it starts again once they are "
    "accepted (re-register with `hublink register --force` if the hub was revoked)"
)


def run(settings: Settings, *, config_path: Path | None = None) -> int:
    """Run the daemon until a signal stops it; the exit code."""
    return asyncio.run(serve(settings, config_path=config_path))


async def serve(settings: Settings, *, config_path: Path | None = None) -> int:
    """The daemon's whole life on the running loop; the exit code.

    Raises:
        CredentialsError: credentials.toml exists but cannot be used (exit 78);
            a hub without one waits for a registration instead.
        DaemonLockedError, DaemonRunningError: another daemon runs.
    """
    daemon = Daemon(settings, config_path=config_path)
    await daemon.startup()
    try:
        await daemon.main_loop()
    finally:
        await daemon.shutdown()
    return EXIT_FAILURE if daemon.forced else EXIT_OK


class Daemon:
    """One run of ``hublink run``: what it holds and the order it is built and torn down in."""

    def __init__(self, settings: Settings, *, config_path: Path | None = None) -> None:

        self.settings = settings
        self.config_path = config_path
        self.live: LiveState = LiveState()
        self.forced = False
        self.creds: Credentials | None = None
        self._stop = asyncio.Event()
        self._creds_changed = asyncio.Event()
        # The link's verdict on the credentials, for the tunnel: set by _follow_link.
        self._link_refused = asyncio.Event()
        self._link_accepted = asyncio.Event()
        self._creds_file = CredentialsWatch(CredentialStore(settings.state_dir))
        self._signals = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._main_task: asyncio.Task[Any] | None = None
        self._lock_fd: int | None = None
        self._outbox: AsyncOutbox | None = None
        self._store: StateStore | None = None
        self._dispatcher: Dispatcher | None = None
        self._notifier: Notifier | None = None
        self._last_status_line = ""
        self._session: aiohttp.ClientSession | None = None
        self._backups: BackupService | None = None
        self._servers = LocalServers(settings)
        self.metrics: Metrics | None = None
        self._scheduler: BackupScheduler | None = None

    # --- startup --------------------------------------------------------------

    async def startup(self) -> None:
        """The credentials (if any), the one-daemon lock, the stores and the dispatcher."""

        settings = self.settings
        # None: not registered; contract section 5 says run waits for a registration.
        self.creds = self._creds_file.load()
        set_hub_id(str(self.creds.hub_id) if self.creds else None)
        self._lock_fd = statedir.hold_daemon_lock(settings.state_dir)
        # From here a signal only sets the stop event, even while starting up.
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        try:
            self._store = await asyncio.to_thread(
                partial(
                    StateStore.load,
                    settings.state_dir,
                    hub_id=str(self.creds.hub_id) if self.creds else None,
                    max_revoked_users=settings.notices.max_revoked_users,
                )
            )
            self._outbox = await AsyncOutbox.for_settings(settings)
            self.metrics = self._make_metrics(await self._store.asnapshot())
            self._dispatcher = Dispatcher(
                settings, self._store, self._outbox, backup=self._run_backup, metrics=self.metrics
            )
            self._scheduler = BackupScheduler(settings, self._dispatcher.back_up)
        except BaseException:
            await self.shutdown()
            raise
        self._notifier = Notifier.from_env()
        if self.creds is None:
            self.live.reset(tunnel="stopped" if settings.tunnel.enabled else "disabled")
        else:
            # Until the tunnel task takes over, status must not call an enabled tunnel "disabled".
            self.live.set_tunnel("starting" if settings.tunnel.enabled else "disabled")
        self.live.subscribe(self._publish_status)
        self.live.subscribe(self._follow_link)

    async def _serve_locally(self) -> None:
        """The control socket, metrics and the local page; then READY=1 (contract section 5).

        Their modules are imported in a worker thread, so the link, started
        just before, connects meanwhile instead of waiting for them.

        Raises:
            DaemonRunningError: another daemon answers on the control socket.
            HublinkError: the runtime directory cannot be made.
        """
        await self._servers.imported()
        from hublink.actions import DaemonActions

        assert self._outbox is not None and self._store is not None
        assert self._dispatcher is not None and self.metrics is not None
        assert self._notifier is not None
        actions = DaemonActions(
            self.settings,
            status=self.status,
            credentials=lambda: self.creds,
            adopt=self.adopt,
            dispatcher=self._dispatcher,
            notices=self._store,
            backup_running=self._backup_running,
            config_path=self.config_path,
        )
        await self._servers.start(actions, self._outbox, self._store, self.metrics)
        self._notifier.ready()
        self._publish_status()
        log.info(
            "hublink daemon started",
            cloud_url=self.settings.cloud_url,
            slug=self.creds.slug if self.creds else None,
            pid=os.getpid(),
            control_socket=str(self.settings.control_socket),
        )
        if self.creds is None:
            log.warning(
                "this hub is not registered; waiting for a registration",
                hint=self._registration_hint(),
            )

    def _backup_running(self) -> bool:
        """Whether a backup runs: this daemon's, or ``hublink backup`` in another shell."""
        if self._backups is not None and self._backups.running:
            return True
        return statedir.held_by_anyone(self.settings.state_dir / statedir.BACKUP_LOCK)

    def _registration_hint(self) -> str:
        ways = "POST /v1/register on the control socket, or `hublink register`"
        if self._servers.page.url is not None:
            return f"open the local page {self._servers.page.url} (see `hublink status`), {ways}"
        return ways

    def _make_metrics(self, notices: Notices) -> Metrics:
        """The daemon's metrics; the last successful backup comes back from the state dir."""
        return Metrics(
            live=self.live,
            outbox=self._outbox.sync if self._outbox is not None else None,
            inbound_types=INBOUND_TYPES,
            event_types=(
                *APP_EVENT_TYPES,
                message_type(BackupCompleted),
                message_type(BackupFailed),
            ),
            hook_types=self.settings.hooks,
            last_backup_at=last_backup_time(notices),
        )

    # --- main loop --------------------------------------------------------------

    async def main_loop(self) -> None:
        """Run every task under one TaskGroup until the stop event; then cancel them."""
        assert self._dispatcher is not None and self._notifier is not None
        assert self._scheduler is not None
        self._main_task = asyncio.current_task()
        deadline: asyncio.TimerHandle | None = None
        try:
            async with asyncio.TaskGroup() as group:
                self._tasks = [
                    group.create_task(supervise("uplink", self._uplink)),
                    group.create_task(supervise("dispatcher", self._dispatcher.run)),
                    group.create_task(supervise("watchdog", self._notifier.watchdog)),
                    group.create_task(supervise("credentials", self._watch_credentials)),
                ]
                if self.settings.backup.schedule is not None:
                    self._tasks.append(
                        group.create_task(supervise("schedule", self._scheduler.run))
                    )
                await self._serve_locally()
                await self._stop.wait()
                log.info("stopping")
                self._notifier.stopping()
                # Overrunning the deadline turns the graceful stop into a forced one.
                deadline = asyncio.get_running_loop().call_later(SHUTDOWN_DEADLINE, self._force)
                for task in self._tasks:
                    task.cancel()
        finally:
            if deadline is not None:
                deadline.cancel()

    async def _uplink(self) -> None:
        """The link and the tunnel, restarted together when the credentials change (none
        while there are no credentials: both say ``stopped`` until a registration)."""
        while True:
            creds = self.creds
            if creds is None:
                self.live.reset(tunnel="stopped" if self.settings.tunnel.enabled else "disabled")
                await self._creds_changed.wait()
                self._creds_changed.clear()
                continue
            # New credentials have not been refused yet: the tunnel starts at once.
            self._link_refused.clear()
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(supervise("link", partial(self._run_link, creds)))]
                if self.settings.tunnel.enabled:
                    tunnel = partial(self._gated_tunnel, creds)
                    tasks.append(group.create_task(supervise("tunnel", tunnel)))
                await self._creds_changed.wait()
                self._creds_changed.clear()
                if self.creds is None:
                    log.warning("credentials removed; the link and the tunnel stop")
                else:
                    log.info("credentials changed; restarting the link and the tunnel")
                for task in tasks:
                    task.cancel()

    async def _run_link(self, creds: Credentials) -> None:

        assert self._outbox is not None and self._dispatcher is not None
        tls = None
        if self.settings.cloud_scheme == "https":
            tls = ssl_context(self.settings)
        await Link(
            self.settings,
            creds,
            self.live,
            self._outbox,
            self._dispatcher,
            ssl=tls,
            metrics=self.metrics,
        ).run()

    def _follow_link(self) -> None:
        """Live-state listener: note when the Cloud refuses or accepts the credentials."""
        state = self.live.link.state
        if state == "unauthorized" and not self._link_refused.is_set():
            self._link_refused.set()
            self._link_accepted.clear()
        elif state == "connected" and not self._link_accepted.is_set():
            self._link_accepted.set()
            self._link_refused.clear()

    async def _gated_tunnel(self, creds: Credentials) -> None:
        """The tunnel, stopped while the Cloud refuses the credentials (contract section 2).

        A revoked hub must not go on serving the Hub application to the Cloud
        through frps; once the link is accepted again the tunnel starts anew.
        """
        while True:
            if self._link_refused.is_set():
                log.warning("the Cloud refuses this hub's credentials; tunnel stopped")
                self.live.set_tunnel("stopped", pid=None, last_error=TUNNEL_HELD)
                await self._link_accepted.wait()
                log.info("the Cloud accepts this hub's credentials again; starting the tunnel")
            async with asyncio.TaskGroup() as group:
                tunnel = group.create_task(self._run_tunnel(creds))
                refused = group.create_task(self._link_refused.wait())
                await asyncio.wait({tunnel, refused}, return_when=asyncio.FIRST_COMPLETED)
                # The tunnel only ends by raising; the group then hands that on.
                refused.cancel()
                tunnel.cancel()

    async def _run_tunnel(self, creds: Credentials) -> None:
        # frpc's SIGTERM grace shortened so that reaping it fits the shutdown deadline.
        supervisor = TunnelSupervisor(
            self.settings, creds, self.live, grace=TUNNEL_STOP_GRACE, metrics=self.metrics
        )
        await supervisor.run()

    async def _run_backup(self, requested_by: str) -> BackupCompleted | BackupFailed:
        """The dispatcher's BackupRunner: back up, upload, answer (never raises)."""
        # Imported at the first request: zstd, age and the REST client stay out of an
        # idle daemon's memory.
        from hublink.backup.service import BackupService
        from hublink.cloud.client import make_session

        if self._backups is None:
            self._session = make_session(self.settings)
            self._backups = BackupService(self.settings, self.creds, self._session)
        # Re-registration may have changed them since the service was made.
        self._backups.creds = self.creds
        return await self._backups.run_requested(requested_by)

    async def _watch_credentials(self) -> None:
        """Poll credentials.toml; a re-registration restarts link and tunnel with the new ones."""
        while True:
            await asyncio.sleep(CREDENTIALS_POLL)
            await self._reread_credentials()

    async def _reread_credentials(self) -> None:
        """Take up credentials.toml if it changed: new credentials, or none (``unregister``).

        Before every status answer too: ``hublink status`` right after a
        ``hublink register`` in another shell already sees the new hub.
        """
        if not self._creds_file.changed():  # one stat(): no worker thread for that
            return
        changed, creds = await asyncio.to_thread(self._creds_file.reread, self.creds)
        if not changed:
            return
        # Taken first, so that the line saying so already carries the new hub_id.
        self._take(creds)
        if creds is None:
            hint = self._registration_hint()
            log.warning("credentials.toml was removed; waiting for a registration", hint=hint)
        else:
            log.info("credentials.toml changed", slug=creds.slug)

    def adopt(self, creds: Credentials) -> None:
        """Run with ``creds`` (just saved by a registration in this process) from now on."""
        self._creds_file.seen()  # the watcher must not report this process's own write
        self._take(creds)
        log.info("registered; starting the link", slug=creds.slug)

    def _take(self, creds: Credentials | None) -> None:
        set_hub_id(str(creds.hub_id) if creds else None)
        if (
            creds is not None
            and self._store is not None
            and (self.creds is None or creds.hub_id != self.creds.hub_id)
        ):
            # A new hub: what the Cloud told the old one (revoked users, its
            # last backup, updates) is not this hub's news.
            self._store.bind_hub(str(creds.hub_id))
        self.creds = creds
        self._creds_changed.set()
        self._publish_status()

    # --- signals and status -----------------------------------------------------

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("signal received; shutting down", signal=signal.Signals(signum).name)
            self._stop.set()
        else:
            log.warning("second signal; forcing exit", signal=signal.Signals(signum).name)
            self._force()

    def _force(self) -> None:
        """Cancel everything now; the deadline or a second signal got here."""
        if self.forced:
            return
        self.forced = True
        self._stop.set()
        # Every task, not only ours: a TaskGroup that is already cancelling absorbs a
        # second cancel, so the leaves (the link's close handshake, hooks) are hit directly.
        current = asyncio.current_task()
        for task in asyncio.all_tasks():
            if task is not self._main_task and task is not current:
                task.cancel()

    def _publish_status(self) -> None:
        line = WAITING if self.creds is None else self.live.summary()
        if line != self._last_status_line and self._notifier is not None:
            self._last_status_line = line
            self._notifier.status(line)

    async def status(self) -> StatusReport:
        """The contract's status object for ``GET /v1/status``."""

        assert self._outbox is not None and self._store is not None
        await self._reread_credentials()
        return build_status(
            self.settings,
            self.creds,
            live=self.live,
            pid=os.getpid(),
            outbox=await self._outbox.counts(),
            snapshot=await self._store.asnapshot(),
            web=self._servers.page.report(),
            next_backup_at=self._scheduler.next_at if self._scheduler is not None else None,
            metrics_error=self._servers.metrics_error,
        )

    # --- shutdown ---------------------------------------------------------------

    async def shutdown(self) -> None:
        """Release what startup took, in reverse order; safe after a partial startup."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await self._servers.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._outbox is not None:
            await self._outbox.close()
            self._outbox = None
        if self._store is not None:
            # Writes recorded state that is still batched.
            await self._store.aclose()
            self._store = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        log.info("hublink daemon stopped", forced=self.forced)
        set_hub_id(None)
