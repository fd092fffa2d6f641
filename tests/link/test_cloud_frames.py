"""A frame from the Cloud only ever costs that frame (issue 10, items 7, 8 and 25).

The kind: any JSON the Cloud can send (any number size, any nesting, any
string JSON can carry, lone surrogates included, of any length) is either
handled or dropped as one frame; it never ends the link, and every text that
leaves hublink because of it (hook stdin, log lines, status, the page) can be
written out. The same frames sent to a running daemon are in
tests/contract/test_s02_websocket.py.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hublink.link.messages import BadFrame, PluginUpdateAvailable, UserRevoked, parse_inbound
from hublink.link.notices import StateStore
from hublink.logs import LOG_EXCEPTION_CHARS, LOG_VALUE_CHARS, bound_text, mask_secrets
from hublink.status import summary_lines
from hublink.statusreport import StatusReport

BIG_INT = "9" * 5000
#: Every string JSON can carry: surrogates (lone ones included) are category Cs.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=50)


class Digits(str):
    """A JSON number of any size as its text: Python will not print an int of 5000 digits."""


NUMBER_TEXT = r"-?[1-9][0-9]{0,6000}(\.[0-9]{1,20})?([eE]-?[0-9]{1,7})?"
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**300), max_value=10**300)
    | st.builds(Digits, st.from_regex(NUMBER_TEXT, fullmatch=True))
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=20,
)
known_types = st.sampled_from(
    ["user_revoked", "plugin_update_available", "backup_request", "heartbeat"]
)


def frame_of(value: Any) -> str:
    """``value`` as JSON text: numbers of any size, NaN/Infinity as Python writes them.

    ensure_ascii: lone surrogates travel as escapes, the only way they can
    travel in a text frame (the WebSocket layer checks UTF-8).
    """
    if isinstance(value, Digits):
        return str.__str__(value)
    if isinstance(value, list):
        return "[" + ",".join(frame_of(item) for item in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{json.dumps(str(k))}:{frame_of(v)}" for k, v in value.items())
        return "{" + ",".join(pairs) + "}"
    return json.dumps(value)


def assert_leaves_cleanly(message: Any) -> None:
    """Everything hublink makes of ``message`` encodes as UTF-8."""
    payload = message.hook_payload()
    assert isinstance(json.loads(payload.decode("utf-8")), dict)
    rendered = render_log_line(
        {"event": "user revoked", "reason": getattr(message, "reason", None)}
    )
    rendered.encode("utf-8")


def render_log_line(event: dict[str, Any]) -> str:
    """One event through hublink's masking and bounding processors, rendered as JSON."""
    processed = bound_text(None, "info", mask_secrets(None, "info", dict(event)))
    return structlog.processors.JSONRenderer()(None, "info", processed)  # type: ignore[no-any-return]


# --- the parser: any JSON value, any frame ---------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.dictionaries(any_text, json_values, max_size=6), kind=known_types)
def test_any_json_object_is_handled_or_dropped_as_one_frame(
    body: dict[str, Any], kind: str
) -> None:
    frame = frame_of({**body, "type": kind})
    try:
        message = parse_inbound(frame)
    except BadFrame as err:
        # Dropped: the reason is short and can be logged.
        assert len(err.reason) <= 1000
        err.reason.encode("utf-8")
        return
    assert_leaves_cleanly(message)


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_any_json_value_is_handled_or_dropped_as_one_frame(value: Any) -> None:
    with contextlib.suppress(BadFrame):
        parse_inbound(frame_of(value))


@settings(max_examples=200, deadline=None)
@given(raw=st.text(max_size=200) | st.binary(max_size=50))
def test_any_text_or_binary_frame_is_handled_or_dropped(raw: str | bytes) -> None:
    with contextlib.suppress(BadFrame):
        parse_inbound(raw)


def test_a_5000_digit_integer_costs_only_its_frame() -> None:
    # Issue 10 item 7: "ValueError: Exceeds the limit (4300 digits)" killed the link task.
    frame = (
        '{"type":"plugin_update_available","plugin_id":"inventory","current_version":"1.0.0",'
        '"new_version":"1.1.0","download_url":"https://cloud.example/p.zip","build":'
        f"{BIG_INT}}}"
    )
    try:
        parse_inbound(frame)
    except BadFrame as err:
        assert "cannot read" in err.reason
        assert len(err.reason) < 1000
    else:
        raise AssertionError("a 5000-digit number was accepted")


