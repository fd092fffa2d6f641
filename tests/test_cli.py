"""The command line as an operator meets it: exit codes, --version, unregister, pipes, bad input."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from hublink import __version__
from hublink.cli import build_parser, main
from hublink.cli.failures import report_unexpected
from hublink.errors import HublinkError
from support.devcloud import HubEnv
from support.terminal import CTRL_D, Terminal, spawn_on


def hublink(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hublink", *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=env,
        timeout=30,
        check=False,
    )


def env_for(state_dir: Path, config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBLINK_")}
    env |= {"HUBLINK_CONFIG": str(config), "HUBLINK_STATE_DIR": str(state_dir)}
    return env


def test_version() -> None:
    result = hublink("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"hublink {__version__}")


def test_help_and_wrong_usage() -> None:
    assert hublink("--help").returncode == 0
    wrong = hublink("no-such-command")
    assert wrong.returncode == 2
    assert "invalid choice" in wrong.stderr
    assert hublink().returncode == 2
    assert hublink("send", "heartbeat", "--data", "{}").returncode == 2


def test_config_is_accepted_before_or_after_the_command(tmp_path: Path) -> None:
    config = tmp_path / "placed.toml"
    config.write_text(f'state_dir = "{tmp_path / "from-file"}"\n')
    for argv in (
        ("--config", str(config), "status", "--json"),
        ("status", "--config", str(config), "--json"),
    ):
        result = hublink(*argv)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["state_dir"] == str(tmp_path / "from-file")
    assert hublink("status", "--config", str(tmp_path / "absent.toml")).returncode == 78


def test_a_bad_config_exits_78_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "hublink.toml"
    config.write_text("[websocket]\nheartbeat_interval = -5\n")
    result = hublink("status", env=env_for(tmp_path / "state", config))
    assert result.returncode == 78
    assert "websocket.heartbeat_interval = -5" in result.stderr
    assert "Traceback" not in result.stderr


def test_unregister_forgets_the_credentials(hub_settings: HubEnv, tmp_path: Path) -> None:
    config = tmp_path / "hublink.toml"
    env = env_for(hub_settings.settings.state_dir, config)
    credentials = hub_settings.settings.credentials_path
    frpc_config = hub_settings.settings.state_dir / "frpc.toml"
    frpc_config.write_text(f'metadatas.token = "{hub_settings.token}"\n')  # as the tunnel leaves it
    refused = hublink("unregister", env=env, stdin="")
    assert refused.returncode == 2  # not a terminal and no --yes: nothing asked, nothing done
    assert credentials.exists()
    done = hublink("unregister", "--yes", env=env)
    assert done.returncode == 0, done.stderr
    assert not credentials.exists()
    assert not frpc_config.exists()  # it held the same token
    assert hublink("run", env=env).returncode == 78
    again = hublink("unregister", "--yes", env=env)
    assert again.returncode == 0
    assert "not registered" in again.stdout


def test_a_closed_pipe_is_not_a_crash(tmp_path: Path) -> None:
    env = env_for(tmp_path / "state", tmp_path / "hublink.toml")
    with subprocess.Popen(
        [sys.executable, "-m", "hublink", "status", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # like `| head -0`: the reader is gone before the output
        stderr = proc.stderr.read().decode()
        code = proc.wait(timeout=30)
    assert "Traceback" not in stderr
    assert code == 1


# --- a config file that is not one (issue 10, items 1 and 2) ----------------------------

#: Every command that reads the config; each must refuse a broken one with 78.
READS_CONFIG = [
    ("status",),
    ("doctor",),
    ("run",),
    ("restore", "x.age", "--identity", "id.txt", "--output", "out.db"),
]


@pytest.mark.parametrize("argv", READS_CONFIG, ids=lambda argv: argv[0])
@pytest.mark.parametrize(
    ("content", "named"),
    [
        ('[hub]\nname = "Tienda ñandú"\n'.encode("latin-1"), "is not UTF-8 text: byte 0xf1"),
        (b'\xef\xbb\xbfstate_dir = "/tmp/x"\n', "byte-order mark (BOM)"),
    ],
    ids=["latin-1", "bom"],
)
def test_a_config_that_is_not_utf8_exits_78_naming_the_file(
    tmp_path: Path, argv: tuple[str, ...], content: bytes, named: str
) -> None:
    config = tmp_path / "hublink.toml"
    config.write_bytes(content)
    result = hublink("--config", str(config), *argv, env=env_for(tmp_path / "state", config))
    said = result.stdout + result.stderr  # doctor's report is its output
    assert result.returncode == 78
    assert str(config) in said and named in said
    assert "Traceback" not in said


@pytest.mark.parametrize("argv", READS_CONFIG, ids=lambda argv: argv[0])
def test_a_folder_as_config_exits_78(tmp_path: Path, argv: tuple[str, ...]) -> None:
    result = hublink("--config", "/etc", *argv, env=env_for(tmp_path / "state", Path("/etc")))
    said = result.stdout + result.stderr
    assert result.returncode == 78
    assert "config file /etc is a folder, not a file" in said
    assert "Traceback" not in said


def run_main(*argv: str) -> tuple[int, str, str]:
    """``hublink ARGV`` in this process (hypothesis runs hundreds): exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@settings(max_examples=150, deadline=None)
