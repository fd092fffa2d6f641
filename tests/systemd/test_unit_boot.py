"""The shipped unit under a real systemd: a throwaway systemd-nspawn machine of this host's /usr.

One container for the whole module (booting and installing takes most of the
time). Inside it, as on a Hub box: hublink installed from its wheel into a venv
of Debian's Python, the unit, sysusers and tmpfiles files installed the README's
way on an empty /etc, the reference Cloud with a real frps, a tiny Hub
application, and a SQLite database of another group. The tests run in file
order, each one leaving the service as the next one expects; each starts it
again if it needs it running, so one can also run alone (``-k``).

Needs root and systemd-nspawn (Debian's ``systemd-container``); it skips, saying
so, without them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.nspawn_box import (
    ROOT,
    STAGE,
    SYSTEM_PYTHON,
    Box,
    BoxError,
    booted,
    build_wheel,
    fill_wheelhouse,
    find_system_python_version,
    wait_in_box,
)

pytestmark = [
    pytest.mark.systemd,
    pytest.mark.slow,
    # the first test's timeout includes building, booting and installing
    pytest.mark.timeout(180),
]

#: Set to another hublink.service to try a candidate unit (say, a fix) in place of the shipped one.
UNIT_OVERRIDE_ENV = "SYSTEMD_BOOT_TEST_UNIT"
WHEELHOUSE = ROOT / ".cache" / "systemd-wheelhouse"
CLOUD = "http://127.0.0.1:8000"
OWNER = ("owner@example.com", "password123")
HUB_APP_PORT = 8001
HUB_APP_TEXT = "hello from the shop's Hub application\n"
#: The test's drop-in: a watchdog and a restart delay short enough to watch.
WATCHDOG_SEC = 3
RESTART_SEC = 1
#: The words of contract section 5 for the link state.
LINK_STATES = ("connecting", "connected", "backoff", "unauthorized", "stopped")
KNOWN_CONFIG_DIR_WARNING = (
    "ConfigurationDirectory 'hublink' already exists but the mode is different"
)

if os.geteuid() != 0:
    pytest.skip("booting a systemd container needs root", allow_module_level=True)
if shutil.which("systemd-nspawn") is None:
    pytest.skip(
        "systemd-nspawn is not installed (Debian: apt-get install systemd-container)",
        allow_module_level=True,
    )


@dataclass
class Hub:
    """The booted container with hublink installed and registered, and what the tests learnt."""

    box: Box
    hub_id: str
    tunnel_port: int
    #: whether `getent passwd hublink` found anything before the sysusers step
    user_before_install: bool
    revoked: bool = False
    unregistered: bool = False
    #: systemctl show after a start with a broken setting (made once, on first use)
    broken_start: dict[str, str] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def tail(self, lines: int = 40) -> str:
        """hublink's journal tail, for assertion messages."""
        journal = self.box.journal("-u", "hublink", lines=lines)
        return f"--- journalctl -u hublink (tail) ---\n{journal}"

    def state(self) -> dict[str, str]:
        return self.box.show(
            "hublink",
            "ActiveState",
            "SubState",
            "Result",
            "MainPID",
            "NRestarts",
            "StatusText",
            "ExecMainStatus",
        )

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = self.box.http(method, f"{CLOUD}/admin/hubs/{self.hub_id}{path}", body)
        assert status < 300, f"{method} /admin/hubs/{self.hub_id}{path}: {status} {answer}"
        return answer

    def ensure_connected(self) -> dict[str, str]:
        """Start hublink unless it runs, and wait until systemd's status line says connected."""
        if self.revoked or self.unregistered:
            pytest.skip("an earlier test revoked or unregistered the hub")
        if self.state()["ActiveState"] != "active":
            self.box.run(["systemctl", "start", "hublink"], check=False)
        return wait_in_box(
            lambda: (s := self.state())["StatusText"].startswith("link connected") and s,
            20,
            "StatusText 'link connected'",
            self.tail,
        )

    def start_with_broken_config(self) -> dict[str, str]:
        """Start hublink (once) with a setting it cannot parse; its state after a few RestartSec=.

        The drop-in goes away again afterwards, so later starts are normal.
        """
        if self.broken_start is not None:
            return self.broken_start
        box = self.box
        broken = "/etc/systemd/system/hublink.service.d/zz-broken.conf"
        box.run(["systemctl", "stop", "hublink"])
        box.write(broken, "[Service]\nEnvironment=HUBLINK_WEBSOCKET__HEARTBEAT_INTERVAL=often\n")
        box.run(["systemctl", "daemon-reload"])
        try:
            started = box.run(["systemctl", "start", "hublink"], check=False)
            assert started.returncode != 0, f"hublink started with a broken setting\n{self.tail()}"
            # long enough for several restarts, were they allowed
            time.sleep(RESTART_SEC * 3)
            self.broken_start = self.state()
        finally:
            box.run(["rm", "-f", broken])
            box.run(["systemctl", "daemon-reload"])
            box.run(["systemctl", "reset-failed", "hublink"], check=False)
        return self.broken_start

    def revoke(self) -> None:
        """Revoke the hub through the admin API (once), and wait for the daemon to notice."""
        if not self.revoked:
            self.ensure_connected()
            self.admin("POST", "/revoke")
            self.revoked = True
        wait_in_box(
            lambda: "unauthorized" in self.state()["StatusText"],
            20,
            "StatusText naming 'unauthorized'",
            self.tail,
        )


