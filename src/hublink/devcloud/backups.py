"""Contract sections 1 and 7 from the Cloud's side: receiving a hub's backup upload."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import structlog
from aiohttp import StreamReader, web

from hublink.devcloud.http import bearer, fail
from hublink.devcloud.state import STATE_KEY
from hublink.devcloud.store import StoredBackup

log = structlog.get_logger(__name__)

CHUNK_SIZE = 1024 * 1024
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._+-]")
MAX_FILENAME = 200


async def upload(request: web.Request) -> web.Response:
    """``POST /api/hubs/{hub_id}/backups/``: store the streamed body, checked by its SHA-256."""
    cloud = request.app[STATE_KEY]
    token = bearer(request)
    hub = cloud.store.get_hub(cloud.normalize_id(request.match_info["hub_id"]) or "")
    if hub is None or not secrets.compare_digest(hub.tunnel_token.encode(), token.encode()):
        fail(403, "This hub credential is not valid for this hub")
    if hub.revoked:
        fail(403, "This hub has been revoked")
    filename = safe_filename(request.headers.get("X-Backup-Filename", ""))
    expected = request.headers.get("X-Backup-Sha256", "").strip().lower()
    if not _SHA256_HEX.match(expected):
        fail(400, "X-Backup-Sha256 must be the hex SHA-256 of the body (64 hex digits)")

    backup_id = str(uuid.uuid4())
    folder = cloud.data_dir / "backups" / hub.hub_id
    partial = folder / f".{backup_id}.part"
    size, actual = await receive(request.content, partial)
    if actual != expected:
        partial.unlink()
        fail(400, f"X-Backup-Sha256 does not match the uploaded bytes ({size} bytes received)")
    final = folder / filename
    if final.exists():
        final = folder / f"{backup_id}-{filename}"
    partial.rename(final)
    cloud.store.add_backup(
        StoredBackup(
            backup_id=backup_id,
            hub_id=hub.hub_id,
            filename=filename,
            path=final,
            size=size,
            sha256=actual,
            received_at=datetime.now(UTC),
        )
    )
    log.info("devcloud stored a backup", hub_id=hub.hub_id, backup_id=backup_id, size=size)
    return web.json_response({"backup_id": backup_id}, status=201)


def safe_filename(name: str) -> str:
    """A filename fit to store: no folders, no hidden files, tame characters.

    Raises:
        web.HTTPException: 400 when the name is missing or tries to leave its folder.
    """
    name = name.strip()
    if not name:
        fail(400, "X-Backup-Filename is required")
    if "/" in name or "\\" in name or "\x00" in name or name in (".", ".."):
        fail(400, "X-Backup-Filename must be a plain file name, without any folder")
    return _UNSAFE_CHARS.sub("_", name).lstrip(".")[:MAX_FILENAME] or "backup"


async def receive(content: StreamReader, path: Path) -> tuple[int, str]:
    """Stream ``content`` into ``path`` chunk by chunk; its size and SHA-256 hex.

    The file is removed if the upload breaks off, so no partial backup remains.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    handle = await asyncio.to_thread(path.open, "wb")
    try:
        async for chunk in content.iter_chunked(CHUNK_SIZE):
            size += len(chunk)
            # Hashing and writing go to a thread: a large upload never delays
            # the heartbeats the same loop is receiving.
            await asyncio.to_thread(_write, handle, digest, chunk)
    except BaseException:
        _discard(handle, path)
        raise
    await asyncio.to_thread(handle.close)
    return size, digest.hexdigest()


def _discard(handle: BinaryIO, path: Path) -> None:
    handle.close()
    path.unlink(missing_ok=True)


def _write(handle: BinaryIO, digest: hashlib._Hash, chunk: bytes) -> None:
    digest.update(chunk)
    handle.write(chunk)
