"""The wire messages of contract section 2."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID, uuid4

import pytest

from hublink.errors import InvalidEvent
from hublink.link.messages import (
    BackupCompleted,
    BackupFailed,
    BackupRequest,
    BadFrame,
    Heartbeat,
    PluginInstalled,
    PluginUpdateAvailable,
    SyncedUser,
    UnknownMessageType,
    UserRevoked,
    UserSync,
    heartbeat_frame,
    parse_inbound,
    validate_event,
)
from hublink.logs import register_secret

HEARTBEAT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")


def test_heartbeat_frame_is_utc_with_z() -> None:
    moment = datetime(2025, 3, 1, 14, 5, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
    data = json.loads(heartbeat_frame(moment))
    assert data == {"type": "heartbeat", "timestamp": "2025-03-01T12:05:09Z"}


def test_heartbeat_frame_defaults_to_now() -> None:
    data = json.loads(heartbeat_frame())
    assert data["type"] == "heartbeat"
    assert HEARTBEAT_RE.match(data["timestamp"])
    sent = datetime.fromisoformat(data["timestamp"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - sent).total_seconds()) < 5
    assert Heartbeat(timestamp=data["timestamp"]).to_frame() == heartbeat_frame(sent)


# --- Cloud → Hub ------------------------------------------------------------


def test_parse_plugin_update_available_ignores_extra_fields() -> None:
    msg = parse_inbound(
        json.dumps(
            {
                "type": "plugin_update_available",
                "plugin_id": "inventory",
                "current_version": "1.2.0",
                "new_version": "1.3.0",
                "download_url": "https://cdn.example/inventory-1.3.0.zip",
                "something_new": {"nested": True},
            }
        )
    )
    assert isinstance(msg, PluginUpdateAvailable)
    assert (msg.plugin_id, msg.current_version, msg.new_version) == ("inventory", "1.2.0", "1.3.0")


def test_parse_user_revoked_accepts_numeric_id() -> None:
    msg = parse_inbound('{"type": "user_revoked", "user_id": 42, "email": "a@b.c", "reason": "x"}')
    assert isinstance(msg, UserRevoked)
    assert (msg.user_id, msg.email, msg.reason) == ("42", "a@b.c", "x")


def test_parse_backup_request() -> None:
    msg = parse_inbound('{"type": "backup_request", "requested_by": "owner@shop.example"}')
    assert msg == BackupRequest(type="backup_request", requested_by="owner@shop.example")


def test_messages_are_frozen() -> None:
    msg = parse_inbound('{"type": "backup_request", "requested_by": "x"}')
    assert isinstance(msg, BackupRequest)
    with pytest.raises(ValueError, match="frozen"):
        msg.requested_by = "y"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b'{"type": "backup_request"}', "binary frame of 26 bytes"),
        ("not json at all", "not JSON"),
        ("", "not JSON"),
        ('["a", "list"]', "not a JSON object but an array"),
        ('"just a string"', "not a JSON object but a string"),
        ("null", "not a JSON object but null"),
        ('{"requested_by": "x"}', "no 'type' field"),
        ('{"type": 7}', "'type' is a number"),
        ('{"type": null}', "no 'type' field"),
        ('{"type": "user_revoked"}', "invalid user_revoked: user_id: required"),
        ('{"type": "user_revoked", "user_id": ""}', "user_id: String should have at least 1"),
        ('{"type": "user_revoked", "user_id": true}', "user_id: Input should be a valid string"),
        (
            '{"type": "plugin_update_available", "plugin_id": "p", "download_url": "u"}',
            "invalid plugin_update_available: new_version: required",
        ),
        ('{"type": "backup_request", "requested_by": [1]}', "requested_by: Input should be"),
        ("[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
    ],
)
def test_bad_frames_have_useful_reasons(frame: str | bytes, reason: str) -> None:
    with pytest.raises(BadFrame) as caught:
        parse_inbound(frame)
    assert not isinstance(caught.value, UnknownMessageType)
    assert reason in caught.value.reason
    assert len(caught.value.reason) < 700


def test_unknown_type_is_its_own_error() -> None:
    with pytest.raises(UnknownMessageType) as caught:
        parse_inbound('{"type": "firmware_update", "url": "x"}')
    assert caught.value.message_type == "firmware_update"
    assert "firmware_update" in caught.value.reason


def test_reasons_truncate_huge_payloads() -> None:
    with pytest.raises(BadFrame) as caught:
        parse_inbound("x" * 1_000_000)
    assert len(caught.value.reason) < 400
    with pytest.raises(UnknownMessageType) as caught_type:
        parse_inbound(json.dumps({"type": "t" * 10_000}))
    assert len(caught_type.value.reason) < 200


def test_reasons_never_hold_secrets() -> None:
    secret = "s3cr3t-" + uuid4().hex
    register_secret(secret)
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl"
    frames = [
        f'{{"token": "{secret}", broken',
        f'{{"no_type": 1, "token": "{jwt}"}}',
        json.dumps({"type": "user_revoked", "user_id": secret + "x" * 600}),
        json.dumps({"type": "user_revoked", "user_id": [jwt]}),
        f"?token={secret}",
    ]
    for frame in frames:
        with pytest.raises(BadFrame) as caught:
            parse_inbound(frame)
        assert secret not in caught.value.reason
        assert jwt not in caught.value.reason


# --- Hub → Cloud ------------------------------------------------------------


def test_validate_user_sync_assigns_a_uuid4() -> None:
    users = [{"cloud_user_id": 7, "email": "ana@shop.example", "last_activity": None}]
    first = validate_event("user_sync", {"users": users})
    second = validate_event("user_sync", {"users": users})
    assert isinstance(first, UserSync)
    assert first.id.version == 4
    assert first.id != second.id
    frame = json.loads(first.to_frame())
    assert frame == {
        "type": "user_sync",
        "id": str(first.id),
        "users": users,  # validated, then sent as the Hub wrote it: 7 stays 7
    }


def test_validate_event_keeps_a_callers_id() -> None:
    given = str(uuid4())
    event = validate_event(
        "plugin_installed",
        {"id": given, "plugin_id": "inv", "version": "2.0", "installed_at": "2025-01-02T03:04:05Z"},
    )
    assert isinstance(event, PluginInstalled)
    assert event.id == UUID(given)
    assert json.loads(event.to_frame())["installed_at"] == "2025-01-02T03:04:05Z"


@pytest.mark.parametrize(
    ("event_type", "data", "expected"),
    [
        ("user_sync", {}, "users: required"),
        ("user_sync", {"users": "ana"}, "users: Input should be a valid list"),
        (
            "user_sync",
            {"users": [{"cloud_user_id": "1", "email": "nobody", "last_activity": None}]},
            "users.0.email: must be an email address",
        ),
        (
            "user_sync",
            {"users": [{"cloud_user_id": "1", "email": "a@b.c", "last_activity": "soon"}]},
            "users.0.last_activity: Input should be a valid datetime",
        ),
        ("plugin_installed", {"plugin_id": "p", "version": "1"}, "installed_at: required"),
        (
            "plugin_installed",
            {"plugin_id": "", "version": "1", "installed_at": "2025-01-01T00:00:00Z"},
            "plugin_id: String should have at least 1 character",
        ),
        (
            "plugin_installed",
            {"id": "not-a-uuid", "plugin_id": "p", "version": "1", "installed_at": "2025-01-01"},
            "id: Input should be a valid UUID",
        ),
        (
            "plugin_installed",
            {"type": "user_sync", "plugin_id": "p", "version": "1", "installed_at": "2025-01-01"},
            "does not match",
        ),
        ("backup_completed", {}, "type: must be one of user_sync, plugin_installed"),
    ],
)
def test_invalid_events_are_explained(
    event_type: str, data: dict[str, object], expected: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        validate_event(event_type, data)
    assert caught.value.exit_code == 2
    assert any(expected in problem for problem in caught.value.problems) or expected in str(
        caught.value
    ), (caught.value.problems, str(caught.value))


def test_backup_results_carry_ids() -> None:
    done = BackupCompleted(
        backup_id="b-1", filename="hub.db.zst.age", size=10, sha256="a" * 64, requested_by="o"
    )
    failed = BackupFailed(error="disk full", requested_by="o")
    assert json.loads(done.to_frame()) == {
        "type": "backup_completed",
        "id": str(done.id),
        "backup_id": "b-1",
        "filename": "hub.db.zst.age",
        "size": 10,
        "sha256": "a" * 64,
        "requested_by": "o",
    }
    assert json.loads(failed.to_frame())["type"] == "backup_failed"
    with pytest.raises(ValueError, match="sha256"):
        BackupCompleted(backup_id="b", filename="f", size=1, sha256="xyz", requested_by="o")


def test_the_hubs_own_json_goes_out_unchanged() -> None:
    data = {
        "users": [
            {"cloud_user_id": "9", "email": "b@c.d"},
            {"cloud_user_id": 10, "email": "c@d.e", "last_activity": "2025-01-28T10:00:00+01:00"},
        ],
        "shop": "extra fields the Cloud may know about",
    }
    event = validate_event("user_sync", data)
    assert json.loads(event.to_frame()) == {"type": "user_sync", **data, "id": str(event.id)}


def test_an_event_built_in_code_is_serialised_from_its_fields() -> None:
    event = UserSync(users=[SyncedUser(cloud_user_id="9", email="b@c.d")])
    assert json.loads(event.to_frame())["users"][0]["last_activity"] is None


def test_a_null_id_gets_a_new_one() -> None:
    event = validate_event("user_sync", {"id": None, "users": []})
    assert event.id.version == 4


def test_a_backup_request_without_requested_by_is_still_a_request() -> None:
    msg = parse_inbound('{"type": "backup_request"}')
    assert isinstance(msg, BackupRequest)
    assert msg.requested_by == ""
