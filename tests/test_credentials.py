"""The credential store: atomic 0600 writes, clear errors, the lock."""

from __future__ import annotations

import resource
import stat
import threading
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import pytest
import structlog
from pydantic import SecretStr

from hublink import logs
from hublink.credentials import Credentials, CredentialStore
from hublink.errors import EXIT_CONFIG, CredentialsError, NotRegisteredError

TOKEN = "tt_" + "k" * 43


def creds(port: int = 7001, token: str = TOKEN) -> Credentials:
    return Credentials(
        hub_id=UUID("7f1c4a1e-2b1d-4c39-9a57-0d9b8e1f2a33"),
        slug="corner-shop",
        tunnel_port=port,
        tunnel_token=SecretStr(token),
        cloud_url="https://erplora.com",
        registered_at=datetime(2026, 11, 28, 2, 30, tzinfo=UTC),
    )


def saved(store: CredentialStore, value: Credentials) -> None:
    with store.locked():
        store.save(value)


def test_round_trip_with_mode_0600(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "state")
    saved(store, creds())
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.state_dir.stat().st_mode) == 0o700
    data = tomllib.loads(store.path.read_text())
    assert set(data) == {
        "hub_id",
        "slug",
        "tunnel_port",
        "tunnel_token",
        "cloud_url",
        "registered_at",
    }
    assert data["registered_at"] == datetime(2026, 11, 28, 2, 30, tzinfo=UTC)
    assert store.load() == creds()


def test_token_is_hidden_in_repr_and_masked_once_loaded(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path)
    saved(store, creds())
    loaded = store.load()
    assert TOKEN not in repr(loaded)
    assert logs.mask_text(f"frpc login with {TOKEN}") == "frpc login with ***"


def test_missing_file_is_not_registered(tmp_path: Path) -> None:
    with pytest.raises(NotRegisteredError) as caught:
        CredentialStore(tmp_path).load()
    assert caught.value.exit_code == EXIT_CONFIG
    assert str(tmp_path / "credentials.toml") in str(caught.value)
    assert "hublink register" in str(caught.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("hub_id = \n", "is not valid TOML"),
        ('hub_id = "not-a-uuid"\n', "hub_id"),
        (b"\xff\xfe".decode("latin-1"), "is not valid TOML"),
    ],
)
def test_unparseable_file_names_the_file_and_the_problem(
    tmp_path: Path, content: str, expected: str
) -> None:
    store = CredentialStore(tmp_path)
    store.path.write_text(content, encoding="latin-1")
    with pytest.raises(CredentialsError) as caught:
        store.load()
    assert str(store.path) in str(caught.value)
    assert expected in str(caught.value)
    assert caught.value.exit_code == EXIT_CONFIG


def test_invalid_values_never_show_the_token(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path)
    text = creds().to_toml().decode().replace("tunnel_port = 7001", "tunnel_port = 0")
    store.path.write_text(text)
    with pytest.raises(CredentialsError, match="tunnel_port") as caught:
        store.load()
    assert TOKEN not in str(caught.value)


def test_loose_permissions_are_reported_with_the_fix(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path)
    saved(store, creds())
    store.path.chmod(0o644)
    with structlog.testing.capture_logs() as events:
        store.load()
    (warning,) = [e for e in events if e["log_level"] == "warning"]
    assert warning["fix"] == f"chmod 600 {store.path}"


def test_failed_write_leaves_the_old_file_intact(tmp_path: Path) -> None:
    """The new file cannot be written past 64 bytes (EFBIG mid-write): the old one survives."""
    store = CredentialStore(tmp_path / "state")
    saved(store, creds(port=7001))
    before = store.path.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, hard))
    try:
        with pytest.raises(OSError, match="too large"):
            saved(store, creds(port=7002))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert store.path.read_bytes() == before
    leftovers = sorted(p.name for p in store.state_dir.iterdir())
    assert leftovers == [".credentials.lock", "credentials.toml"]


def test_lock_serialises_two_writers(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path)
    order: list[str] = []
    holding = threading.Event()

    def first() -> None:
        with store.locked():
            holding.set()
            order.append("first in")
            time.sleep(0.2)  # hold the lock while the second writer tries
            order.append("first out")

    def second() -> None:
        holding.wait(5)
        with store.locked():
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert order == ["first in", "first out", "second in"]


def test_remove(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path)
    assert store.remove() is False
    saved(store, creds())
    assert store.remove() is True
    assert not store.exists()


def test_a_directory_in_place_of_the_file_is_a_named_error(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path)
    store.path.mkdir()
    with pytest.raises(CredentialsError, match="Is a directory") as caught:
        store.load()
    assert str(store.path) in str(caught.value)
