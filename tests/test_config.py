from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from hublink.config import Settings, load_settings
from hublink.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hublink.toml"
    path.write_text(text)
    return path


def test_defaults_match_the_contract() -> None:
    settings = Settings()
    assert settings.cloud_url == "https://erplora.com"
    assert settings.state_dir == Path("/var/lib/hublink")
    assert settings.runtime_dir == Path("/run/hublink")
    assert settings.hub.local_port == 8001
    assert settings.websocket.heartbeat_interval == 30
    assert (settings.websocket.reconnect_min, settings.websocket.reconnect_max) == (1, 60)
    assert settings.websocket.reconnect_spread == 10
    assert settings.websocket.unauthorized_retry == 300
    assert (settings.websocket.ping_interval, settings.websocket.ping_timeout) == (20, 20)
    assert settings.websocket.max_message_size == 1048576
    assert settings.tunnel.enabled is True
    assert settings.tunnel.frpc_path == "frpc"
    assert settings.tunnel.server_port == 7000
    assert settings.tunnel.admin_port == 7400
    assert settings.tunnel.server_token is None
    assert settings.tunnel.proxy_type == "tcp"
    assert settings.frps_addr == "erplora.com"
    assert settings.backup.zstd_level == 3
    assert settings.backup.recipients == ()
    assert settings.outbox.max_pending == 100000
    assert settings.hooks == {}
    assert settings.hooks_timeout == 30
    assert (settings.log.level, settings.log.format) == ("info", "auto")


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        'cloud_url = "https://cloud.example/"\n'
        "[websocket]\nheartbeat_interval = 5\nping_interval = 7\n"
        '[hooks]\nuser_revoked = ["/bin/true"]\n',
    )
    monkeypatch.setenv("HUBLINK_WEBSOCKET__HEARTBEAT_INTERVAL", "0.2")
    monkeypatch.setenv("HUBLINK_TUNNEL__ENABLED", "false")
    settings = load_settings(str(path))
    assert settings.cloud_url == "https://cloud.example"  # trailing slash removed
    assert settings.websocket.heartbeat_interval == 0.2  # env beats file
    assert settings.websocket.ping_interval == 7  # file kept where env is silent
    assert settings.tunnel.enabled is False
    assert settings.hooks == {"user_revoked": ("/bin/true",)}


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, 'state_dir = "/srv/hub"\n')
    monkeypatch.setenv("HUBLINK_CONFIG", str(path))
    assert load_settings(None).state_dir == Path("/srv/hub")


def test_missing_default_file_means_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUBLINK_CONFIG")
    monkeypatch.setattr("hublink.configfile.DEFAULT_CONFIG_PATH", Path("/nonexistent/hublink.toml"))
    assert load_settings(None).cloud_url == "https://erplora.com"


def test_missing_file_at_hublink_config_means_defaults_plus_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Contract §5: --config defaults to $HUBLINK_CONFIG; a missing file at the
    # default path means defaults plus environment.
    monkeypatch.setenv("HUBLINK_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("HUBLINK_STATE_DIR", str(tmp_path / "state"))
    settings = load_settings(None)
    assert settings.cloud_url == "https://erplora.com"
    assert settings.state_dir == tmp_path / "state"


def test_missing_named_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(str(tmp_path / "nope.toml"))


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[websocket]\nheartbeat_interval = -1\n", "websocket.heartbeat_interval = -1"),
        ("[hub]\nlocal_port = 70000\n", "hub.local_port = 70000"),
        ('[tunnel]\nproxy_type = "udp"\n', "tunnel.proxy_type = 'udp'"),
        ('[log]\nlevel = "loud"\n', "log.level = 'loud'"),
        ("[backup]\nzstd_level = 30\n", "backup.zstd_level = 30"),
        ('[backup]\nrecipients = ["not-a-key"]\n', "not-a-key"),
        ('[hooks]\nno_such_message = ["/bin/true"]\n', "no_such_message"),
        ("[hooks]\nuser_revoked = []\n", "hooks.user_revoked"),
        ("heartbeat = 3\n", "heartbeat: unknown key"),
        ('cloud_url = "ftp://x"\n', "cloud_url = 'ftp://x'"),
        ('cloud_url = "https://x.example/api"\n', "without a path"),
    ],
)
def test_invalid_values_name_key_and_value(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(str(write(tmp_path, text)))
    assert named in str(caught.value)
    assert caught.value.exit_code == 78


def test_broken_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(str(write(tmp_path, "cloud_url = \n")))


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:9"]
)
def test_plain_http_allowed_on_loopback(url: str) -> None:
    assert Settings(cloud_url=url).cloud_scheme == "http"