def _stage(tmp: Path) -> Path:
    """The folder bound read-only into the container: the wheel, its dependencies, frp."""
    stage = tmp / "stage"
    (stage / "wheel").mkdir(parents=True)
    wheel = build_wheel(stage / "wheel", WHEELHOUSE, tmp)
    fill_wheelhouse(WHEELHOUSE, [str(wheel)], find_system_python_version())
    # pip download copies the wheel it was given; a stale one must never be picked up
    for stale in WHEELHOUSE.glob("hublink-*.whl"):
        stale.unlink()
    shutil.copytree(WHEELHOUSE, stage / "wheelhouse")
    frp = Path(os.environ.get("HUBLINK_FRP_BIN", ROOT / ".cache" / "frp" / "bin"))
    (stage / "frp").mkdir()
    for name in ("frpc", "frps"):
        if not os.access(frp / name, os.X_OK):
            pytest.fail(f"{frp / name} is missing or not executable; run `make frp`")
        shutil.copy2(frp / name, stage / "frp" / name)
    override = os.environ.get(UNIT_OVERRIDE_ENV)
    if override:
        shutil.copy2(override, stage / "hublink.service")
    stage.chmod(0o755)
    return stage


# The README's "Install on a Hub box", steps 1 to 3, plus frpc where the config points.
INSTALL = f"""
{SYSTEM_PYTHON} -m venv /opt/hublink
/opt/hublink/bin/pip install --quiet --no-index --find-links {STAGE}/wheelhouse {STAGE}/wheel/*.whl
ln -s /opt/hublink/bin/hublink /usr/bin/hublink
cd /opt/hublink/share/hublink
install -m 0644 systemd/hublink.sysusers /usr/lib/sysusers.d/hublink.conf
install -m 0644 systemd/hublink.tmpfiles /usr/lib/tmpfiles.d/hublink.conf
install -m 0644 systemd/hublink.service  /etc/systemd/system/hublink.service
if [ -e {STAGE}/hublink.service ]; then
    install -m 0644 {STAGE}/hublink.service /etc/systemd/system/hublink.service
fi
systemd-sysusers hublink.conf && systemd-tmpfiles --create hublink.conf
systemctl daemon-reload
install -d /opt/frp
install -m 0755 {STAGE}/frp/frpc {STAGE}/frp/frps /opt/frp/
"""

