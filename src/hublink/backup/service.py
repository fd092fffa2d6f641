"""Backups on request: the pipeline off the event loop, the streamed upload, one at a time.

:class:`BackupService` is what the daemon's dispatcher calls for a
``backup_request`` (its :meth:`~BackupService.run_requested` is the
``BackupRunner``) and what ``hublink backup`` runs. Everything blocking
(SQLite, zstd, age, hashing, fsync) happens in a worker thread, so heartbeats
keep flowing during a backup of any size; the upload streams the encrypted
file from disk in chunks.

Upload (contract section 1): ``POST {cloud}/api/hubs/{hub_id}/backups/`` with
the hub's tunnel token as bearer, ``X-Backup-Filename`` and ``X-Backup-Sha256``.
Transient failures retry the whole upload (:data:`UPLOAD_RETRIES` times, with
backoff, through the REST client's one transient classifier); 401/403 mean
the Cloud no longer accepts this hub's credential.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeVar

import aiohttp
import structlog
from pydantic import BaseModel, ConfigDict

from hublink.backup import pipeline
from hublink.backup.keys import ensure_identity, owner_recipients
from hublink.backup.snapshot import DEFAULT_LOCK_TIMEOUT, Abort, database_path
from hublink.cloud import CloudClient, make_session, parse_reply
from hublink.config import Settings
from hublink.credentials import Credentials, CredentialStore
from hublink.errors import BackupError, CloudAuthError, HublinkError, NotRegisteredError
from hublink.link.messages import BACKUP_ALREADY_RUNNING, BackupCompleted, BackupFailed, Ident
from hublink.link.notices import StateStore
from hublink.logs import mask_text, register_secret_str
from hublink.retry import AUTH_REFUSED_STATUSES, RetryPolicy

log = structlog.get_logger(__name__)

UPLOAD_PATH = "/api/hubs/{hub_id}/backups/"
#: A failed upload is tried again this many times (so at most 4 attempts).
UPLOAD_RETRIES = 3
#: An upload averaging less than this is abandoned (and retried): a stalled
#: connection must not hold the one backup slot forever.
MIN_UPLOAD_RATE = 50_000  # bytes per second
UPLOAD_BASE_TIMEOUT = 300.0
#: Backoff between upload attempts; a Retry-After from the Cloud wins if longer.
UPLOAD_POLICY = RetryPolicy(
    attempts=1 + UPLOAD_RETRIES,
    deadline=None,
    backoff_base=2.0,
    backoff_max=60.0,
    request_timeout=None,
    read_timeout=120.0,
)
#: Every log line of a backup says ``task=backup`` (the daemon's other tasks
#: name themselves the same way), the worker thread's lines included.
LOG_TASK = "backup"
#: ``requested_by`` of a backup taken with ``hublink backup``.
CLI_REQUESTER = "hublink backup"
_T = TypeVar("_T")


@dataclass(frozen=True)
class BackupOutcome:
    """A finished backup: what ``backup_completed`` and ``hublink backup`` report."""

    filename: str
    size: int
    sha256: str
    backup_id: str | None = None  #: from the Cloud; None for a backup written to a file
    path: Path | None = None  #: where it was written, for ``--output``


def completed(outcome: BackupOutcome, requested_by: str) -> BackupCompleted:
    """The ``backup_completed`` answer for an uploaded backup."""
    assert outcome.backup_id is not None  # an upload always yields one
    return BackupCompleted(
        backup_id=outcome.backup_id,
        filename=outcome.filename,
        size=outcome.size,
        sha256=outcome.sha256,
        requested_by=requested_by,
    )


class _Uploaded(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    backup_id: Ident


class BackupService:
    """Takes backups one at a time and uploads them to the Cloud.

    Args:
        settings: ``backup.*``, ``state_dir`` and ``cloud_url``.
        creds: the hub's identity and token (``None``: only ``--output`` works).
        session: the process's one HTTP session (unused for ``--output``).
        upload_policy: retries and timeouts of the upload; tests shrink them.
        lock_timeout: how long the snapshot waits for a locked database.
    """

    def __init__(
        self,
        settings: Settings,
        creds: Credentials | None,
        session: aiohttp.ClientSession | None,
        *,
        upload_policy: RetryPolicy = UPLOAD_POLICY,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        self.settings = settings
        self.creds = creds
        self.session = session
        self.upload_policy = upload_policy
        self.lock_timeout = lock_timeout
        self._running = False
        # The fleet token is this process's secret too: a Cloud error body
        # that echoes it must not carry it to the log, the CLI or backup_failed.
        register_secret_str(settings.tunnel.server_token)

    @property
    def running(self) -> bool:
        """Whether a backup is in progress in this process."""
        return self._running

    async def run_requested(self, requested_by: str) -> BackupCompleted | BackupFailed:
        """Answer a ``backup_request``: never raises, except ``CancelledError``."""
        with structlog.contextvars.bound_contextvars(task=LOG_TASK):
            return await self._answer(requested_by)

    async def _answer(self, requested_by: str) -> BackupCompleted | BackupFailed:
        try:
            outcome = await self.back_up()
        except HublinkError as err:
            log.warning("backup failed", error=err.message, requested_by=requested_by)
            return BackupFailed(error=err.message, requested_by=requested_by)
        except Exception as err:
            # The Cloud must get an answer whatever broke; the traceback goes to the log.
            log.exception("backup failed unexpectedly", requested_by=requested_by)
            reason = mask_text(f"unexpected error: {type(err).__name__}: {err}")
            return BackupFailed(error=reason[:500], requested_by=requested_by)
        return completed(outcome, requested_by)

    async def back_up(self, output: Path | None = None, *, replace: bool = False) -> BackupOutcome:
        """Take a backup now: upload it, or write it to ``output`` (atomically, 0600).

        An existing ``output`` is replaced only with ``replace``; a backup
        stopped halfway leaves no file behind, neither there nor in the state dir.

        Raises:
            BackupError: a backup is already running, ``output`` exists (without
                ``replace``) or is a folder, or the pipeline failed.
            ConfigError: ``backup.database`` unset or a recipient invalid.
            NotRegisteredError: uploading without credentials.
            CloudAuthError, CloudUnreachableError, CloudResponseError: the upload failed.
        """
        if self._running:
            raise BackupError(BACKUP_ALREADY_RUNNING)
        if output is not None:
            pipeline.check_output(output, replace=replace)
        self._running = True
        try:
            with (
                structlog.contextvars.bound_contextvars(task=LOG_TASK),
                pipeline.backup_lock(self.settings.state_dir),
            ):
                return await self._back_up(output, replace=replace)
        finally:
            self._running = False

    async def _back_up(self, output: Path | None, *, replace: bool) -> BackupOutcome:
        creds = None
        if output is None:
            creds = self._require_upload_setup()
            filename, dest_dir = pipeline.backup_filename(creds.slug), self.settings.state_dir
        else:
            filename, dest_dir = output.name, output.parent
        sealed = await _in_thread(partial(self._seal, dest_dir))
        try:
            if output is not None:
                await asyncio.to_thread(pipeline.install, sealed, output, replace=replace)
                log.info("backup written", path=str(output), size=sealed.size)
                return BackupOutcome(filename, sealed.size, sealed.sha256, path=output)
            assert creds is not None and self.session is not None
            client = CloudClient(self.session, self.settings, policy=self.upload_policy)
            backup_id = await upload_backup(
                client, creds, sealed, filename, policy=self.upload_policy
            )
        finally:
            await asyncio.to_thread(pipeline.discard, sealed.path)
        log.info("backup uploaded", backup_id=backup_id, filename=filename, size=sealed.size)
        return BackupOutcome(filename, sealed.size, sealed.sha256, backup_id=backup_id)

    def _require_upload_setup(self) -> Credentials:
        if self.creds is None or self.session is None:
            raise NotRegisteredError(
                "this hub is not registered, so there is nowhere to upload a backup",
                hint="run `hublink register`, or write the backup to a file with --output",
            )
        return self.creds

    def _seal(self, dest_dir: Path, *, abort: Abort) -> pipeline.SealedBackup:
        if not dest_dir.is_dir():
            raise BackupError(f"the folder {dest_dir} does not exist")
        # Under the backup lock: what a crashed backup left behind is nobody's now.
        pipeline.remove_stale_temp_files(self.settings.state_dir)
        database = database_path(self.settings.backup.database)
        owners = owner_recipients(self.settings)  # a config error comes before any file is made
        identity = ensure_identity(self.settings.state_dir)
        recipients = [identity.to_public(), *owners]
        return pipeline.write_encrypted_backup(
            database,
            work_dir=self.settings.state_dir,
            dest_dir=dest_dir,
            recipients=recipients,
            level=self.settings.backup.zstd_level,
            lock_timeout=self.lock_timeout,
            abort=abort,
        )


async def _in_thread(work: Callable[..., _T]) -> _T:
    """Run ``work(abort=...)`` in a worker thread; cancelling the caller stops the thread too."""
    abort = Abort()
    context = contextvars.copy_context()  # keeps the log context, as asyncio.to_thread does
    future = asyncio.get_running_loop().run_in_executor(
        None, partial(context.run, work, abort=abort)
    )
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        abort.set()
        # The thread gives up at its next chunk and removes its temporary files.
        # Waiting for that keeps the backup lock held until it is done, so no
        # new backup overlaps it; a second cancellation ends the wait at once.
        future.add_done_callback(_ignore_outcome)
        await asyncio.wait([future])
        raise


def _ignore_outcome(future: asyncio.Future[Any]) -> None:
    # Nobody awaits a cancelled backup's result; reading it keeps asyncio
    # from warning that an exception (BackupCancelled) was never retrieved.
    if not future.cancelled():
        future.exception()


async def upload_backup(
    client: CloudClient,
    creds: Credentials,
    sealed: pipeline.SealedBackup,
    filename: str,
    *,
    policy: RetryPolicy = UPLOAD_POLICY,
) -> str:
    """Stream ``sealed`` to the Cloud; the ``backup_id`` it answers.

    Raises:
        CloudAuthError: 401/403, the Cloud no longer accepts this hub's credential.
        CloudUnreachableError: still failing after :data:`UPLOAD_RETRIES` retries.
        CloudResponseError: any other refusal, or an answer without ``backup_id``.
    """
    headers = {
        "Content-Type": "application/octet-stream",
        "X-Backup-Filename": filename,
        "X-Backup-Sha256": sealed.sha256,
    }
    timeout = UPLOAD_BASE_TIMEOUT + sealed.size / MIN_UPLOAD_RATE
    opened: list[IO[bytes]] = []
    try:
        reply = await client.request(
            "POST",
            UPLOAD_PATH.format(hub_id=creds.hub_id),
            what="upload the backup",
            body=partial(_file_body, sealed.path, opened),
            headers=headers,
            bearer=creds.tunnel_token,
            policy=_with_timeout(policy, timeout),
        )
    finally:
        for handle in opened:
            handle.close()
    if reply.status in AUTH_REFUSED_STATUSES:
        raise CloudAuthError(
            f"the Cloud rejected this hub's credential (HTTP {reply.status}"
            + (f": {reply.error_message()})" if reply.error_message() else ")"),
            hint="the hub may have been revoked; run `hublink register --force` to enroll it again",
            status=reply.status,
        )
    return parse_reply(reply, _Uploaded, what="upload the backup").backup_id


def _file_body(path: Path, opened: list[IO[bytes]]) -> Any:
    # A fresh file object per attempt, so a retry uploads from the first byte.
    # aiohttp reads it in its executor and sends Content-Length from its size
    # (a Django Cloud behind WSGI cannot read a chunked request body).
    handle = path.open("rb")
    opened.append(handle)
    return aiohttp.BufferedReaderPayload(
        handle, content_type="application/octet-stream", filename=None
    )


def _with_timeout(policy: RetryPolicy, total: float) -> RetryPolicy:
    if policy.request_timeout is not None:
        return policy  # the caller chose one (tests)
    return replace(policy, request_timeout=total)


async def back_up_now(
    settings: Settings,
    *,
    output: Path | None = None,
    replace: bool = False,
    requested_by: str = CLI_REQUESTER,
) -> BackupOutcome:
    """``hublink backup``: one backup, uploaded (and remembered for ``status``) or written.

    ``replace``: ``--force``, an existing ``output`` may be replaced.

    Raises:
        HublinkError: as :meth:`BackupService.back_up`; the CLI maps it to an exit code.
    """
    if output is not None:
        return await BackupService(settings, None, None).back_up(output, replace=replace)
    creds = await asyncio.to_thread(CredentialStore(settings.state_dir).load)
    async with make_session(settings) as session:
        try:
            outcome = await BackupService(settings, creds, session).back_up()
        except HublinkError as err:
            failed = BackupFailed(error=err.message, requested_by=requested_by)
            await asyncio.to_thread(_remember, settings, creds, failed)
            raise
    await asyncio.to_thread(_remember, settings, creds, completed(outcome, requested_by))
    return outcome


def _remember(
    settings: Settings, creds: Credentials, result: BackupCompleted | BackupFailed
) -> None:
    # The daemon's dispatcher records the backups it runs; this is for
    # `hublink backup`, so that `hublink status` shows the last one either way.
    # The notices of this hub: a record made for it clears another hub's (re-registration).
    store = StateStore.load(
        settings.state_dir,
        hub_id=str(creds.hub_id),
        max_revoked_users=settings.notices.max_revoked_users,
    )
    try:
        store.record_backup(result)
    finally:
        store.close()
