"""Enrollment: log in, verify, register, save; the owner's JWTs never leave memory.

:func:`enroll` is the one registration, whichever door it comes through:
``hublink register``, ``POST /v1/register`` on the control socket, and the
page's setup form (both through the daemon). The whole flow runs under the
credential store's lock, so two registrations cannot interleave, in one
process or in two: the second one waits, then finds the credentials the
first one saved and refuses (unless ``force``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import unicodedata
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import TypeVar

import aiohttp
import structlog
from pydantic import SecretStr

from hublink.backup.keys import NO_OWNER_RECIPIENT_REMINDER, ensure_identity, has_owner_recipient
from hublink.backup.schedule import draw_delay
from hublink.cloud import (
    CloudClient,
    Registration,
    describe_clock_skew,
    make_session,
    verify_access_token,
)
from hublink.config import Settings
from hublink.credentials import Credentials, CredentialStore
from hublink.errors import (
    AlreadyRegisteredError,
    CloudResponseError,
    CredentialsError,
    HublinkError,
    InvalidFields,
    SessionExpiredError,
)
from hublink.retry import DEFAULT_POLICY, RetryPolicy
from hublink.statedir import access_denied

log = structlog.get_logger(__name__)

Progress = Callable[[str], None]
T = TypeVar("T")

#: Each registration field's longest value, in characters. The page's form
#: keeps within these (tests/web hold it to that).
FIELD_LIMITS = {"email": 254, "password": 1024, "name": 100, "address": 300}


def hub_name(settings: Settings, given: str | None) -> str:
    """The name to register: ``given``, else ``hub.name``, else this box's host name."""
    return (given or "").strip() or settings.hub.name.strip() or socket.gethostname()


def hub_address(settings: Settings, given: str | None) -> str:
    """The address to register: ``given`` (even empty), else ``hub.address``."""
    return (given if given is not None else settings.hub.address).strip()


def registration_problems(*, email: str, password: SecretStr, name: str, address: str) -> list[str]:
    """What is wrong with the registration's fields, one ``"field: what"`` each; the values
    themselves are never quoted (the password least of all)."""
    problems = []
    fields = {"email": email, "password": password.get_secret_value(), "name": name}
    fields["address"] = address
    for field, value in fields.items():
        if field != "address" and not value.strip():
            problems.append(f"{field}: required")
        elif len(value) > FIELD_LIMITS[field]:
            problems.append(f"{field}: longer than {FIELD_LIMITS[field]} characters")
        elif any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
            # Control characters and lone surrogates: no Cloud wants them, and a
            # lone surrogate cannot even be written to credentials.toml (UTF-8).
            problems.append(f"{field}: contains control characters")
    return problems