# The shop's side: a Hub application user in group hublink, and its database,
# readable only by group shopdb (the README's backup drop-in gives hublink that group).
SHOP = f"""
groupadd --system shopdb
useradd --system --user-group --no-create-home --groups hublink shopapp
useradd --system --user-group --no-create-home outsider
install -d -m 0750 -o root -g shopdb /var/lib/shop
{SYSTEM_PYTHON} -c "
import sqlite3
db = sqlite3.connect('/var/lib/shop/shop.sqlite3')
db.execute('CREATE TABLE sales (item TEXT)')
db.execute(\\"INSERT INTO sales VALUES ('precious')\\")
db.commit()
"
chgrp shopdb /var/lib/shop/shop.sqlite3
chmod 0640 /var/lib/shop/shop.sqlite3
install -d /srv/hubapp
"""

DROP_IN = f"""[Service]
# the README's backup drop-in: the group that may read the Hub's database
SupplementaryGroups=shopdb
# the test's own: watch a watchdog timeout and a restart within seconds
WatchdogSec={WATCHDOG_SEC}s
RestartSec={RESTART_SEC}s
"""


def _frps_port(box: Box) -> int:
    def port() -> int | None:
        found = re.search(r"frps:\s+port (\d+)", box.journal("-u", "devcloud", lines=200))
        return int(found.group(1)) if found else None

    return wait_in_box(
        port, 20, "the reference Cloud's frps", lambda: box.journal("-u", "devcloud")
    )


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    tmp = tmp_path_factory.mktemp("unit-boot")
    started = time.monotonic()
    stage = _stage(tmp)
    timings = {"stage (wheel, wheelhouse)": time.monotonic() - started}
    with booted(stage, tmp / "console.log") as box:
        timings["boot"] = box.timings["boot"]
        mark = time.monotonic()
        user_before = box.run(["getent", "passwd", "hublink"], check=False).returncode == 0
        box.sh(INSTALL, timeout=120)
        box.sh(SHOP)
        timings["install (venv, unit, sysusers, tmpfiles)"] = time.monotonic() - mark
        mark = time.monotonic()
        box.run(
            [
                "systemd-run",
                "--unit=devcloud",
                "--setenv=HOME=/root",
                "/usr/bin/hublink",
                "devcloud",
                "--host=127.0.0.1",
                "--port=8000",
                "--data-dir=/var/lib/devcloud",
                "--frps=/opt/frp/frps",
            ]
        )
        box.write("/srv/hubapp/hello.txt", HUB_APP_TEXT)
        box.run(
            [
                "systemd-run",
                "--unit=hubapp",
                SYSTEM_PYTHON,
                "-m",
                "http.server",
                str(HUB_APP_PORT),
                "--bind=127.0.0.1",
                "--directory=/srv/hubapp",
            ]
        )
        frps_port = _frps_port(box)
        box.write(
            "/etc/hublink/hublink.toml",
            f"""cloud_url = "{CLOUD}"
[hub]
local_port = {HUB_APP_PORT}
[websocket]
heartbeat_interval = 1
[tunnel]
frpc_path = "/opt/frp/frpc"
server_port = {frps_port}
[backup]
database = "/var/lib/shop/shop.sqlite3"
""",
            mode="0640",
            group="hublink",
        )
        box.write("/etc/systemd/system/hublink.service.d/test.conf", DROP_IN)
        box.run(["systemctl", "daemon-reload"])
        # README step 4 (sudo -u hublink, with setpriv: see Box.run)
        box.run(
            ["hublink", "register", "--email", OWNER[0], "--password-stdin"],
            user="hublink",
            input=OWNER[1] + "\n",
        )
        creds = box.run(["cat", "/var/lib/hublink/credentials.toml"]).stdout
        hub_id = re.search(r'hub_id = "([^"]+)"', creds)
        port = re.search(r"tunnel_port = (\d+)", creds)
        assert hub_id and port, f"unexpected credentials.toml:\n{creds}"
        timings["cloud, hub app, register"] = time.monotonic() - mark
        found = Hub(
            box=box,
            hub_id=hub_id.group(1),
            tunnel_port=int(port.group(1)),
            user_before_install=user_before,
            timings=timings,
        )
        yield found
        mark = time.monotonic()
    timings["halt"] = time.monotonic() - mark
    timings["module fixture total"] = time.monotonic() - started
    rounded = {step: round(seconds, 2) for step, seconds in timings.items()}
    print(f"\nsystemd boot test timings: {json.dumps(rounded)}")


