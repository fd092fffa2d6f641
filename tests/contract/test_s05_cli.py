"""Contract section 5, the command line: ``hublink`` run as an operator runs it, in a child process.

What it proves, command by command: usage errors exit 2, ``--version``,
``--config`` before or after the command, a bad config exits 78 naming the key,
``unregister``, a closed pipe is no crash; ``register`` prints its steps, saves
private credentials, refuses to replace them without ``--force`` before it
contacts the Cloud, prompts on a terminal without echoing the password, and two
at once enroll one hub; ``run`` stops cleanly within five seconds on a signal
(a second one forces it), is the only daemon, tells systemd READY/STATUS and
pings its watchdog, and follows a re-registration as the new hub; ``status``
(and ``--json``) with and without a daemon, even a hung one; ``send`` queues
durably with or without a daemon and refuses bad data clearly; ``doctor``'s
exit codes and its view of a running daemon.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import pwd
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import time
import tomllib
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from hublink import __version__
from hublink.config import BackupSettings, Settings, TunnelSettings
from hublink.control import status_now
from hublink.credentials import CredentialStore
from hublink.devcloud import DEMO_EMAIL, DEMO_PASSWORD, DevCloud
from hublink.devcloud.ports import free_port
from hublink.link.messages import BackupCompleted, parse_inbound, validate_event
from hublink.link.notices import StateStore
from hublink.link.outbox import Outbox
from support.cli import (
    HUBLINK_COMMAND,
    HubBox,
    make_child_env,
    run_hublink,
    run_hublink_timed,
)
from support.cloud import HubEnv, make_hub_env, make_revocation
from support.daemon import Daemons
from support.network import Listeners, TcpProxy
from support.polling import wait_until
from support.terminal import CTRL_D, Terminal, spawn_on


def env_for(state_dir: Path, config: Path) -> dict[str, str]:
    return make_child_env(HUBLINK_CONFIG=str(config), HUBLINK_STATE_DIR=str(state_dir))


# --- usage, --version, --config, exit codes, pipes -----------------------------------------


def test_version() -> None:
    result = run_hublink("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"hublink {__version__}")


def test_help_and_wrong_usage() -> None:
    assert run_hublink("--help").returncode == 0
    wrong = run_hublink("no-such-command")
    assert wrong.returncode == 2
    assert "invalid choice" in wrong.stderr
    assert run_hublink().returncode == 2
    assert run_hublink("send", "heartbeat", "--data", "{}").returncode == 2


def test_config_is_accepted_before_or_after_the_command(tmp_path: Path) -> None:
    config = tmp_path / "placed.toml"
    config.write_text(f'state_dir = "{tmp_path / "from-file"}"\n')
    for argv in (
        ("--config", str(config), "status", "--json"),
        ("status", "--config", str(config), "--json"),
    ):
        result = run_hublink(*argv)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["state_dir"] == str(tmp_path / "from-file")
    assert run_hublink("status", "--config", str(tmp_path / "absent.toml")).returncode == 78


def test_a_bad_config_exits_78_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "hublink.toml"
    config.write_text("[websocket]\nheartbeat_interval = -5\n")
    result = run_hublink("status", env=env_for(tmp_path / "state", config))
    assert result.returncode == 78
    assert "websocket.heartbeat_interval = -5" in result.stderr
    assert "Traceback" not in result.stderr


def test_unregister_forgets_the_credentials(hub: HubEnv, tmp_path: Path) -> None:
    config = tmp_path / "hublink.toml"
    env = env_for(hub.settings.state_dir, config)
    credentials = hub.settings.credentials_path
    frpc_config = hub.settings.state_dir / "frpc.toml"
    frpc_config.write_text(f'metadatas.token = "{hub.token}"\n')  # as the tunnel leaves it
    refused = run_hublink("unregister", env=env, stdin="")
    assert refused.returncode == 2  # not a terminal and no --yes: nothing asked, nothing done
    assert credentials.exists()
    done = run_hublink("unregister", "--yes", env=env)
    assert done.returncode == 0, done.stderr
    assert not credentials.exists()
    assert not frpc_config.exists()  # it held the same token
    # A command that needs credentials now says 78 (`run` would wait: contract section 5).
    assert run_hublink("tunnel-config", env=env).returncode == 78
    again = run_hublink("unregister", "--yes", env=env)
    assert again.returncode == 0
    assert "not registered" in again.stdout


def test_a_closed_pipe_is_not_a_crash(tmp_path: Path) -> None:
    env = env_for(tmp_path / "state", tmp_path / "hublink.toml")
    with subprocess.Popen(
        [*HUBLINK_COMMAND, "status", "--json"],
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


# --- a config file that is not one; a state dir of another user ----------------------------


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
    result = run_hublink("--config", str(config), *argv, env=env_for(tmp_path / "state", config))
    said = result.stdout + result.stderr  # doctor's report is its output
    assert result.returncode == 78
    assert str(config) in said and named in said
    assert "Traceback" not in said


@pytest.mark.parametrize("argv", READS_CONFIG, ids=lambda argv: argv[0])
def test_a_folder_as_config_exits_78(tmp_path: Path, argv: tuple[str, ...]) -> None:
    result = run_hublink("--config", "/etc", *argv, env=env_for(tmp_path / "state", Path("/etc")))
    said = result.stdout + result.stderr
    assert result.returncode == 78
    assert "config file /etc is a folder, not a file" in said
    assert "Traceback" not in said


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
    return run_hublink(
        *args,
        env=env,
        stdin=stdin,
        timeout=30,
        via=("setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner"),
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
    result = run_hublink(
        "backup", "--output", str(tmp_path / "b.age"), env=env_for(tmp_path / "state", config)
    )
    assert result.returncode == 78
    assert "backup.database is not set" in result.stderr


@pytest.mark.parametrize(
    ("keys", "code", "said"), [(CTRL_D, 1, "kept the credentials"), ("y\n", 0, "forgot")]
)
async def test_unregister_asks_on_a_terminal_and_ctrl_d_means_no(
    hub: HubEnv, tmp_path: Path, keys: str, code: int, said: str
) -> None:
    env = env_for(hub.settings.state_dir, tmp_path / "hublink.toml")
    tty = Terminal()
    proc = await spawn_on(tty, "unregister", env=env)
    try:
        await tty.read_until("[y/N] ")
        os.write(tty.primary, keys.encode())
        await tty.read_until(said)
    finally:
        assert await tty.finish(proc) == code
    assert "Traceback" not in tty.output
    assert hub.settings.credentials_path.exists() == (code == 1)


# --- register ---------------------------------------------------------------------------


async def test_register_prints_steps_and_saves_private_credentials(
    devcloud: DevCloud, box: HubBox
) -> None:
    run = await box.register()
    assert run.code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"logging in to {devcloud.url} as {DEMO_EMAIL}"
    assert lines[1] == "verifying the Cloud's token"
    assert lines[2] == "registering hub 'Corner Shop'"
    assert lines[3] == f"saved the credentials to {box.credentials}"
    assert lines[4].startswith("reminder: no recipient of your own is configured")
    (hub,) = devcloud.hubs()
    assert lines[5] == f"registered: hub id {hub.hub_id}, slug {hub.slug}"
    assert (hub.name, hub.address) == ("Corner Shop", "Main Street 1")
    assert stat.S_IMODE(box.credentials.stat().st_mode) == 0o600
    saved = tomllib.loads(box.credentials.read_text())
    assert saved["hub_id"] == hub.hub_id
    assert saved["tunnel_token"] == hub.tunnel_token
    assert saved["cloud_url"] == devcloud.url
    assert "registered_at" in saved


async def test_name_falls_back_to_the_hostname(devcloud: DevCloud, box: HubBox) -> None:
    del box.env["HUBLINK_HUB__NAME"]
    run = await box.register()
    assert run.code == 0, run.stderr
    assert [h.name for h in devcloud.hubs()] == [socket.gethostname()]


async def test_already_registered_is_refused_without_contacting_the_cloud(
    devcloud: DevCloud, box: HubBox
) -> None:
    first = await box.register()
    assert first.code == 0, first.stderr
    before = box.credentials.read_bytes()
    # Any request reaching the Cloud now would fail: the refusal must come first.
    devcloud.fail_next("/api/", 500, count=100)
    run = await box.register()
    assert run.code == 78
    assert "already registered" in run.stderr and "--force" in run.stderr
    assert "logging in" not in run.stdout
    assert len(devcloud.hubs()) == 1
    assert box.credentials.read_bytes() == before


async def test_force_registers_again(devcloud: DevCloud, box: HubBox) -> None:
    assert (await box.register()).code == 0
    run = await box.register("--force")
    assert run.code == 0, run.stderr
    assert run.stdout.count("replacing the credentials of hub") == 1
    assert len(devcloud.hubs()) == 2


async def test_without_a_terminal_email_and_password_stdin_are_required(box: HubBox) -> None:
    run = await run_hublink_timed("register", "--email", DEMO_EMAIL, env=box.env, stdin="x\n")
    assert run.code == 2
    assert "--password-stdin" in run.stderr


# --- register: at once, on a terminal ----------------------------------------------------


async def test_concurrent_registers_save_exactly_one_hub(devcloud: DevCloud, box: HubBox) -> None:
    """Two runs at once: one enrolls; the other waits for the lock, then refuses (78)."""
    devcloud.fail_next("/api/auth/login/", None, delay=1.0)
    first, second = await asyncio.gather(box.register(), box.register())
    assert sorted([first.code, second.code]) == [0, 78]
    refused = first if first.code == 78 else second
    assert "already registered" in refused.stderr
    (hub,) = devcloud.hubs()
    assert tomllib.loads(box.credentials.read_text())["hub_id"] == hub.hub_id


async def test_interactive_prompts_and_never_echoes_the_password(
    devcloud: DevCloud, box: HubBox
) -> None:
    box.env["HUBLINK_LOG__LEVEL"] = "warning"
    tty = Terminal()
    proc = await spawn_on(tty, "register", env=box.env)
    try:
        await tty.read_until("email: ")
        tty.type(DEMO_EMAIL)
        await tty.read_until("password: ")
        tty.type(DEMO_PASSWORD)
        await tty.read_until("registered: hub id")
        await tty.read_until("\n", timeout=5)
    finally:
        code = await tty.finish(proc)
    assert code == 0
    assert DEMO_EMAIL in tty.output  # the email is echoed as typed...
    assert DEMO_PASSWORD not in tty.output  # ...the password is not
    (hub,) = devcloud.hubs()
    assert hub.name == "Corner Shop"


async def test_password_stdin_at_a_terminal_asks_without_echo(
    devcloud: DevCloud, box: HubBox
) -> None:
    # Issue 10, item 5: --password-stdin typed at a terminal must not show the password.
    box.env["HUBLINK_LOG__LEVEL"] = "warning"
    tty = Terminal()
    proc = await spawn_on(tty, "register", "--email", DEMO_EMAIL, "--password-stdin", env=box.env)
    try:
        await tty.read_until("password: ")
        tty.type(DEMO_PASSWORD)
        await tty.read_until("registered: hub id")
        await tty.read_until("\n", timeout=5)
    finally:
        code = await tty.finish(proc)
    assert code == 0
    assert DEMO_PASSWORD not in tty.output
    assert len(devcloud.hubs()) == 1


@pytest.mark.parametrize(
    ("args", "typed", "named"),
    [
        ((), [("email: ", CTRL_D)], "no email given"),
        ((), [("email: ", DEMO_EMAIL + "\n"), ("password: ", CTRL_D)], "no password given"),
        (("--email", DEMO_EMAIL), [("password: ", CTRL_D)], "no password given"),
        (("--email", DEMO_EMAIL, "--password-stdin"), [("password: ", CTRL_D)], "no password"),
        ((), [("email: ", "due\xf1o@shop.example\n")], "the email from the terminal is not UTF-8"),
    ],
    ids=["email", "password", "password-with-email", "password-stdin", "latin-1-email"],
)
async def test_ctrl_d_or_bad_bytes_at_a_prompt_end_with_a_usage_error_and_nothing_registered(
    devcloud: DevCloud,
    box: HubBox,
    args: tuple[str, ...],
    typed: list[tuple[str, str]],
    named: str,
) -> None:
    # Issue 10, item 4: Ctrl-D at a prompt was an EOFError traceback.
    box.env["HUBLINK_LOG__LEVEL"] = "warning"
    tty = Terminal()
    proc = await spawn_on(tty, "register", *args, env=box.env)
    try:
        for prompt, keys in typed:
            await tty.read_until(prompt)
            # latin-1: what a terminal set to ISO-8859-1 sends for ñ (one byte, 0xf1)
            os.write(tty.primary, keys.encode("latin-1"))
        await tty.read_until(named)
        await tty.read_until("\n", timeout=5)
    finally:
        code = await tty.finish(proc)
    assert code == 2
    assert "Traceback" not in tty.output and "Error:" not in tty.output
    assert devcloud.hubs() == []
    assert not box.credentials.exists()


# --- run: the daemon as systemd starts it ------------------------------------------------


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
async def test_a_signal_stops_the_daemon_cleanly_within_five_seconds(
    hub: HubEnv, daemons: Daemons, signame: str
) -> None:
    cloud = hub.cloud
    daemon = await daemons.start()
    await wait_until(lambda: hub.heartbeats, what="first heartbeat")
    started = time.monotonic()
    daemon.proc.send_signal(getattr(signal, signame))
    assert await daemon.wait_exit(timeout=6) == 0
    assert time.monotonic() - started < 5
    await wait_until(lambda: cloud.close_codes(hub.hub_id), what="the close")
    assert cloud.close_codes(hub.hub_id) == [1001]
    assert not hub.settings.control_socket.exists()


def through_slow_keepalive(hub: HubEnv, proxy: TcpProxy) -> Settings:
    """The hub's settings via ``proxy``, with a keepalive too slow to end a hung close."""
    # Only the bounded close handshake can then end the wait on shutdown.
    return hub.settings.model_copy(
        update={
            "cloud_url": proxy.url,
            "websocket": hub.settings.websocket.model_copy(
                update={"ping_interval": 30, "ping_timeout": 30}
            ),
        }
    )


