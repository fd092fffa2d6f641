"""What people and the Hub application ask of the running daemon, one path each.

The control API (contract section 8) and the local page (section 9) call the
same :class:`DaemonActions`: register, back up now, install a recorded plugin
update, run the checks, and read the status. Registering is
:func:`hublink.enroll.enroll`, the function ``hublink register`` runs too;
backing up is the dispatcher's, as for a Cloud ``backup_request``; installing
runs the ``install_plugin_update`` hook (section 6) as a dispatcher task.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import structlog

from hublink.config import INSTALL_PLUGIN_UPDATE, Settings
from hublink.control.register import RegisterRequest
from hublink.errors import NotRegisteredError

if TYPE_CHECKING:
    from hublink.credentials import Credentials
    from hublink.link.dispatch import Dispatcher
    from hublink.link.notices import PluginUpdate, StateStore
    from hublink.statusreport import StatusReport
    from hublink.web import PageActions, Registered, Registration

log = structlog.get_logger(__name__)

#: ``requested_by`` of a backup asked for on this box (the page's button or
#: ``POST /v1/backup``); the Cloud's own requests carry the owner's email.
LOCAL_REQUESTER = "local"
#: The fields of a recorded update that make up the ``plugin_update_available``
#: message on the install hook's stdin.
_UPDATE_FIELDS = ("plugin_id", "current_version", "new_version", "download_url")


class DaemonActions:
    """The daemon's services behind the control API and the page.

    Args:
        settings: the daemon's settings.
        status: the status object of ``GET /v1/status``.
        credentials: the credentials the daemon runs with (None: waiting for a registration).
        adopt: hand new credentials to the daemon, which starts (or restarts)
            its link and tunnel with them at once.
        dispatcher: owns backups and hooks as tasks.
        notices: the recorded plugin updates.
        backup_running: whether a backup runs in the daemon right now.
        config_path: the config file, for doctor's ``config`` check.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        status: Callable[[], Awaitable[StatusReport]],
        credentials: Callable[[], Credentials | None],
        adopt: Callable[[Credentials], None],
        dispatcher: Dispatcher,
        notices: StateStore,
        backup_running: Callable[[], bool],
        config_path: Path | None = None,
    ) -> None:
        self.settings = settings
        self.status = status
        self._credentials = credentials
        self._adopt = adopt
        self._dispatcher = dispatcher
        self._notices = notices
        self._backup_running = backup_running
        self._backup_asked = False
        self.config_path = config_path

    @property
    def install_hook_configured(self) -> bool:
        """Whether ``hooks.install_plugin_update`` is set (else the Install buttons hide)."""
        return INSTALL_PLUGIN_UPDATE in self.settings.hooks

    async def register(self, wanted: RegisterRequest) -> Credentials:
        """Enroll with :func:`hublink.enroll.enroll`, then run the link and tunnel with it.

        ``None`` name or address take ``hub.name`` (else the host name) and
        ``hub.address``. Two registrations at once: the second waits for the
        first and is refused (``AlreadyRegisteredError``) unless ``force``.

        Raises:
            InvalidFields, AlreadyRegisteredError, CredentialsError,
            CloudAuthError, CloudUnreachableError, CloudResponseError: as ``enroll``.
        """
        # Imported at the first registration: pyjwt, cryptography and the age
        # library stay out of the daemon's memory until then (tests/test_imports.py).
        from hublink.enroll import enroll, hub_address, hub_name

        creds = await enroll(
            self.settings,
            email=wanted.email,
            password=wanted.password,
            name=hub_name(self.settings, wanted.name),
            address=hub_address(self.settings, wanted.address),
            force=wanted.force,
            progress=_log_progress,
        )
        self._adopt(creds)
        return creds

    async def backup(self) -> bool:
        """Start a backup and upload in the background, as a ``backup_request`` would.

        Its outcome shows in ``last_backup`` and reaches the Cloud as
        ``backup_completed`` or ``backup_failed`` with ``requested_by: "local"``.
        Returns False when a backup runs already.

        Raises:
            NotRegisteredError: there is nowhere to upload to yet.
        """
        if self._credentials() is None:
            raise NotRegisteredError(
                "this hub is not registered, so there is nowhere to upload a backup",
                hint="register it first (the page, POST /v1/register or hublink register)",
            )
        if self._backup_asked or self._backup_running():
            return False
        # Set at once: a second click before the task starts must not start a second backup.
        self._backup_asked = True

        async def back_up() -> None:
            try:
                await self._dispatcher.back_up(LOCAL_REQUESTER)
            finally:
                self._backup_asked = False

        log.info("backup asked for on this box")
        self._dispatcher.start("backup", back_up)
        return True

    async def install_update(self, plugin_id: str) -> bool:
        """Run the ``install_plugin_update`` hook with the recorded update on its stdin.

        Returns False when no update is recorded for ``plugin_id`` or no such
        hook is configured. The update stays listed until the Hub application
        queues ``plugin_installed`` for it (contract section 6).
        """
        if not self.install_hook_configured:
            return False
        snapshot = await self._notices.asnapshot()
        update = next((u for u in snapshot["plugin_updates"] if u["plugin_id"] == plugin_id), None)
        if update is None:
            return False
        payload = _install_message(update)
        log.info(
            "installing a plugin update",
            plugin_id=update["plugin_id"],
            new_version=update["new_version"],
        )
        hooks = self._dispatcher.hooks
        self._dispatcher.start(
            f"hook {INSTALL_PLUGIN_UPDATE}", lambda: hooks.run(INSTALL_PLUGIN_UPDATE, payload)
        )
        return True

    async def doctor(self) -> dict[str, Any]:
        """The ``doctor --json`` object, the checks run by the daemon itself."""
        # Imported when asked: the checks' modules are not part of an idle daemon.
        from hublink.doctor import run_checks

        report = await run_checks(self.settings, config_path=self.config_path)
        return report.as_json()

    # --- the two doors ------------------------------------------------------------

    def page(self) -> PageActions:
        """These services as the page calls them (its registrations never force)."""
        # hublink.web loads only when the page is on (its idle cost is measured).
        from hublink.web import PageActions, Registered

        async def status() -> dict[str, Any]:
            return cast("dict[str, Any]", await self.status())

        async def register(form: Registration) -> Registered:
            wanted = RegisterRequest(form.email, form.password, form.name, form.address)
            creds = await self.register(wanted)
            return Registered(hub_id=str(creds.hub_id), slug=creds.slug)

        return PageActions(
            status=status,
            register=register,
            backup=self.backup,
            install_update=self.install_update,
            doctor=self.doctor,
            install_hook_configured=self.install_hook_configured,
        )


def _install_message(update: PluginUpdate) -> bytes:
    """The recorded ``plugin_update_available`` message, as JSON for the hook's stdin."""
    message: dict[str, Any] = {"type": "plugin_update_available"}
    for field in _UPDATE_FIELDS:
        if update.get(field) is not None:
            message[field] = update[field]  # type: ignore[literal-required]
    # ASCII escapes: any string JSON can carry (a lone surrogate too) survives the pipe.
    return json.dumps(message).encode()


def _log_progress(note: str) -> None:
    """Enrollment's steps, which ``hublink register`` prints, go to the daemon's log."""
    log.info("registration: " + note)