# --- the tests, in the order they run ---------------------------------------


def test_sysusers_and_tmpfiles_make_the_user_and_folders_on_a_fresh_etc(hub: Hub) -> None:
    box = hub.box
    assert not hub.user_before_install, "the container's /etc was not fresh: hublink existed"
    entry = box.run(["getent", "passwd", "hublink"]).stdout.strip().split(":")
    assert entry[5:] == ["/var/lib/hublink", "/usr/sbin/nologin"], entry
    assert int(entry[2]) < 1000, f"hublink is not a system user: {entry}"
    modes = box.run(["stat", "-c", "%n %a %U %G", "/etc/hublink", "/var/lib/hublink"]).stdout
    assert modes.splitlines() == [
        "/etc/hublink 750 root hublink",
        "/var/lib/hublink 700 hublink hublink",
    ]


def test_start_reaches_active_with_the_link_state_in_its_status_text(hub: Hub) -> None:
    box = hub.box
    mark = time.monotonic()
    started = box.run(["systemctl", "start", "hublink"], check=False)
    elapsed = time.monotonic() - mark
    state = hub.state()
    assert started.returncode == 0, f"systemctl start failed: {started.stderr}\n{hub.tail()}"
    # Type=notify: active means hublink sent READY=1, with a STATUS= of its own
    assert state["ActiveState"] == "active", f"{state}\n{hub.tail()}"
    words = "|".join(LINK_STATES)
    assert re.match(rf"link ({words})\b", state["StatusText"]), f"{state}\n{hub.tail()}"
    hub.ensure_connected()
    print(f"systemctl start took {elapsed:.2f} s")
    files = box.run(
        ["stat", "-c", "%n %a %U %G", "/run/hublink", "/run/hublink/control.sock"]
    ).stdout
    assert files.splitlines() == [
        "/run/hublink 750 hublink hublink",
        "/run/hublink/control.sock 660 hublink hublink",
    ]


def _systemd_warnings_about_hublink(hub: Hub) -> list[str]:
    """What systemd itself (not hublink's own log) said about the unit at warning or worse."""
    found = []
    for entry in hub.box.journal_json("--priority=warning"):
        message = str(entry.get("MESSAGE", ""))
        about_unit = "hublink.service" in (entry.get("UNIT"), entry.get("_SYSTEMD_UNIT"))
        if entry.get("SYSLOG_IDENTIFIER") == "hublink":
            continue
        if about_unit or "hublink" in message:
            found.append(f"<{entry.get('PRIORITY')}> {entry.get('SYSLOG_IDENTIFIER')}: {message}")
    return found


def test_systemd_has_no_warning_about_the_unit(hub: Hub) -> None:
    hub.ensure_connected()
    found = _systemd_warnings_about_hublink(hub)
    warnings = [w for w in found if KNOWN_CONFIG_DIR_WARNING not in w]
    assert not warnings, "systemd warned about hublink:\n" + "\n".join(warnings)


def _unit_under_test() -> str:
    shipped = ROOT / "systemd" / "hublink.service"
    return Path(os.environ.get(UNIT_OVERRIDE_ENV) or shipped).read_text()