async def test_sigterm_stops_within_five_seconds_even_when_the_cloud_hangs(
    hub: HubEnv, daemons: Daemons
) -> None:
    proxy = await TcpProxy(hub.cloud.port).start()
    try:
        daemon = await daemons.start(settings=through_slow_keepalive(hub, proxy))
        await wait_until(lambda: hub.heartbeats, what="first heartbeat")
        proxy.blackhole()
        started = time.monotonic()
        assert await daemon.terminate(timeout=6) == 0
        assert time.monotonic() - started < 5
    finally:
        await proxy.close()


async def test_a_second_signal_forces_the_exit(hub: HubEnv, daemons: Daemons) -> None:
    proxy = await TcpProxy(hub.cloud.port).start()
    try:
        daemon = await daemons.start(settings=through_slow_keepalive(hub, proxy))
        await wait_until(lambda: hub.heartbeats, what="first heartbeat")
        proxy.blackhole()  # the closing handshake now hangs until its timeout
        daemon.proc.send_signal(signal.SIGTERM)
        await wait_until(
            lambda: any(e["event"] == "stopping" for e in daemon.log_events()),
            what="the graceful stop to begin",
        )
        started = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        code = await daemon.wait_exit(timeout=6)
        assert time.monotonic() - started < 1.5
        assert code == 1
        assert any("forcing exit" in e["event"] for e in daemon.log_events())
    finally:
        await proxy.close()