def test_plain_http_refused_elsewhere_unless_allowed() -> None:
    with pytest.raises(ValueError, match="allow_insecure_http"):
        Settings(cloud_url="http://cloud.example")
    assert Settings(cloud_url="http://cloud.example", allow_insecure_http=True)


def test_server_token_never_shown(tmp_path: Path) -> None:
    path = write(tmp_path, '[tunnel]\nserver_token = "s3cret-fleet"\nserver_port = 0\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path))
    assert "s3cret-fleet" not in str(caught.value)
    settings = load_settings(str(write(tmp_path, '[tunnel]\nserver_token = "s3cret-fleet"\n')))
    assert "s3cret-fleet" not in repr(settings)


@pytest.mark.parametrize(
    "text",
    [
        '[tunnel]\nserver_token = "s3cret-fleet"\nrestart_min = 5\nrestart_max = 1\n',
        'cloud_url = "http://cloud.example"\n[tunnel]\nserver_token = "s3cret-fleet"\n',
    ],
)
def test_a_section_level_error_never_shows_the_server_token(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(str(write(tmp_path, text)))
    assert "s3cret-fleet" not in str(caught.value)
    assert "restart_min" in str(caught.value) or "allow_insecure_http" in str(caught.value)


def test_log_names_are_not_case_sensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBLINK_LOG__LEVEL", "DEBUG")
    monkeypatch.setenv("HUBLINK_LOG__FORMAT", "Json")
    settings = load_settings(None)
    assert (settings.log.level, settings.log.format) == ("debug", "json")


def test_a_small_max_message_size_is_the_operators_call() -> None:
    assert Settings(websocket={"max_message_size": 512}).websocket.max_message_size == 512


def test_the_fleet_token_is_masked_in_logs_once_loaded(tmp_path: Path) -> None:
    from hublink.logs import mask_text

    load_settings(str(write(tmp_path, '[tunnel]\nserver_token = "fleet-wide-s3cret"\n')))
    assert mask_text("frps said: bad token fleet-wide-s3cret") == "frps said: bad token ***"


# --- backup.schedule and metrics.listen (contract sections 10 and 11) ---------------

_HH_MM = r"(?:[01]\d|2[0-3]):[0-5]\d"


@pytest.mark.parametrize("bad", ["25:00", "3pm", "7:5", "24:00", "12:60", "0330", "03:30:00"])
def test_an_invalid_backup_schedule_is_a_config_error_naming_the_key(
    tmp_path: Path, bad: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(str(write(tmp_path, f'[backup]\nschedule = "{bad}"\n')))
    assert f"backup.schedule = {bad!r}" in str(caught.value)
    assert "HH:MM" in str(caught.value)
    assert caught.value.exit_code == 78


@given(text=st.text(max_size=12))
def test_backup_schedule_takes_exactly_the_times_of_day_as_hh_mm(text: str) -> None:
    import re

    from pydantic import ValidationError

    from hublink.config import BackupSettings

    try:
        accepted = BackupSettings(schedule=text).schedule
    except ValidationError as err:
        assert not re.fullmatch(_HH_MM, text.strip())
        assert "HH:MM" in str(err)
    else:
        if not text.strip():
            assert accepted is None  # empty: no schedule
        else:
            assert accepted == text.strip() and re.fullmatch(_HH_MM, accepted)


def test_an_invalid_schedule_from_the_environment_stops_the_cli_with_78(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hublink.cli import main

    monkeypatch.setenv("HUBLINK_BACKUP__SCHEDULE", "3pm")
    assert main(["status"]) == 78


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ("9464", "not HOST:PORT"),
        (":9464", "not HOST:PORT"),
        ("localhost:0", "between 1 and 65535"),
        ("127.0.0.1:65536", "between 1 and 65535"),
        ("127.0.0.1 9464", "not HOST:PORT"),
    ],
)
def test_an_invalid_metrics_listen_is_a_config_error_naming_the_key(
    tmp_path: Path, bad: str, named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(str(write(tmp_path, f'[metrics]\nlisten = "{bad}"\n')))
    assert f"metrics.listen = {bad!r}" in str(caught.value)
    assert named in str(caught.value)


@pytest.mark.parametrize("jitter", ["-1", "86400", "1e9"])
def test_a_schedule_jitter_of_a_day_or_more_is_refused(tmp_path: Path, jitter: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(str(write(tmp_path, f"[backup]\nschedule_jitter = {jitter}\n")))
    assert "backup.schedule_jitter" in str(caught.value)


# --- what the file holds: bytes, encodings, folders (issue 10, items 1 and 2) ----------


def test_a_latin1_file_is_named_with_the_line_and_column_of_the_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "hublink.toml"
    path.write_bytes('[hub]\nname = "Tienda ñandú"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path))
    text = str(caught.value)
    assert f"config file {path} is not UTF-8 text: byte 0xf1 at line 2, column 16" in text
    assert "iconv" in text
    assert caught.value.exit_code == 78


def test_a_utf8_bom_is_named(tmp_path: Path) -> None:
    path = tmp_path / "hublink.toml"
    path.write_bytes(b"\xef\xbb\xbf" + b'cloud_url = "https://cloud.example"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path))
    assert "byte-order mark (BOM)" in str(caught.value)
    assert str(path) in str(caught.value)


def test_a_utf16_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "hublink.toml"
    path.write_bytes('cloud_url = "https://cloud.example"\n'.encode("utf-16"))
    with pytest.raises(ConfigError, match="is UTF-16 text, not UTF-8"):
        load_settings(str(path))


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/etc", "config file /etc is a folder, not a file"),
        ("/dev/zero", "is larger than 1024 KiB"),
        ("{tmp}/plain-file/hublink.toml", "cannot be read: Not a directory"),
    ],
)
def test_a_path_that_is_no_config_file_is_named(tmp_path: Path, target: str, expected: str) -> None:
    (tmp_path / "plain-file").write_text("")
    with pytest.raises(ConfigError) as caught:
        load_settings(target.format(tmp=tmp_path))
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n = " + "1" * 5000 + "\n", "a value hublink cannot read (Exceeds the limit"),
        ("n = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
        ("[websocket]\nheartbeat_interval = inf\n", "websocket.heartbeat_interval = inf"),
        ("[websocket]\nping_timeout = nan\n", "websocket.ping_timeout = nan"),
    ],
)
def test_toml_that_python_cannot_hold_is_a_config_error(
    tmp_path: Path, text: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(str(write(tmp_path, text)))
    assert expected in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(
    raw=st.one_of(
        st.binary(max_size=300),
        # Near misses: TOML-ish text in the wrong encoding, with a BOM, or cut short.
        st.builds(
            lambda text, encoding, bom: bom + text.encode(encoding, errors="replace"),
            st.text(alphabet='[]=."\n abcñú#0123456789_-', max_size=120),
            st.sampled_from(["utf-8", "latin-1", "utf-16", "cp1252"]),
            st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe"]),
        ),
    )
)
def test_any_bytes_as_a_config_file_load_or_fail_naming_the_file(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "hublink.toml"
        path.write_bytes(raw)
        try:
            load_settings(str(path))
        except ConfigError as err:
            assert str(path) in str(err)
            assert err.exit_code == 78


# --- tables in the environment: whole replaces, per key merges (item 13) ---------------

FILE_HOOKS = (
    '[hooks]\nuser_revoked = ["/bin/revoke"]\nplugin_update_available = ["/bin/notify"]\n'
    "[websocket]\nping_interval = 7\nheartbeat_interval = 5\n"
)


@pytest.mark.parametrize(
    ("whole", "expected"),
    [
        ("{}", {}),
        (
            '{"plugin_update_available": ["/bin/other"]}',
            {"plugin_update_available": ("/bin/other",)},
        ),
    ],
)
def test_a_table_given_whole_in_the_environment_replaces_the_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whole: str, expected: dict[str, object]
) -> None:
    monkeypatch.setenv("HUBLINK_HOOKS", whole)
    assert load_settings(str(write(tmp_path, FILE_HOOKS))).hooks == expected


def test_a_section_given_whole_replaces_it_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("hublink_websocket", '{"heartbeat_interval": 2}')  # any case
    websocket = load_settings(str(write(tmp_path, FILE_HOOKS))).websocket
    assert (websocket.heartbeat_interval, websocket.ping_interval) == (2, 20)  # 20: the default


def test_a_variable_for_one_key_merges_into_the_files_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBLINK_HOOKS__USER_REVOKED", '["/bin/env-revoke"]')
    monkeypatch.setenv("HUBLINK_WEBSOCKET__PING_INTERVAL", "3")
    settings = load_settings(str(write(tmp_path, FILE_HOOKS)))
    assert settings.hooks == {
        "user_revoked": ("/bin/env-revoke",),
        "plugin_update_available": ("/bin/notify",),
    }
    assert (settings.websocket.ping_interval, settings.websocket.heartbeat_interval) == (3, 5)


def test_whole_and_per_key_variables_combine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBLINK_HOOKS", "{}")
    monkeypatch.setenv("HUBLINK_HOOKS__USER_REVOKED", '["/bin/env-revoke"]')
    settings = load_settings(str(write(tmp_path, FILE_HOOKS)))
    assert settings.hooks == {"user_revoked": ("/bin/env-revoke",)}


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("HUBLINK_HOOKS", "", "HUBLINK_HOOKS is not valid JSON"),
        ("HUBLINK_WEBSOCKET", "{bad", "HUBLINK_WEBSOCKET is not valid JSON"),
        ("HUBLINK_BACKUP__RECIPIENTS", "[bad", "HUBLINK_BACKUP__RECIPIENTS: Expecting value"),
        ("HUBLINK_HOOKS", "[]", "hooks = []: Input should be a valid dictionary"),
    ],
)
def test_a_bad_table_in_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(None)
    assert expected in str(caught.value)


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(
        [
            "HUBLINK_HOOKS",
            "HUBLINK_WEBSOCKET",
            "HUBLINK_TUNNEL",
            "HUBLINK_BACKUP__RECIPIENTS",
            "HUBLINK_HOOKS__USER_REVOKED",
            "HUBLINK_TUNNEL__SERVER_PORT",
        ]
    ),
    value=st.one_of(
        st.text(max_size=40).filter(lambda v: "\x00" not in v),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=8), inner, max_size=3)
            ),
            max_leaves=6,
        ).map(json.dumps),
    ),
)
def test_any_environment_value_loads_or_is_a_config_error(name: str, value: str) -> None:
    # os.environ directly: hypothesis runs many examples inside one test function.
    os.environ[name] = value
    try:
        load_settings(None)
    except ConfigError as err:
        assert err.exit_code == 78
    finally:
        del os.environ[name]