# Expected to fail only while the unit has no ConfigurationDirectoryMode= line: the
# fix then makes this an ordinary test, with no marker to remove.
@pytest.mark.xfail(
    "ConfigurationDirectoryMode=" not in _unit_under_test(),
    strict=True,
    reason="the unit lacks ConfigurationDirectoryMode=0750: tmpfiles makes /etc/hublink 0750, "
    "the unit's default is 0755, and systemd warns at every start",
)
def test_configuration_directory_mode_matches_tmpfiles(hub: Hub) -> None:
    hub.ensure_connected()
    known = [w for w in _systemd_warnings_about_hublink(hub) if KNOWN_CONFIG_DIR_WARNING in w]
    assert not known, "\n".join(known)


def test_link_is_up_and_heartbeats_reach_the_cloud(hub: Hub) -> None:
    hub.ensure_connected()
    shown = wait_in_box(
        lambda: (h := hub.admin("GET", ""))["connected"] and h["heartbeats"] >= 2 and h,
        15,
        "two heartbeats at the reference Cloud",
        hub.tail,
    )
    assert shown["online"], shown


def test_tunnel_reaches_the_hub_application(hub: Hub) -> None:
    hub.ensure_connected()
    url = f"http://127.0.0.1:{hub.tunnel_port}/hello.txt"

    def through_frps() -> str | None:
        try:
            status, body = hub.box.http("GET", url)
        except BoxError:
            return None
        return body if status == 200 else None

    body = wait_in_box(
        through_frps,
        20,
        f"{url} through frps and frpc",
        lambda: hub.tail() + hub.box.journal("-u", "devcloud", lines=20),
    )
    assert body == HUB_APP_TEXT


def test_backup_reads_a_database_of_another_group_and_restores(hub: Hub) -> None:
    box = hub.box
    hub.ensure_connected()
    # Without the drop-in's SupplementaryGroups= hublink could not read it at all.
    alone = box.run(["test", "-r", "/var/lib/shop/shop.sqlite3"], user="hublink", check=False)
    assert alone.returncode != 0, "the hublink user reads the database without the drop-in"
    before = len(hub.admin("GET", "/backups"))
    hub.admin("POST", "/messages", {"type": "backup_request", "requested_by": "unit-test"})
    backups = wait_in_box(
        lambda: (b := hub.admin("GET", "/backups")) and len(b) > before and b,
        20,
        "a backup at the reference Cloud",
        hub.tail,
    )
    answers = [e for e in hub.admin("GET", "/events") if e["type"].startswith("backup_")]
    assert answers and answers[-1]["type"] == "backup_completed", f"{answers}\n{hub.tail()}"
    assert answers[-1]["requested_by"] == "unit-test"
    stored = f"/var/lib/devcloud/backups/{hub.hub_id}/{backups[-1]['filename']}"
    box.run(
        [
            "hublink",
            "restore",
            stored,
            "--identity=/var/lib/hublink/backup-identity.txt",
            "--output=/root/restored.sqlite3",
        ]
    )
    rows = box.run(
        [
            SYSTEM_PYTHON,
            "-c",
            "import sqlite3; print(sqlite3.connect('/root/restored.sqlite3')"
            ".execute('SELECT item FROM sales').fetchall())",
        ]
    ).stdout
    assert rows.strip() == "[('precious',)]"


USER_SYNC: dict[str, list[dict[str, str]]] = {
    "users": [
        {
            "cloud_user_id": "u-17",
            "email": "clerk@example.com",
            "last_activity": "2026-01-02T03:04:05Z",
        }
    ]
}

# The Hub application's side: one POST /v1/events on the control socket.
POST_EVENT = """
import http.client, json, socket, sys
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect("/run/hublink/control.sock")
conn = Unix("localhost")
conn.request("POST", "/v1/events", body=sys.stdin.read(),
             headers={"Content-Type": "application/json"})
answer = conn.getresponse()
print(answer.status, answer.read().decode())
"""