async def test_run_without_credentials_waits_and_says_how_to_register(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    # Contract section 5: `run` on an unregistered hub waits (it used to exit 78;
    # the contract wins). tests/test_daemon_registration.py has the rest.
    hub = make_hub_env(devcloud, tmp_path / "h")
    hub.settings.credentials_path.unlink()
    daemon = await daemons.start(hub)
    status = await daemon.wait_status(lambda s: s["daemon"]["running"])
    assert status["registered"] is False
    await wait_until(lambda: "hublink register" in daemon.log_text(), what="the hint")
    assert await daemon.terminate() == 0


async def test_a_second_daemon_is_refused_and_the_first_keeps_running(
    hub: HubEnv, daemons: Daemons
) -> None:
    first = await daemons.start()
    await first.wait_status(lambda s: s["websocket"]["state"] == "connected")
    second = await daemons.start()
    assert await second.wait_exit() != 0
    assert "another hublink daemon is running" in second.log_text()
    first.assert_running()
    assert first.status() is not None
    assert hub.cloud.connections(hub.hub_id) == 1


async def test_a_second_daemon_with_another_runtime_dir_is_refused_too(
    hub: HubEnv, daemons: Daemons, tmp_path: Path
) -> None:
    first = await daemons.start()
    await first.wait_status(lambda s: s["websocket"]["state"] == "connected")
    other = hub.settings.model_copy(update={"runtime_dir": tmp_path / "run2"})
    second = await daemons.start(settings=other)
    assert await second.wait_exit() != 0
    assert "another hublink daemon is running" in second.log_text()
    first.assert_running()


async def test_ready_comes_before_the_cloud_answers_and_status_lines_follow_the_link(
    hub: HubEnv, daemons: Daemons, tmp_path: Path
) -> None:
    cloud = hub.cloud
    port = cloud.port
    await cloud.stop()
    notify_path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(notify_path))
    receiver.setblocking(False)
    messages: list[str] = []

    def drain() -> list[str]:
        while True:
            try:
                messages.append(receiver.recv(4096).decode())
            except BlockingIOError:
                return messages

    try:
        daemon = await daemons.start(env={"NOTIFY_SOCKET": str(notify_path)})
        await wait_until(lambda: any("READY=1" in m for m in drain()), what="READY=1")
        # The Cloud is down: ready anyway, and the STATUS line tells why.
        await wait_until(
            lambda: any("STATUS=link backoff" in m for m in drain()), what="a backoff STATUS"
        )
        await cloud.start(port=port)
        await wait_until(
            lambda: any("STATUS=link connected" in m for m in drain()), what="a connected STATUS"
        )
        assert await daemon.terminate() == 0
        assert any("STOPPING=1" in m for m in drain())
    finally:
        receiver.close()


