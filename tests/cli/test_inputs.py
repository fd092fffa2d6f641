"""``--data`` as ``hublink send`` reads it, in-process where hypothesis can try hundreds: any
JSON is queued as strict JSON, exactly as given, or refused with exit 2 (never a traceback).

``send`` run as an operator runs it is in tests/contract/test_s05_cli.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hublink.cli import main
from hublink.link.outbox import Outbox

INSTALLED = {"plugin_id": "inventory", "version": "1.1", "installed_at": "2025-05-01T10:00:00Z"}


def strict_loads(text: str) -> object:
    def refuse(name: str) -> object:
        raise AssertionError(f"{name} reached the outbox")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def shared_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("send-fuzz") / "state"


#: Any character, lone surrogates (what "\\ud83d" in JSON becomes) often.
ANY_TEXT = st.text(
    alphabet=st.characters(exclude_categories=()) | st.sampled_from(["\ud83d", "\udc00", "\udcff"]),
    max_size=8,
)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and ±infinity included
    | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fields=st.dictionaries(ANY_TEXT, JSON_VALUES, max_size=3),
    text=st.one_of(st.none(), st.text(max_size=40)),
)
def test_any_data_is_queued_as_strict_json_or_refused_with_exit_2(
    shared_state: Path, fields: dict[str, object], text: str | None
) -> None:
    # Raw text as typed, or a valid event with random extra fields (json.dumps
    # writes NaN, Infinity and lone surrogates as Python would accept them back).
    data = text if text is not None else json.dumps({**INSTALLED, **fields, "id": None})
    os.environ["HUBLINK_STATE_DIR"] = str(shared_state)
    try:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["send", "plugin_installed", "--data", data])
    finally:
        os.environ.pop("HUBLINK_STATE_DIR")
    assert code in (0, 2), err.getvalue()
    event(f"exit {code}")
    if code == 2:
        assert err.getvalue().startswith("hublink: error: "), err.getvalue()
        return
    outbox = Outbox.open(shared_state)
    try:
        (frame,) = [
            item.frame for item in outbox.peek(100_000) if item.id == out.getvalue().strip()
        ]
    finally:
        outbox.close()
    sent = strict_loads(frame)
    assert isinstance(sent, dict)
    assert {k: v for k, v in sent.items() if k not in ("type", "id")} == {
        k: v for k, v in json.loads(data).items() if k not in ("type", "id")
    }