def _user_synced(hub: Hub, user_id: str) -> bool:
    return any(
        e["type"] == "user_sync" and e["users"][0]["cloud_user_id"] == user_id
        for e in hub.admin("GET", "/events")
    )


def test_a_member_of_group_hublink_queues_events_on_the_control_socket(hub: Hub) -> None:
    box = hub.box
    hub.ensure_connected()
    event = {"type": "user_sync", "data": USER_SYNC}
    posted = box.run([SYSTEM_PYTHON, "-c", POST_EVENT], user="shopapp", input=json.dumps(event))
    assert posted.stdout.startswith("201 "), f"{posted.stdout}{posted.stderr}\n{hub.tail()}"
    wait_in_box(lambda: _user_synced(hub, "u-17"), 15, "the user_sync at the Cloud", hub.tail)
    # and someone outside the group cannot
    refused = box.run(
        [SYSTEM_PYTHON, "-c", POST_EVENT], user="outsider", input=json.dumps(event), check=False
    )
    assert refused.returncode != 0 and "PermissionError" in refused.stderr, refused


# The README documents a sudoers rule for this today; the issue asks for the socket.
def test_a_member_of_group_hublink_uses_hublink_send(hub: Hub) -> None:
    hub.ensure_connected()
    data = json.dumps({"users": [{**USER_SYNC["users"][0], "cloud_user_id": "u-18"}]})
    sent = hub.box.run(
        ["hublink", "send", "user_sync", "--data", data], user="shopapp", check=False
    )
    assert sent.returncode == 0, f"hublink send as shopapp: {sent.stderr}"
    wait_in_box(lambda: _user_synced(hub, "u-18"), 15, "the user_sync at the Cloud", hub.tail)


def test_a_stopped_daemon_is_restarted_by_the_watchdog(hub: Hub) -> None:
    box = hub.box
    before = hub.ensure_connected()
    assert before["NRestarts"] == "0", f"restarted before the test: {before}\n{hub.tail()}"
    old_frpc = box.pids_of("frpc")
    mark = time.monotonic()
    box.run(["kill", "-STOP", before["MainPID"]])
    after = wait_in_box(
        lambda: (
            (s := hub.state())["NRestarts"] == "1"
            and s["StatusText"].startswith("link connected")
            and s
        ),
        WATCHDOG_SEC + RESTART_SEC + 15,
        "a watchdog restart",
        hub.tail,
    )
    print(f"watchdog restart took {time.monotonic() - mark:.2f} s")
    assert after["MainPID"] != before["MainPID"]
    assert "Watchdog timeout" in box.journal("-u", "hublink", lines=100), hub.tail()
    # the stopped daemon's frpc went with it (KillMode=mixed kills the rest of the cgroup)
    assert not set(old_frpc) & set(box.pids_of("frpc")), f"{old_frpc}\n{hub.tail()}"


def test_stop_is_clean_fast_and_leaves_no_frpc(hub: Hub) -> None:
    box = hub.box
    hub.ensure_connected()
    assert box.pids_of("frpc"), f"no frpc ran before the stop\n{hub.tail()}"
    mark = time.monotonic()
    box.run(["systemctl", "stop", "hublink"])
    elapsed = time.monotonic() - mark
    state = hub.state()
    print(f"systemctl stop took {elapsed:.2f} s")
    assert (state["ActiveState"], state["Result"]) == ("inactive", "success"), hub.tail()
    assert elapsed < 3, f"stopping took {elapsed:.1f} s\n{hub.tail()}"
    assert box.pids_of("frpc") == [], f"frpc outlived hublink\n{hub.tail()}"