async def test_new_credentials_restart_the_link_as_the_new_hub(
    hub: HubEnv, daemons: Daemons, tmp_path: Path
) -> None:
    cloud = hub.cloud
    daemon = await daemons.start()
    await wait_until(lambda: hub.heartbeats, what="first heartbeat")
    again = make_hub_env(cloud, tmp_path / "again", name="Re-registered")
    store = CredentialStore(hub.settings.state_dir)
    with store.locked():
        store.save(again.creds)  # what `hublink register --force` does
    await wait_until(lambda: cloud.heartbeats(again.hub_id), what="heartbeats as the new hub")
    status = await daemon.wait_status(lambda s: s["hub_id"] == again.hub_id)
    assert status["websocket"]["state"] == "connected"
    # The old link was closed: only one hub is online.
    await wait_until(lambda: cloud.close_codes(hub.hub_id), what="old link closed")
    token = again.token
    assert token not in daemon.log_text()


async def test_every_line_after_a_re_registration_carries_the_new_hub_id(
    hub: HubEnv, daemons: Daemons, tmp_path: Path
) -> None:
    cloud = hub.cloud
    daemon = await daemons.start()
    await wait_until(lambda: hub.heartbeats, what="first heartbeat")
    again = make_hub_env(cloud, tmp_path / "again", name="Re-registered")
    store = CredentialStore(hub.settings.state_dir)
    with store.locked():
        store.save(again.creds)
    await wait_until(lambda: cloud.heartbeats(again.hub_id), what="heartbeats as the new hub")
    # Lines from tasks that started before the change: the link's and the dispatcher's.
    reason = "left"
    await cloud.push(
        again.hub_id, {"type": "user_revoked", "user_id": "u-9", "email": "a@b.c", "reason": reason}
    )
    await daemon.wait_status(lambda s: any(u["user_id"] == "u-9" for u in s["revoked_users"]))
    events = daemon.log_events()
    changed = next(i for i, e in enumerate(events) if e.get("event") == "credentials.toml changed")
    after = [e for e in events[changed:] if "hub_id" in e]
    assert after, "no log line after the change names a hub"
    assert {e["hub_id"] for e in after} == {str(again.hub_id)}
    assert any(e.get("user_id") == "u-9" or "u-9" in str(e) for e in after)


