"""What hublink does with each Cloud→Hub message (contract section 2).

Handlers are plain functions registered by type (``@HANDLERS.register``). The
link calls :meth:`Dispatcher.dispatch` for every valid frame; it records what
needs recording at once and hands slow work (hooks, backups) to tasks owned
by :meth:`Dispatcher.run`. A handler that raises is logged and forgotten: it
never ends the link's receive loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import structlog

from hublink.config import Settings
from hublink.link.hooks import HookRunner
from hublink.link.messages import (
    BACKUP_ALREADY_RUNNING,
    BackupCompleted,
    BackupFailed,
    BackupRequest,
    PluginUpdateAvailable,
    UserRevoked,
    excerpt,
)
from hublink.link.notices import StateStore
from hublink.link.outbox import AsyncOutbox
from hublink.metrics import Metrics

log = structlog.get_logger(__name__)

InboundMessage = PluginUpdateAvailable | UserRevoked | BackupRequest
#: Backs up and uploads; the argument is ``requested_by``. Provided by the backup module.
BackupRunner = Callable[[str], Awaitable[BackupCompleted | BackupFailed]]
Handler = Callable[["Dispatcher", Any], None]
Job = Callable[[], Coroutine[Any, Any, object]]
H = TypeVar("H", bound=Handler)

NO_BACKUP_RUNNER = "backups are not available on this hub (no backup runner configured)"


class HandlerRegistry:
    """Message type → handler function."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, message_type: str) -> Callable[[H], H]:
        """Decorator: ``func`` handles ``message_type``."""

        def decorator(func: H) -> H:
            self._handlers[message_type] = func
            return func

        return decorator

    def get(self, message_type: str) -> Handler | None:
        """The handler of ``message_type``, if any."""
        return self._handlers.get(message_type)


HANDLERS = HandlerRegistry()


class Dispatcher:
    """Routes inbound messages to handlers and owns the tasks they start."""

    def __init__(
        self,
        settings: Settings,
        store: StateStore,
        outbox: AsyncOutbox,
        backup: BackupRunner | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.outbox = outbox
        self.backup = backup
        #: Backups and hook runs are counted here (a private set when not given).
        self.metrics = metrics if metrics is not None else Metrics()
        self.hooks = HookRunner(settings, metrics=self.metrics)
        self._group: asyncio.TaskGroup | None = None
        self._backlog: list[tuple[str, Job]] = []
        self._active = 0

    @property
    def active_jobs(self) -> int:
        """Hooks and backups started and not finished yet."""
        return self._active + len(self._backlog)

    async def run(self) -> None:
        """Own every hook and backup task until cancelled; then cancel and await them."""
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                backlog, self._backlog = self._backlog, []
                for name, job in backlog:
                    group.create_task(self._guarded(name, job))
                # Runs until the daemon cancels it; the TaskGroup then cancels
                # and awaits whatever is still running.
                await asyncio.Event().wait()
        finally:
            # Jobs dispatched from now on wait in the backlog for a new run(),
            # or are dropped with it: they are not coroutines yet.
            self._group = None
            # Background processes of hooks that exited must not outlive the daemon.
            self.hooks.kill_leftovers()

    def dispatch(self, message: InboundMessage) -> None:
        """Handle ``message`` now; never raises for a handler's failure."""
        handler = HANDLERS.get(message.type)
        if handler is None:
            log.warning("no handler for message; ignored", message_type=message.type)
            return
        try:
            handler(self, message)
        except Exception:
            # One bad message must never end the link's receive loop.
            log.exception("handler failed; message dropped", message_type=message.type)

    def start(self, name: str, job: Job) -> None:
        """Run ``job()`` as a task owned by :meth:`run` (queued until it starts)."""
        if self._group is None:
            self._backlog.append((name, job))
            return
        task = self._guarded(name, job)
        try:
            self._group.create_task(task)
        except RuntimeError:
            # The group is shutting down (run() was cancelled a moment ago).
            task.close()
            self._backlog.append((name, job))

    def run_hook(self, message: InboundMessage) -> None:
        """Start the configured hook of ``message``'s type, if there is one."""
        if not self.hooks.command_for(message.type):
            return
        payload = message.hook_payload()
        self.start(f"hook {message.type}", lambda: self.hooks.run(message.type, payload))

    async def _guarded(self, name: str, job: Job) -> None:
        self._active += 1
        try:
            await job()
        except Exception:
            # A task failing inside the TaskGroup would cancel its siblings
            # and end run(); log it instead.
            log.exception("job failed", job=name)
        finally:
            self._active -= 1

    async def back_up(self, requested_by: str) -> None:
        """Run the backup, queue its answer in the outbox, remember the result."""
        # No lock here: the runner refuses a second backup itself (across
        # processes, `hublink backup` included) and answers at once, which is
        # what the Cloud should hear rather than a late second backup.
        started = time.monotonic()
        result = await self._run_backup(requested_by)
        # A refusal says nothing about the last backup: the one running will
        # record its own result when it ends.
        if not (isinstance(result, BackupFailed) and result.error == BACKUP_ALREADY_RUNNING):
            self.store.record_backup(result)
            completed = isinstance(result, BackupCompleted)
            self.metrics.backup_finished(completed, time.monotonic() - started)
        # The Cloud waits for this answer: held for the open link if it cannot be queued.
        await self.outbox.put_or_hold(result)

    async def _run_backup(self, requested_by: str) -> BackupCompleted | BackupFailed:
        if self.backup is None:
            log.warning("backup requested but not available", requested_by=requested_by)
            return BackupFailed(error=NO_BACKUP_RUNNER, requested_by=requested_by)
        log.info("backup requested", requested_by=requested_by)
        try:
            result = await self.backup(requested_by)
        except Exception as err:
            # The runner should answer BackupFailed itself; anything it lets
            # escape still deserves an answer to the Cloud.
            log.exception("backup failed", requested_by=requested_by)
            reason = excerpt(str(err) or type(err).__name__, 500)
            return BackupFailed(error=reason, requested_by=requested_by)
        log.info("backup finished", result=result.type, requested_by=requested_by)
        return result


@HANDLERS.register("plugin_update_available")
def _plugin_update_available(dispatcher: Dispatcher, message: PluginUpdateAvailable) -> None:
    dispatcher.store.record_plugin_update(message)
    log.info(
        "plugin update available",
        plugin_id=message.plugin_id,
        current_version=message.current_version,
        new_version=message.new_version,
    )
    dispatcher.run_hook(message)


@HANDLERS.register("user_revoked")
def _user_revoked(dispatcher: Dispatcher, message: UserRevoked) -> None:
    dispatcher.store.record_user_revoked(message)
    log.info("user revoked", user_id=message.user_id, reason=message.reason)
    dispatcher.run_hook(message)


@HANDLERS.register("backup_request")
def _backup_request(dispatcher: Dispatcher, message: BackupRequest) -> None:
    dispatcher.start("backup", lambda: dispatcher.back_up(message.requested_by))
    dispatcher.run_hook(message)