def test_journald_gets_info_warning_and_error_priorities(hub: Hub) -> None:
    hub.ensure_connected()
    hub.admin("POST", "/messages", {"type": "no_such_message", "x": 1})
    hub.revoke()

    def priorities() -> dict[str, set[str]]:
        seen: dict[str, set[str]] = {}
        for entry in hub.box.journal_json("--identifier=hublink"):
            seen.setdefault(str(entry["MESSAGE"]), set()).add(str(entry["PRIORITY"]))
        return seen

    def line(start: str, seen: dict[str, set[str]]) -> set[str]:
        return set().union(*(p for m, p in seen.items() if m.startswith(start)))

    def revocation_logged() -> dict[str, set[str]] | None:
        seen = priorities()
        return seen if line("the Cloud no longer accepts", seen) else None

    seen = wait_in_box(
        revocation_logged,
        10,
        "the revocation's error in the journal",
        hub.tail,
    )
    assert line("link connected", seen) == {"6"}, hub.tail()
    assert line("ignored a message of unknown type", seen) == {"4"}, hub.tail()
    assert line("the Cloud no longer accepts", seen) == {"3"}, hub.tail()
    # SyslogLevelPrefix=yes ate every <N>: none is left in a message
    assert not [m for m in seen if re.match(r"<\d>", m)], hub.tail()


def test_a_revoked_hub_is_not_restarted_in_a_loop(hub: Hub) -> None:
    hub.revoke()
    before = hub.state()
    connections = hub.admin("GET", "")["connections"]
    # long enough for several restarts at RestartSec=, were hublink exiting
    time.sleep(RESTART_SEC * 3)
    after = hub.state()
    assert after["ActiveState"] in ("active", "failed"), f"{after}\n{hub.tail()}"
    assert after["NRestarts"] == before["NRestarts"], f"{before} -> {after}\n{hub.tail()}"
    if after["ActiveState"] == "active":
        # contract section 2: state unauthorized, and retries only every unauthorized_retry
        assert after["MainPID"] == before["MainPID"], hub.tail()
        assert "unauthorized" in after["StatusText"], after
        assert hub.admin("GET", "")["connections"] == connections, hub.tail()
    else:
        assert after["ExecMainStatus"] == "77", f"{after}\n{hub.tail()}"


def test_a_configuration_error_exits_78_and_is_not_restarted(hub: Hub) -> None:
    state = hub.start_with_broken_config()
    assert (state["ActiveState"], state["ExecMainStatus"], state["NRestarts"]) == (
        "failed",
        "78",
        "0",
    ), f"{state}\n{hub.tail()}"


# daemon.run() and cli.main() print a fatal error to stderr before logging is set
# up; without a <3> prefix journald files it under the unit's default, info.
def test_a_fatal_start_up_error_is_logged_at_priority_3(hub: Hub) -> None:
    hub.start_with_broken_config()
    entries = hub.box.journal_json("--identifier=hublink")
    fatal = [e for e in entries if str(e["MESSAGE"]).startswith("hublink: error: invalid")]
    assert fatal, f"no start-up error in the journal\n{hub.tail()}"
    assert {str(e["PRIORITY"]) for e in fatal} == {"3"}, [
        f"<{e['PRIORITY']}> {e['MESSAGE']}" for e in fatal
    ]


# Contract section 5: `run` on a hub that is not registered does not exit.
@pytest.mark.xfail(
    strict=True,
    reason="`hublink run` on an unregistered hub exits 78 ('this hub is not registered') "
    "instead of sending READY=1 with the status 'waiting for registration'",
)
def test_an_unregistered_hub_is_ready_and_waits_for_registration(hub: Hub) -> None:
    box = hub.box
    box.run(["systemctl", "stop", "hublink"])
    box.run(["hublink", "unregister", "--yes"], user="hublink")
    hub.unregistered = True
    started = box.run(["systemctl", "start", "hublink"], check=False)
    state = hub.state()
    assert started.returncode == 0 and state["ActiveState"] == "active", f"{state}\n{hub.tail()}"
    assert "waiting for registration" in state["StatusText"], state