async def test_after_re_registering_status_shows_nothing_of_the_previous_hub(
    hub: HubEnv, daemons: Daemons, tmp_path: Path
) -> None:
    cloud, old_id = hub.cloud, hub.hub_id
    daemon = await daemons.start()
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    assert await cloud.push(old_id, make_revocation("u-old"))
    # No backup.database: the request fails, and that is the last backup.
    assert await cloud.push(old_id, {"type": "backup_request", "requested_by": "owner"})
    await daemon.wait_status(lambda s: bool(s["revoked_users"]) and s["last_backup"] is not None)
    # Re-registered as a new hub (`hublink register --force` in another shell).
    new = make_hub_env(cloud, tmp_path / "new", name="New Hub")
    store = CredentialStore(hub.settings.state_dir)
    with store.locked():
        store.save(new.creds)
    status = await daemon.wait_status(
        lambda s: s["hub_id"] == new.hub_id and s["websocket"]["state"] == "connected", timeout=30
    )
    assert status["revoked_users"] == []
    assert status["last_backup"] is None
    # status names the new hub as soon as the file changes; its link follows.
    await wait_until(lambda: cloud.heartbeats(new.hub_id), what="the new hub's link")
    assert await cloud.push(new.hub_id, make_revocation("u-new"))
    await daemon.wait_status(lambda s: [u["user_id"] for u in s["revoked_users"]] == ["u-new"])
    assert await daemon.terminate() == 0
    # Without a daemon, from the files: the same.
    env = make_child_env(
        HUBLINK_STATE_DIR=str(hub.settings.state_dir),
        HUBLINK_RUNTIME_DIR=str(hub.settings.runtime_dir),
    )
    shown = run_hublink("status", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "u-new" in shown.stdout
    assert "u-old" not in shown.stdout
    assert "last backup" not in shown.stdout


async def test_a_disabled_tunnel_shows_as_disabled(
    devcloud: DevCloud, tmp_path: Path, daemons: Daemons
) -> None:
    hub = make_hub_env(devcloud, tmp_path / "h", tunnel=TunnelSettings(enabled=False))
    daemon = await daemons.start(hub)
    status = await daemon.wait_status(lambda s: s["daemon"]["running"])
    assert status["tunnel"]["state"] == "disabled"


async def test_the_daemon_pings_the_systemd_watchdog_from_its_loop(
    hub: HubEnv, daemons: Daemons, tmp_path: Path
) -> None:
    notify_path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(notify_path))
    receiver.setblocking(False)
    pings: list[float] = []

    def drain() -> int:
        while True:
            try:
                if b"WATCHDOG=1" in receiver.recv(4096):
                    pings.append(time.monotonic())
            except BlockingIOError:
                return len(pings)

    try:
        # WATCHDOG_USEC = 0.4 s: a ping every 0.2 s.
        await daemons.start(env={"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"})
        await wait_until(lambda: drain() >= 6, what="six watchdog pings")
        gaps = [later - earlier for earlier, later in itertools.pairwise(pings)]
        # Half of WATCHDOG_USEC between pings; generous for a loaded test machine.
        assert max(gaps) < 1.0
    finally:
        receiver.close()


# --- status ---------------------------------------------------------------------------------


def status_json(settings: Settings) -> tuple[int, dict[str, Any]]:
    result = run_hublink("status", "--json", env=make_child_env(settings))
    assert result.returncode == 0, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_not_registered_is_reported_with_exit_0(tmp_path: Path) -> None:
    code, status = status_json(Settings(state_dir=tmp_path / "state", runtime_dir=tmp_path / "run"))
    assert code == 0
    assert status["registered"] is False
    assert status["hub_id"] is None
    assert status["slug"] is None
    assert status["daemon"] == {"running": False, "pid": None}
    # Reading status creates nothing.
    assert not (tmp_path / "state").exists()


def test_registered_without_daemon_shows_null_live_fields_and_the_files(
    hub: HubEnv,
) -> None:
    settings = hub.settings
    outbox = Outbox.open(settings.state_dir, settings.outbox.max_pending)
    for n in range(3):
        outbox.put(
            validate_event(
                "plugin_installed",
                {"plugin_id": f"p{n}", "version": "1", "installed_at": "2026-01-01T00:00:00Z"},
            )
        )
    outbox.close()
    code, status = status_json(settings)
    assert code == 0
    assert status["registered"] is True
    assert status["hub_id"] == hub.hub_id
    assert status["slug"] == hub.creds.slug
    assert status["cloud_url"] == hub.cloud.url
    assert status["daemon"] == {"running": False, "pid": None}
    assert all(value is None for value in status["websocket"].values())
    assert status["websocket"]["state"] is None
    assert all(value is None for value in status["tunnel"].values())
    assert status["outbox"] == {"pending": 3, "dead_letters": 0, "quarantined": 0}
    assert status["plugin_updates"] == []
    assert status["revoked_users"] == []


def test_human_summary_without_daemon(hub: HubEnv) -> None:
    result = run_hublink("status", env=make_child_env(hub.settings))
    assert result.returncode == 0
    out = result.stdout
    assert hub.creds.slug in out
    assert "not running" in out
    assert hub.token not in out