def test_deep_nesting_costs_only_its_frame() -> None:
    frame = '{"type":"user_revoked","user_id":"u","x":' + "[" * 100_000 + "]" * 100_000 + "}"
    try:
        parse_inbound(frame)
    except BadFrame as err:
        assert "nested too deeply" in err.reason


# --- text that leaves hublink: hook stdin, notices, status, logs -------------------


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(user_id=any_text, email=any_text, reason=any_text, extra=any_text)
def test_any_string_in_a_revocation_survives_every_way_out(
    tmp_path: Path, user_id: str, email: str, reason: str, extra: str
) -> None:
    frame = frame_of(
        {
            "type": "user_revoked",
            "user_id": user_id,
            "email": email,
            "reason": reason,
            extra: reason,
        }
    )
    try:
        message = parse_inbound(frame)
    except BadFrame:
        return
    assert isinstance(message, UserRevoked)
    assert_leaves_cleanly(message)
    store = StateStore(tmp_path / "state.sqlite3")
    store.record_user_revoked(message)
    snapshot = store.snapshot()
    store.close()
    json.dumps(snapshot, ensure_ascii=False).encode("utf-8")
    status = status_with(snapshot["revoked_users"])
    for line in summary_lines(status):
        line.encode("utf-8")


def status_with(revoked: list[Any]) -> StatusReport:
    return {
        "registered": True,
        "hub_id": "h",
        "slug": "s",
        "cloud_url": "http://127.0.0.1",
        "daemon": {"running": False, "pid": None},
        "websocket": {
            "state": None,
            "last_heartbeat_at": None,
            "reconnects": None,
            "last_error": None,
            "next_attempt_at": None,
        },
        "tunnel": {"state": None, "pid": None, "restarts": None, "last_error": None},
        "outbox": {"pending": 0, "dead_letters": 0, "quarantined": 0},
        "plugin_updates": [],
        "revoked_users": revoked,
        "revoked_users_dropped": 0,
        "last_backup": None,
        "backup": {"database": None, "owner_recipients": 0},
        "version": "0",
        "state_dir": "/tmp",
    }


@settings(max_examples=200, deadline=None)
@given(
    text=any_text | st.text(min_size=3000, max_size=20_000),
    key=st.sampled_from(["reason", "error", "exception", "stderr"]),
)
def test_any_logged_text_makes_a_bounded_line_that_encodes(text: str, key: str) -> None:
    line = render_log_line(
        {"event": "something happened", key: text, "nested": [text, {"k": text}]}
    )
    line.encode("utf-8")
    limit = LOG_EXCEPTION_CHARS if key == "exception" else LOG_VALUE_CHARS
    # Each value is cut to its limit; JSON escaping may at most multiply by six.
    assert len(line) <= 6 * (limit + 3 * LOG_VALUE_CHARS) + 500


def test_a_million_character_reason_is_cut_in_the_log_but_not_for_the_hook() -> None:
    reason = "x" * 1_000_000
    message = parse_inbound(
        frame_of({"type": "user_revoked", "user_id": "u-7", "email": "c@e.com", "reason": reason})
    )
    assert json.loads(message.hook_payload())["reason"] == reason
    line = render_log_line({"event": "user revoked", "reason": reason})
    assert len(line) < LOG_VALUE_CHARS + 200
    assert "more characters" in line


# --- in the daemon: the link stays up -------------------------------------------------


def test_plugin_update_with_a_lone_surrogate_is_recorded_printably(tmp_path: Path) -> None:
    message = parse_inbound(
        '{"type":"plugin_update_available","plugin_id":"inv\\ud800","new_version":"2",'
        '"download_url":"https://x/\\udfff"}'
    )
    assert isinstance(message, PluginUpdateAvailable)
    store = StateStore(tmp_path / "state.sqlite3")
    store.record_plugin_update(message)
    store.flush()
    store.close()
    again = StateStore(tmp_path / "state.sqlite3")
    [update] = again.snapshot()["plugin_updates"]
    again.close()
    assert update["plugin_id"] == "inv\ufffd"
    io.StringIO().write(json.dumps(update, ensure_ascii=False))
