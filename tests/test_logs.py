"""Logging: secrets masked wherever they hide, and the three renderers."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from hublink import logs

JWT = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJ0b2tlbl90eXBlIjoiYWNjZXNzIiwidXNlcl9pZCI6MX0"
    ".c2lnbmF0dXJlLWJ5dGVzLWhlcmU"
)


def mask(**event: Any) -> dict[str, Any]:
    return dict(logs.mask_secrets(None, "info", dict(event)))


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo :func:`logs.configure` so later tests see structlog's defaults."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


# --- masking ------------------------------------------------------------------------------


def test_token_in_a_url_is_masked() -> None:
    got = mask(event="connecting", url="wss://cloud.example/ws/hub/42/?token=s3cr3t-t0ken&x=1")
    assert got["url"] == "wss://cloud.example/ws/hub/42/?token=***&x=1"


def test_bearer_header_is_masked() -> None:
    got = mask(event="request", header="Authorization: Bearer abc.def.ghi")
    assert "abc.def.ghi" not in got["header"]
    assert "Bearer ***" in got["header"]


def test_jwt_shaped_strings_are_masked_anywhere() -> None:
    got = mask(event=f"got {JWT} back", detail=["first", f"then {JWT}"])
    assert JWT not in json.dumps(got)
    assert got["event"] == "got *** back"


def test_registered_secret_is_masked_in_any_text() -> None:
    logs.register_secret("plain-looking-value-42")
    got = mask(event="frpc said: auth with plain-looking-value-42 failed", note=7)
    assert got["event"] == "frpc said: auth with *** failed"
    assert got["note"] == 7


def test_a_thousand_links_in_one_process_have_every_token_masked() -> None:
    # The library running many hubs (the reconnect storm's fleet) registers a token each.
    tokens = [f"fleet-token-{number:04d}-{'q' * 24}" for number in range(1000)]
    for token in tokens:
        logs.register_secret(token)
    try:
        got = mask(event=f"first {tokens[0]}, last {tokens[-1]}", note="no secret here")
        assert got == {"event": "first ***, last ***", "note": "no secret here"}
        logs.forget_secret(tokens[0])
        assert mask(event=f"gone {tokens[0]}")["event"] == f"gone {tokens[0]}"
        assert mask(event=f"kept {tokens[1]}")["event"] == "kept ***"
    finally:
        for token in tokens:
            logs.forget_secret(token)


def test_short_values_are_not_registered_as_secrets() -> None:
    logs.register_secret("ab")
    assert mask(event="tab stops")["event"] == "tab stops"


def test_secret_keys_are_masked_in_nested_dicts() -> None:
    got = mask(
        event="request",
        headers={"Authorization": "Basic dXNlcjpwYXNz", "Accept": "application/json"},
        body={"email": "owner@example.com", "password": "hunter2-hunter2"},
        tokens={"access": JWT, "refresh": "r" * 20},
        tunnel_token="tt_secret_value",
    )
    text = json.dumps(got)
    for secret in ("dXNlcjpwYXNz", "hunter2-hunter2", JWT, "r" * 20, "tt_secret_value"):
        assert secret not in text
    assert got["headers"]["Accept"] == "application/json"
    assert got["body"]["email"] == "owner@example.com"


def test_secrets_inside_json_or_toml_text_are_masked() -> None:
    got = mask(
        event="config",
        toml='metadatas.token = "abcdefgh12345"\nuser = "hub"',
        json_body='{"password": "pw-in-json", "email": "a@b.c"}',
    )
    assert "abcdefgh12345" not in got["toml"] and 'user = "hub"' in got["toml"]
    assert "pw-in-json" not in got["json_body"] and "a@b.c" in got["json_body"]


def test_basic_credentials_in_free_text_are_masked() -> None:
    got = mask(event="request", detail="sent basic dXNlcjpwYXNz to the proxy")
    assert got["detail"] == "sent basic *** to the proxy"


def test_overlapping_secret_shapes_are_all_masked() -> None:
    # The token's value runs on after the JWT ends: both are masked, as when
    # each pattern was applied to the whole text in turn.
    got = mask(event="x", detail="eyJhbGciOi.eyJzdWIiOi.sigtoken=leftover-value")
    assert got["detail"] == "***=***"


def test_plain_values_are_left_as_they_are() -> None:
    got = mask(event="plugin update available", plugin_id="p-1", new_version="1.0.1", n=3)
    assert got == {
        "event": "plugin update available",
        "plugin_id": "p-1",
        "new_version": "1.0.1",
        "n": 3,
    }


# --- renderers ------------------------------------------------------------------------------


def test_journal_renderer_has_priority_prefix_and_no_timestamp(restore_logging: None) -> None:
    stream = io.StringIO()
    assert logs.configure("debug", "journal", stream=stream) == "journal"
    log = structlog.get_logger("test")
    log.warning("link lost", reason="ping timeout")
    log.error("token rejected", token="abc")
    log.debug("detail")
    first, second, third = stream.getvalue().splitlines()
    assert first == '<4>link lost reason="ping timeout"'
    assert second == "<3>token rejected token=***"
    assert third == "<7>detail"


def test_json_format_masks_and_filters_by_level(restore_logging: None) -> None:
    stream = io.StringIO()
    logs.configure("info", "json", stream=stream)
    log = structlog.get_logger("test")
    log.debug("hidden")
    log.info("connected", url="wss://c/ws/hub/1/?token=zzzzzzzz")
    (line,) = stream.getvalue().splitlines()
    event = json.loads(line)
    assert event["event"] == "connected"
    assert event["url"] == "wss://c/ws/hub/1/?token=***"
    assert event["level"] == "info" and "timestamp" in event


def test_standard_library_loggers_go_through_the_masking(restore_logging: None) -> None:
    stream = io.StringIO()
    logs.configure("info", "json", stream=stream)
    logging.getLogger("aiohttp.client").warning("retrying %s", f"Bearer {JWT}")
    (line,) = stream.getvalue().splitlines()
    event = json.loads(line)
    assert JWT not in line
    assert event["logger"] == "aiohttp.client"


def test_auto_picks_journal_when_journal_stream_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (tmp_path / "stderr").open("w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert logs.pick_format("auto", stream) == "journal"
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert logs.pick_format("auto", stream) == "json"
        monkeypatch.delenv("JOURNAL_STREAM")
        assert logs.pick_format("auto", stream) == "json"
        assert logs.pick_format("console", stream) == "console"


def test_auto_picks_console_on_a_terminal() -> None:
    primary, secondary = pty.openpty()
    try:
        with os.fdopen(secondary, "w", closefd=False) as stream:
            assert logs.pick_format("auto", stream) == "console"
    finally:
        os.close(primary)
        os.close(secondary)


def test_stream_without_a_file_descriptor_is_not_the_journal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    assert not logs.stream_is_journal(io.StringIO())


def test_a_forgotten_secret_is_no_longer_masked() -> None:
    from hublink.logs import forget_secret, mask_text, register_secret

    register_secret("one-time-admin-password")
    assert mask_text("pw one-time-admin-password") == "pw ***"
    forget_secret("one-time-admin-password")
    assert mask_text("pw one-time-admin-password") == "pw one-time-admin-password"
    forget_secret(None)  # nothing registered: nothing to do