async def test_status_command_shows_the_running_daemon(hub: HubEnv, daemons: Daemons) -> None:
    cloud = hub.cloud
    daemon = await daemons.start()
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    await cloud.push(
        hub.hub_id,
        {"type": "user_revoked", "user_id": "u-7", "email": "cashier@example.com", "reason": "x"},
    )
    await daemon.wait_status(lambda s: s["revoked_users"])

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_hublink("status", *args, env=make_child_env(hub.settings))

    result = await asyncio.to_thread(run, "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["daemon"] == {"running": True, "pid": daemon.pid}
    assert status["websocket"]["state"] == "connected"
    assert status["revoked_users"][0]["user_id"] == "u-7"
    human = await asyncio.to_thread(run)
    assert human.returncode == 0
    assert "connected" in human.stdout
    assert "cashier@example.com" in human.stdout


def test_status_shows_the_last_backup_and_reminds_of_a_missing_owner_key(
    devcloud: Any, tmp_path: Path
) -> None:
    database = tmp_path / "hub.sqlite3"
    hub = make_hub_env(devcloud, tmp_path / "h", backup=BackupSettings(database=database))
    store = StateStore.load(hub.settings.state_dir)
    store.record_backup(
        BackupCompleted(
            backup_id="b-1",
            filename="hub-x.db.zst.age",
            size=1234,
            sha256="0" * 64,
            requested_by="admin@x",
        )
    )
    store.close()
    result = run_hublink("status", env=make_child_env(hub.settings))
    assert result.returncode == 0, result.stderr
    assert "last backup: completed" in result.stdout
    assert "hub-x.db.zst.age" in result.stdout
    assert "backup.recipients" in result.stdout
    _, status = status_json(hub.settings)
    assert status["last_backup"]["backup_id"] == "b-1"
    assert status["backup"] == {"database": str(database), "owner_recipients": 0}


async def test_a_daemon_that_does_not_answer_still_counts_as_running(
    hub: HubEnv, daemons: Daemons
) -> None:
    daemon = await daemons.start()
    await daemon.wait_status(lambda s: s["daemon"]["running"])
    daemon.proc.send_signal(signal.SIGSTOP)  # a hung daemon: the socket accepts, nobody answers
    try:
        env = make_child_env(hub.settings)
        result = await asyncio.to_thread(run_hublink, "status", "--json", env=env)
        human = await asyncio.to_thread(run_hublink, "status", env=env)
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["daemon"]["running"] is True
    assert status["daemon"]["pid"] == daemon.pid
    assert status["websocket"]["state"] is None
    assert "not answering" in human.stdout


# --- send -----------------------------------------------------------------------------------


INSTALLED = {"plugin_id": "inventory", "version": "1.1", "installed_at": "2025-05-01T10:00:00Z"}


USERS = {
    "users": [
        {"cloud_user_id": 12, "email": "ana@shop.example", "last_activity": "2025-05-01T09:00:00Z"}
    ]
}


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    state, runtime = tmp_path / "state", tmp_path / "run"
    monkeypatch.setenv("HUBLINK_STATE_DIR", str(state))
    monkeypatch.setenv("HUBLINK_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("HUBLINK_LOG__FORMAT", "json")
    return state, runtime


def send(event_type: str, data: str) -> subprocess.CompletedProcess[str]:
    return run_hublink("send", event_type, "--data", data)


def queued(state: Path) -> list[dict[str, object]]:
    outbox = Outbox.open(state)
    try:
        return [json.loads(item.frame) for item in outbox.peek(100)]
    finally:
        outbox.close()


def test_send_queues_durably_without_a_daemon(dirs: tuple[Path, Path]) -> None:
    state, _ = dirs
    first = send("user_sync", json.dumps(USERS))
    second = send("plugin_installed", json.dumps(INSTALLED))
    assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
    ids = [UUID(first.stdout.strip()), UUID(second.stdout.strip())]
    assert all(i.version == 4 for i in ids)
    events = queued(state)
    assert [e["id"] for e in events] == [str(i) for i in ids]
    assert events[0]["type"] == "user_sync"
    # The Hub's JSON goes out as the Hub wrote it (its integer id included).
    assert events[0] == {"type": "user_sync", "id": str(ids[0]), **USERS}
    assert events[1] == {"type": "plugin_installed", "id": str(ids[1]), **INSTALLED}


def test_send_keeps_a_given_id_and_queues_it_once(dirs: tuple[Path, Path]) -> None:
    state, _ = dirs
    given = str(uuid4())
    data = json.dumps({**INSTALLED, "id": given})
    assert [send("plugin_installed", data).stdout.strip() for _ in range(2)] == [given, given]
    assert [e["id"] for e in queued(state)] == [given]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ('{"plugin_id": "x",', "--data is not valid JSON"),
        ("[1, 2]", "--data must be a JSON object, not list"),
        ('{"plugin_id": "x", "version": "1"}', "installed_at: required"),
        (
            '{"plugin_id": "x", "version": "1", "installed_at": "last tuesday"}',
            "installed_at: Input should be a valid datetime",
        ),
    ],
)
def test_bad_data_is_a_usage_error(dirs: tuple[Path, Path], data: str, expected: str) -> None:
    state, _ = dirs
    result = send("plugin_installed", data)
    assert result.returncode == 2
    assert expected in result.stderr
    assert result.stdout == ""
    assert not (state / "outbox.sqlite3").exists() or queued(state) == []