# --- empty means unset (item 14) -------------------------------------------------------


def unset_by_default() -> list[tuple[str, str | None]]:
    """Every (section, key) whose default is unset, top level as (key, None)."""
    found: list[tuple[str, str | None]] = []
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found += [
                (name, key) for key, sub in annotation.model_fields.items() if sub.default is None
            ]
        elif field.default is None:
            found.append((name, None))
    return found


def test_the_optional_keys_are_found() -> None:
    assert {("backup", "database"), ("tls", "ca_file"), ("tunnel", "server_addr")} <= set(
        unset_by_default()
    )


@pytest.mark.parametrize("blank", ["", "   ", "\t"])
@pytest.mark.parametrize(("section", "key"), unset_by_default())
def test_an_empty_optional_key_means_unset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, section: str, key: str | None, blank: str
) -> None:
    if key is None:
        text, env = f"{section} = {json.dumps(blank)}\n", f"HUBLINK_{section.upper()}"
    else:
        text, env = (
            f"[{section}]\n{key} = {json.dumps(blank)}\n",
            f"HUBLINK_{section.upper()}__{key.upper()}",
        )

    def value(settings: Settings) -> object:
        return (
            getattr(settings, section) if key is None else getattr(getattr(settings, section), key)
        )

    assert value(load_settings(str(write(tmp_path, text)))) is None
    monkeypatch.setenv(env, blank)
    assert value(load_settings(None)) is None


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('state_dir = ""\n', "state_dir = '': must not be empty"),
        ('runtime_dir = " "\n', "runtime_dir = ' ': must not be empty"),
        ('[tunnel]\nfrpc_path = ""\n', "tunnel.frpc_path = '': must not be empty"),
    ],
)
def test_an_empty_key_with_a_default_is_an_error_not_the_current_folder(
    tmp_path: Path, text: str, named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(str(write(tmp_path, text)))
    assert named in str(caught.value)