async def enroll(
    settings: Settings,
    *,
    email: str,
    password: SecretStr,
    name: str,
    address: str,
    force: bool,
    progress: Progress,
    session: aiohttp.ClientSession | None = None,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> Credentials:
    """Enroll this hub with the Cloud and save its credentials atomically (0600).

    Existing credentials are refused before the Cloud is contacted unless
    ``force``; on any failure nothing is written. ``session`` is the process's
    session when the caller has one; otherwise one is made for this call.
    ``name`` and ``address`` are used as given (see :func:`hub_name` and
    :func:`hub_address` for the defaults); the name is kept in the credentials.

    Raises:
        InvalidFields: a field is empty, too long or holds control characters.
        AlreadyRegisteredError: credentials exist and ``force`` is false.
        CredentialsError: existing credentials are unreadable (without
            ``force``), or the new ones cannot be written.
        CloudAuthError, CloudUnreachableError, CloudResponseError: from the Cloud.
    """
    name, address = name.strip(), address.strip()
    problems = registration_problems(email=email, password=password, name=name, address=address)
    if problems:
        raise InvalidFields(
            "the registration cannot be sent:\n  " + "\n  ".join(problems),
            problems=problems,
            hint="fix those fields (hub.name and hub.address are the defaults for name "
            "and address)",
        )
    store = CredentialStore(settings.state_dir)
    async with _locked(store):
        ensure_replaceable(store, force=force, progress=progress)
        async with _session(settings, session, policy) as http:
            creds = await _enroll_locked(
                CloudClient(http, settings, policy=policy),
                store,
                email=email,
                password=password,
                name=name,
                address=address,
                progress=progress,
            )
    if not has_owner_recipient(settings):
        progress(f"reminder: {NO_OWNER_RECIPIENT_REMINDER}")
    return creds


def ensure_replaceable(store: CredentialStore, *, force: bool, progress: Progress) -> None:
    """Refuse to replace credentials unless ``force``: a refusal must leave no orphan hub.

    Raises:
        AlreadyRegisteredError: valid credentials exist.
        CredentialsError: the existing file is unreadable; it is never
            overwritten silently.
    """
    if not store.exists():
        return
    if force:
        with contextlib.suppress(CredentialsError):
            old = store.load()
            progress(f"replacing the credentials of hub {old.slug} ({old.hub_id})")
        return
    old = store.load()
    raise AlreadyRegisteredError(
        f"this hub is already registered as {old.slug} ({old.hub_id}) with {old.cloud_url}",
        hint="use `hublink register --force` to enroll it again (the Cloud keeps the old hub), "
        "or `hublink unregister` first",
    )


async def _enroll_locked(
    client: CloudClient,
    store: CredentialStore,
    *,
    email: str,
    password: SecretStr,
    name: str,
    address: str,
    progress: Progress,
) -> Credentials:
    progress(f"logging in to {client.base_url} as {email}")
    tokens = await client.login(email, password)
    _warn_about_clock(client, progress)
    await _verify_token(client, tokens.access, progress)
    progress(f"registering hub {name!r}")
    try:
        registration = await client.register(tokens, name, address)
    except SessionExpiredError:
        # The refresh token was refused too: the contract says start over with login.
        progress(f"logging in again as {email}")
        tokens = await client.login(email, password)
        registration = await client.register(tokens, name, address)
    # The owner's JWTs are done with: drop them before anything touches the disk.
    del tokens
    creds = _credentials(registration, client, name)
    await _save(store, creds)
    progress(f"saved the credentials to {store.path}")
    log.info("hub registered", hub_id=str(creds.hub_id), slug=creds.slug)
    await _prepare_backups(store.state_dir, progress)
    return creds


async def _verify_token(client: CloudClient, access: SecretStr, progress: Progress) -> None:
    """Check the access token against the Cloud's public key, when the Cloud publishes one."""
    progress("verifying the Cloud's token")
    try:
        key = await client.public_key()
    except CloudResponseError as err:
        if err.status != HTTPStatus.NOT_FOUND:
            raise
        # The contract makes the check optional ("may be checked"): a Cloud on
        # stock SimpleJWT has no public-key endpoint. The key comes over the same
        # TLS channel as the token, so skipping it loses no protection.
        log.warning("the Cloud publishes no public key; token signature not checked")
        progress("warning: the Cloud publishes no public key; its token was not checked")
        return
    verify_access_token(access, key, now=client.server_now())


async def _prepare_backups(state_dir: Path, progress: Progress) -> None:
    # The backup identity ({state_dir}/backup-identity.txt) is created here, after the save.
    identity = await _after_save(
        ensure_identity, state_dir, progress, "cannot prepare the backup identity"
    )
    if identity is not None:
        log.info("backup identity ready", public_key=str(identity.to_public()))
    # Contract section 11: each hub's delay of its scheduled backups is drawn at registration.
    delay = await _after_save(
        draw_delay, state_dir, progress, "cannot save the backup schedule's delay"
    )
    if delay is not None:
        log.info("backup schedule delay drawn", fraction=round(delay.fraction, 4))


async def _after_save(
    step: Callable[[Path], T], state_dir: Path, progress: Progress, failure: str
) -> T | None:
    """``step(state_dir)`` in a thread; if it fails, a warning through ``progress`` and None."""
    # Registration has succeeded by now: a step after the save that fails is
    # reported but does not undo it (the first backup tries again).
    try:
        return await asyncio.to_thread(step, state_dir)
    except HublinkError as err:
        progress(f"warning: {failure}: {err.message}")
    except OSError as err:
        progress(f"warning: {failure}: {err.strerror or err}")
    return None


def _warn_about_clock(client: CloudClient, progress: Progress) -> None:
    warning = describe_clock_skew(client.clock_skew)
    if warning is not None:
        log.warning("local clock is off", skew_seconds=round(client.clock_skew or 0.0))
        progress(f"warning: {warning}")


def _credentials(registration: Registration, client: CloudClient, name: str) -> Credentials:
    # The Cloud's clock: a box without a real-time clock may think it is 1970.
    registered_at = datetime.fromtimestamp(client.server_now(), UTC)
    return Credentials(
        hub_id=registration.hub_id,
        slug=registration.slug,
        tunnel_port=registration.tunnel_port,
        tunnel_token=registration.tunnel_token,
        cloud_url=client.base_url,
        registered_at=registered_at,
        name=name,
    )


async def _save(store: CredentialStore, creds: Credentials) -> None:
    try:
        await asyncio.to_thread(store.save, creds)
    except PermissionError:
        raise access_denied(store.path, store.state_dir) from None
    except OSError as err:
        raise CredentialsError(
            f"could not write {store.path}: {err.strerror or err}; "
            "the previous file, if any, is unchanged",
            hint="free some disk space, or run as the user that owns state_dir "
            "(the Cloud has created the hub: run register again with --force)",
        ) from err


@contextlib.asynccontextmanager
async def _session(
    settings: Settings, borrowed: aiohttp.ClientSession | None, policy: RetryPolicy
) -> AsyncIterator[aiohttp.ClientSession]:
    """The caller's session if it has one, else one made (and closed) for this enrollment."""
    if borrowed is not None:
        yield borrowed
        return
    async with make_session(settings, policy=policy) as own:
        yield own


@contextlib.asynccontextmanager
async def _locked(store: CredentialStore) -> AsyncIterator[None]:
    """Hold the store's lock; waiting for it happens in a thread, not on the loop."""
    lock = store.locked()
    try:
        await asyncio.to_thread(lock.__enter__)
    except OSError as err:
        raise CredentialsError(
            f"cannot use the state directory {store.state_dir}: {err.strerror or err}",
            hint="run as the user that owns state_dir (e.g. with sudo), or set state_dir",
        ) from err
    try:
        yield
    finally:
        lock.__exit__(None, None, None)