def test_unknown_type_is_a_usage_error(dirs: tuple[Path, Path]) -> None:
    result = send("backup_completed", "{}")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_full_outbox_refuses_clearly(
    dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    state, _ = dirs
    monkeypatch.setenv("HUBLINK_OUTBOX__MAX_PENDING", "2")
    assert [send("user_sync", json.dumps(USERS)).returncode for _ in range(2)] == [0, 0]
    result = send("plugin_installed", json.dumps(INSTALLED))
    assert result.returncode == 1
    assert "already holds 2 events" in result.stderr
    assert "NOT queued" in result.stderr
    assert [e["type"] for e in queued(state)] == ["user_sync", "user_sync"]


def test_unusable_state_dir_is_a_clear_error(
    dirs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "plain-file").write_text("")
    monkeypatch.setenv("HUBLINK_STATE_DIR", str(tmp_path / "plain-file" / "state"))
    result = send("user_sync", json.dumps(USERS))
    assert result.returncode == 1
    assert "cannot open the outbox" in result.stderr
    assert "plain-file/state/outbox.sqlite3" in result.stderr


def test_plugin_installed_clears_the_pending_update(dirs: tuple[Path, Path]) -> None:
    state, _ = dirs
    store = StateStore.load(state)
    update = parse_inbound(
        json.dumps(
            {
                "type": "plugin_update_available",
                "plugin_id": "inventory",
                "current_version": "1.0",
                "new_version": "1.1",
                "download_url": "https://cdn.example/i.zip",
            }
        )
    )
    store.record_plugin_update(update)  # type: ignore[arg-type]
    store.close()
    assert send("plugin_installed", json.dumps(INSTALLED)).returncode == 0
    assert StateStore.load(state).snapshot()["plugin_updates"] == []


async def test_a_running_daemon_queues_what_send_hands_it(
    hub: HubEnv, daemons: Daemons, tmp_path: Path
) -> None:
    # The CLI's own state dir is unusable: only the daemon's socket can take the
    # event, as for a user in group hublink who may not write /var/lib/hublink.
    daemon = await daemons.start()
    await daemon.wait_status(lambda s: s["websocket"]["state"] == "connected")
    env = make_child_env(
        hub.settings,
        HUBLINK_CONFIG=str(tmp_path / "none.toml"),
        HUBLINK_STATE_DIR="/proc/hublink-cannot-be-here",
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return run_hublink("send", *args, env=env, timeout=30)

    sent = await asyncio.to_thread(run, "user_sync", "--data", json.dumps(USERS))
    assert sent.returncode == 0, sent.stderr
    event_id = sent.stdout.strip()
    cloud = hub.cloud
    await wait_until(
        lambda: any(e.get("id") == event_id for e in cloud.events(hub.hub_id)),
        what="the event at the Cloud",
    )
    refused = await asyncio.to_thread(run, "plugin_installed", "--data", '{"plugin_id": "x"}')
    assert refused.returncode == 2
    assert "version" in refused.stderr and "Traceback" not in refused.stderr


BIG_INT = "1" * 5000


def test_a_5000_digit_integer_is_a_usage_error(dirs: tuple[Path, Path]) -> None:
    state, _ = dirs
    data = json.dumps(INSTALLED)[:-1] + f', "n": {BIG_INT}}}'
    result = send("plugin_installed", data)
    assert result.returncode == 2
    assert "--data is not valid JSON for hublink: Exceeds the limit (4300 digits)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (state / "outbox.sqlite3").exists() or queued(state) == []


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ('"n": NaN', "NaN is not a JSON number"),
        ('"n": Infinity', "Infinity is not a JSON number"),
        ('"n": -Infinity', "-Infinity is not a JSON number"),
        ('"n": 1e999', "the number 1e999 is out of range"),
        (f'"n": -{BIG_INT}', "Exceeds the limit (4300 digits)"),
        ('"n": "left \\ud83d"', "data.n: holds a lone UTF-16 surrogate"),
        ('"\\udc00": 1', "a key holds a lone UTF-16 surrogate"),
        ('"n": ' + "[" * 10_000 + "]" * 10_000, "nested too deeply"),
    ],
)
def test_json_that_cannot_be_sent_faithfully_is_a_usage_error(
    dirs: tuple[Path, Path], extra: str, named: str
) -> None:
    state, _ = dirs
    result = send("plugin_installed", json.dumps(INSTALLED)[:-1] + f", {extra}}}")
    assert result.returncode == 2, result.stderr
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert not (state / "outbox.sqlite3").exists() or queued(state) == []


def big_user_sync() -> dict[str, object]:
    """A user_sync of about 190 KB: more than a shell passes in one argument."""
    users = [
        {
            "cloud_user_id": n,
            "email": f"cashier-{n}@shop.example",
            "last_activity": "2026-01-01T09:00:00Z",
        }
        for n in range(2_600)
    ]
    return {"users": users}