@given(
    raw=st.binary(max_size=200)
    | st.text(max_size=100).map(lambda t: t.encode("latin-1", "replace"))
)
def test_any_bytes_as_a_config_file_never_give_a_traceback(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "hublink.toml"
        config.write_bytes(raw)
        os.environ["HUBLINK_STATE_DIR"] = str(Path(folder) / "state")
        os.environ["HUBLINK_RUNTIME_DIR"] = str(Path(folder) / "run")
        try:
            code, _, err = run_main("--config", str(config), "status")
        finally:
            del os.environ["HUBLINK_STATE_DIR"], os.environ["HUBLINK_RUNTIME_DIR"]
    assert code in (0, 78), err
    if code == 78:
        assert f"config file {config}" in err or "invalid configuration" in err
    assert "internal error" not in err


# --- random argv: every command ends in a message and a contract exit code -------------

#: Commands whose every parse is safe to run here, with the options each takes.
COMMAND_OPTIONS: dict[str, list[str]] = {
    "status": ["--json"],
    "send": [
        *("user_sync", "plugin_installed", "--data", "-", "@", "@.", "{}", '{"users": []}'),
        # JSON that json.loads refuses or Python cannot hold faithfully (item 6's kind).
        *('{"n": NaN}', '{"n": 1e999}', '{"n": "\\ud83d"}', "1" * 5000, "[" * 5000),
    ],
    "backup": ["--output", "--force", "out.age"],
    "restore": ["--identity", "--output", "--force", "x.age", "id.txt", "out.db"],
    "tunnel-config": [],
    "unregister": ["--yes"],
    "register": ["--email", "--password-stdin", "--name", "--address", "--force", "a@b.c"],
    "doctor": ["--json"],
    "run": [],
    "demo": ["--keep"],
    "devcloud": ["--host", "--port", "--frps", "--frps-port", "--data-dir", "70000", "-1"],
}
#: Commands that would run for long when their arguments parse: only their
#: parse failures are tried here (the commands' own tests run them).
LONG_RUNNING = {"run", "demo", "devcloud"}
#: Random words: option-like, path-like (inside the test's folder), or any text,
#: including the lone surrogates that non-UTF-8 bytes in argv become.
WORDS = st.one_of(
    st.sampled_from(["--config", "--help", "-", "--", "--json", "--yes", ""]),
    st.text(alphabet=st.characters(blacklist_characters="/\x00"), max_size=12),
    st.sampled_from(["\udcff", "caf\udce9", "@\udcff.json", "ñandú"]),
)


@settings(max_examples=250, deadline=None)
@given(data=st.data())
def test_random_argv_never_gives_a_traceback(data: st.DataObject) -> None:
    command = data.draw(st.sampled_from(sorted(COMMAND_OPTIONS)))
    # Mostly the command's own words, so that many argv get past the parser.
    known = data.draw(st.lists(st.sampled_from(COMMAND_OPTIONS[command] or ["--json"]), max_size=5))
    stray = data.draw(st.lists(WORDS, max_size=1))
    argv = [command, *data.draw(st.permutations(known + stray))]
    if command in LONG_RUNNING:
        parsed = contextlib.suppress(HublinkError, SystemExit)
        with (
            parsed,
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            build_parser().parse_args(argv)
            assume(False)  # it parses: it would really run
    with tempfile.TemporaryDirectory() as folder:
        cwd = os.getcwd()
        os.chdir(folder)
        os.environ.update(
            HUBLINK_STATE_DIR=str(Path(folder) / "state"),
            HUBLINK_RUNTIME_DIR=str(Path(folder) / "run"),
            HUBLINK_CLOUD_URL="http://127.0.0.1:9",  # refused at once: nothing leaves the box
        )
        try:
            code, _, err = run_main(*argv)
        finally:
            os.chdir(cwd)
            for key in ("HUBLINK_STATE_DIR", "HUBLINK_RUNTIME_DIR", "HUBLINK_CLOUD_URL"):
                del os.environ[key]
    event(f"{command} exit {code}")
    assert code in (0, 1, 2, 69, 77, 78), (argv, err)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)


def test_an_unexpected_error_is_one_line_with_where_and_a_bug_hint() -> None:
    try:
        int("1" * 5000)
    except ValueError as caught:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = report_unexpected(caught, "send", None)
    assert code == 1
    first, hint = err.getvalue().splitlines()
    assert first.startswith("hublink: internal error: ValueError: Exceeds the limit")
    assert f"bug in hublink {__version__}" in hint and "HUBLINK_LOG__LEVEL=debug" in hint


def test_an_os_error_that_escapes_names_its_file(tmp_path: Path) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = report_unexpected(
            OSError(errno.ENOSPC, "No space left on device", str(tmp_path)), "backup", None
        )
    assert code == 1
    assert err.getvalue() == f"hublink: error: No space left on device: {tmp_path}\n"


# --- a state dir owned by another user (item 3) -----------------------------------------

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="giving the state dir to another user needs root (and setpriv)",
)