def send_with(data_option: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return run_hublink("send", "user_sync", "--data", data_option, stdin=stdin)


def test_data_from_a_file_too_big_for_an_argument(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    state, _ = dirs
    users = big_user_sync()
    file = tmp_path / "users.json"
    file.write_text(json.dumps(users))
    assert file.stat().st_size > 131_072  # Linux's limit for one argument
    result = send_with(f"@{file}")
    assert result.returncode == 0, result.stderr
    (event,) = queued(state)
    assert event == {"type": "user_sync", "id": result.stdout.strip(), **users}


@pytest.mark.parametrize("dash", ["-", "@-"])
def test_data_from_stdin(dirs: tuple[Path, Path], dash: str) -> None:
    state, _ = dirs
    users = big_user_sync()
    result = send_with(dash, stdin=json.dumps(users).encode())
    assert result.returncode == 0, result.stderr
    assert queued(state)[0]["users"] == users["users"]


def test_a_bom_at_the_start_of_a_data_file_is_ignored(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    file = tmp_path / "users.json"
    file.write_bytes(b"\xef\xbb\xbf" + json.dumps(USERS).encode())
    assert send_with(f"@{file}").returncode == 0


@pytest.mark.parametrize(
    ("option", "content", "named"),
    [
        (
            "@{tmp}/absent.json",
            None,
            "--data @{tmp}/absent.json: the file {tmp}/absent.json does not exist",
        ),
        ("@{tmp}", None, "--data @{tmp}: {tmp} is a folder, not a file"),
        ("@", None, "--data @ needs a file name"),
        (
            "@{tmp}/latin.json",
            '{"users": [], "n": "ñ"}'.encode("latin-1"),
            "is not UTF-8 text (byte 0xf1",
        ),
        ("@{tmp}/broken.json", b'{"users": [', "--data @{tmp}/broken.json is not valid JSON"),
        ("-", b"", "--data - (stdin) is not valid JSON: Expecting value"),
        ("-", b"\xff\xfe{}", "--data - (stdin) is not UTF-8 text"),
    ],
)
def test_bad_data_files_are_usage_errors_naming_the_file(
    dirs: tuple[Path, Path], tmp_path: Path, option: str, content: bytes | None, named: str
) -> None:
    state, _ = dirs
    option = option.replace("{tmp}", str(tmp_path))
    if content is not None and option.startswith("@"):
        Path(option[1:]).write_bytes(content)
    result = send_with(option, stdin=content if option == "-" else b"")
    assert result.returncode == 2
    assert named.replace("{tmp}", str(tmp_path)) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (state / "outbox.sqlite3").exists() or queued(state) == []


# --- doctor ---------------------------------------------------------------------------------


def write_config(path: Path, settings: Settings, **extra_tables: dict[str, Any]) -> Path:
    lines = [
        f'cloud_url = "{settings.cloud_url}"',
        f'state_dir = "{settings.state_dir}"',
        f'runtime_dir = "{settings.runtime_dir}"',
    ]
    for table, values in extra_tables.items():
        lines.append(f"[{table}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


async def run_doctor(config: Path, *args: str) -> tuple[int, str]:
    """``hublink --config CONFIG doctor ARGS``: its exit code and stdout."""
    result = await asyncio.to_thread(run_hublink, "doctor", *args, config=config)
    return result.returncode, result.stdout


async def test_cli_reports_a_broken_config_and_exits_78(tmp_path: Path) -> None:
    config = tmp_path / "hublink.toml"
    config.write_text('[websocket]\nheartbeat_interval = "often"\n')
    code, out = await run_doctor(config, "--json")
    assert code == 78
    report = json.loads(out)
    assert report["ok"] is False
    first = report["checks"][0]
    assert (first["name"], first["status"]) == ("config", "fail")
    assert "heartbeat_interval" in first["detail"]
    assert {c["status"] for c in report["checks"][1:]} == {"skip"}


async def test_cli_exits_1_when_a_check_fails(tmp_path: Path) -> None:
    settings = Settings(cloud_url=f"http://127.0.0.1:{free_port()}", state_dir=tmp_path)
    config = write_config(tmp_path / "hublink.toml", settings)
    code, out = await run_doctor(config)
    assert code == 1
    assert "FAIL  cloud" in out
    assert "hint: " in out


async def test_with_the_daemon_running_everything_passes(
    hub: HubEnv, devcloud: DevCloud, listeners: Listeners
) -> None:
    settings = hub.settings
    local_port = await listeners.open()
    config = write_config(
        settings.state_dir.parent / "hublink.toml",
        settings,
        tunnel={"enabled": False},
        hub={"local_port": local_port},
        web={"listen": "127.0.0.1:0"},
    )
    daemon = await asyncio.create_subprocess_exec(
        *HUBLINK_COMMAND,
        "--config",
        str(config),
        "run",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await wait_until(lambda: devcloud.connections(hub.hub_id) >= 1, timeout=20)
        await wait_until(lambda: len(devcloud.heartbeats(hub.hub_id)) >= 1)
        # The control socket opens last, after the link: doctor asks the daemon through it.
        await wait_until(
            lambda: asyncio.to_thread(status_now, settings.control_socket),
            what="the daemon to answer on its control socket",
        )
        code, out = await run_doctor(config, "--json")
        report = json.loads(out)
        statuses = {c["name"]: c["status"] for c in report["checks"]}
        assert code == 0, out
        assert report["ok"] is True
        daemon_check = next(c for c in report["checks"] if c["name"] == "daemon")
        assert daemon_check["status"] == "pass"
        assert f"pid {daemon.pid}" in daemon_check["detail"]
        assert "link connected" in daemon_check["detail"]
        assert statuses["websocket"] == "pass"
        # doctor did not open a second link that would have replaced the daemon's.
        assert devcloud.connections(hub.hub_id) == 1
    finally:
        daemon.send_signal(signal.SIGTERM)
        await asyncio.wait_for(daemon.wait(), 15)