def as_another_user(
    *args: str, env: dict[str, str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """``hublink ARGS`` as root without the capabilities that ignore file modes.

    The Python running the tests lives under /root, which another uid cannot
    read; root without CAP_DAC_OVERRIDE meets a folder of another user exactly
    as that user's neighbour would.
    """
    return subprocess.run(
        [
            "setpriv",
            "--bounding-set",
            "-dac_override,-dac_read_search,-fowner",
            sys.executable,
            "-m",
            "hublink",
            *args,
        ],
        capture_output=True,
        text=True,
        input=stdin,
        env=env,
        timeout=30,
        check=False,
    )


@needs_root
@pytest.mark.parametrize(
    "argv",
    [
        ("register", "--email", "owner@shop.example", "--password-stdin"),
        ("register", "--force", "--email", "owner@shop.example", "--password-stdin"),
        ("unregister", "--yes"),
        ("backup", "--output", "{tmp}/hub.db.zst.age"),
        ("backup",),
        ("send", "user_sync", "--data", '{"users": []}'),
        ("status",),
        ("run",),
        ("tunnel-config",),
    ],
    ids=" ".join,
)
def test_a_state_dir_of_another_user_exits_78_with_the_sudo_hint(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, 65534, 65534)
    owner = pwd.getpwuid(65534).pw_name
    database = tmp_path / "hub.sqlite3"
    sqlite3.connect(database).close()
    env = env_for(state, tmp_path / "hublink.toml") | {
        "HUBLINK_RUNTIME_DIR": str(tmp_path / "run"),
        "HUBLINK_BACKUP__DATABASE": str(database),
        "HUBLINK_CLOUD_URL": "http://127.0.0.1:9",  # a 69 would mean it got that far
    }
    argv = tuple(arg.replace("{tmp}", str(tmp_path)) for arg in argv)
    result = as_another_user(*argv, env=env, stdin="a password\n")
    assert result.returncode == 78, result.stderr
    assert f"the state directory {state} belongs to {owner}" in result.stderr
    assert f"hint: run it as {owner}: sudo -u {owner} hublink {argv[0]}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "hub.db.zst.age").exists()


def test_an_empty_backup_database_means_unset_not_the_current_folder(tmp_path: Path) -> None:
    # Issue 10, item 14: "" used to be read as ".", "the database . is not a regular file".
    config = tmp_path / "hublink.toml"
    config.write_text('[backup]\ndatabase = ""\n')
    result = hublink(
        "backup", "--output", str(tmp_path / "b.age"), env=env_for(tmp_path / "state", config)
    )
    assert result.returncode == 78
    assert "backup.database is not set" in result.stderr


@pytest.mark.parametrize(
    ("keys", "code", "said"), [(CTRL_D, 1, "kept the credentials"), ("y\n", 0, "forgot")]
)
async def test_unregister_asks_on_a_terminal_and_ctrl_d_means_no(
    hub_settings: HubEnv, tmp_path: Path, keys: str, code: int, said: str
) -> None:
    env = env_for(hub_settings.settings.state_dir, tmp_path / "hublink.toml")
    tty = Terminal()
    proc = await spawn_on(tty, "unregister", env=env)
    try:
        await tty.read_until("[y/N] ")
        os.write(tty.primary, keys.encode())
        await tty.read_until(said)
    finally:
        assert await tty.finish(proc) == code
    assert "Traceback" not in tty.output
    assert hub_settings.settings.credentials_path.exists() == (code == 1)
