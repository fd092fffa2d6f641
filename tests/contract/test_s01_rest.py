"""``hublink register`` as a user runs it: a subprocess against the reference Cloud."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import resource
import socket
import ssl
import stat
import sys
import termios
import time
import tomllib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from hublink.devcloud import DEMO_EMAIL, DEMO_PASSWORD, DevCloud

UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    elapsed: float

    def log_events(self) -> list[dict[str, object]]:
        """stderr's JSON log lines, parsed (every line must be one)."""
        return [json.loads(line) for line in self.stderr.splitlines() if line.startswith("{")]


async def hublink(
    *args: str,
    env: dict[str, str],
    stdin: str = "",
    preexec_fn: Callable[[], None] | None = None,
) -> Run:
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hublink",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        preexec_fn=preexec_fn,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout=50)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode(), time.monotonic() - started)


@dataclass
class Box:
    """A hub box: its environment and where its files go."""

    env: dict[str, str]
    state_dir: Path
    config_dir: Path

    @property
    def credentials(self) -> Path:
        return self.state_dir / "credentials.toml"

    def written(self) -> set[str]:
        if not self.state_dir.exists():
            return set()
        return {p.name for p in self.state_dir.iterdir()} - {".credentials.lock"}

    async def register(
        self,
        *extra: str,
        password: str = DEMO_PASSWORD,
        preexec_fn: Callable[[], None] | None = None,
    ) -> Run:
        return await hublink(
            "register",
            "--email",
            DEMO_EMAIL,
            "--password-stdin",
            "--address",
            "Main Street 1",
            *extra,
            env=self.env,
            stdin=password + "\n",
            preexec_fn=preexec_fn,
        )


def make_box(tmp_path: Path, cloud_url: str) -> Box:
    config_dir = Path(os.environ["HUBLINK_CONFIG"]).parent
    state_dir = tmp_path / "state"
    env = dict(os.environ)
    env.update(
        HUBLINK_CLOUD_URL=cloud_url,
        HUBLINK_STATE_DIR=str(state_dir),
        HUBLINK_LOG__FORMAT="json",
        HUBLINK_LOG__LEVEL="debug",
        HUBLINK_HUB__NAME="Corner Shop",
    )
    return Box(env=env, state_dir=state_dir, config_dir=config_dir)


@pytest.fixture
def box(devcloud: DevCloud, tmp_path: Path) -> Box:
    return make_box(tmp_path, devcloud.url)


# --- the happy path ---------------------------------------------------------------------


async def test_register_prints_steps_and_saves_private_credentials(
    devcloud: DevCloud, box: Box
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


async def test_no_jwt_or_password_on_disk_or_in_output(devcloud: DevCloud, box: Box) -> None:
    run = await box.register()
    assert run.code == 0, run.stderr
    token = tomllib.loads(box.credentials.read_text())["tunnel_token"]
    events = run.log_events()
    assert any(e.get("event") == "cloud request" for e in events)  # debug logging was on
    for text in (run.stdout, run.stderr):
        assert DEMO_PASSWORD not in text
        assert "eyJ" not in text
        assert token not in text
    for folder in (box.state_dir, box.config_dir):
        for path in folder.rglob("*"):
            if path.is_file():
                content = path.read_bytes()
                assert DEMO_PASSWORD.encode() not in content, path
                assert b"eyJ" not in content, path


async def test_name_falls_back_to_the_hostname(devcloud: DevCloud, box: Box) -> None:
    del box.env["HUBLINK_HUB__NAME"]
    run = await box.register()
    assert run.code == 0, run.stderr
    assert [h.name for h in devcloud.hubs()] == [socket.gethostname()]


# --- refusals --------------------------------------------------------------------------


async def test_wrong_password_exits_77_and_writes_nothing(devcloud: DevCloud, box: Box) -> None:
    run = await box.register(password="guess")
    assert run.code == 77
    assert "No active account found" in run.stderr
    assert box.written() == set()
    assert devcloud.hubs() == []


async def test_already_registered_is_refused_without_contacting_the_cloud(
    devcloud: DevCloud, box: Box
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


async def test_force_registers_again(devcloud: DevCloud, box: Box) -> None:
    assert (await box.register()).code == 0
    run = await box.register("--force")
    assert run.code == 0, run.stderr
    assert run.stdout.count("replacing the credentials of hub") == 1
    assert len(devcloud.hubs()) == 2


async def test_corrupt_credentials_exit_78_naming_the_file(devcloud: DevCloud, box: Box) -> None:
    box.state_dir.mkdir(mode=0o700)
    box.credentials.write_text('hub_id = "not-a-uuid"\n')
    run = await box.register()
    assert run.code == 78
    assert str(box.credentials) in run.stderr
    assert "hub_id" in run.stderr
    assert box.credentials.read_text() == 'hub_id = "not-a-uuid"\n'
    assert devcloud.hubs() == []


async def test_without_a_terminal_email_and_password_stdin_are_required(box: Box) -> None:
    run = await hublink("register", "--email", DEMO_EMAIL, env=box.env, stdin="x\n")
    assert run.code == 2
    assert "--password-stdin" in run.stderr


# --- an unreliable Cloud ------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_cloud_down_exits_69_within_30_seconds(tmp_path: Path) -> None:
    box = make_box(tmp_path, f"http://127.0.0.1:{closed_port()}")
    run = await box.register()
    assert run.code == 69
    assert run.elapsed < 30
    assert "unreachable" in run.stderr
    assert box.written() == set()


async def test_slow_but_answering_cloud_is_waited_for(devcloud: DevCloud, box: Box) -> None:
    devcloud.fail_next("/api/hubs/register/", None, delay=2.0)
    run = await box.register()
    assert run.code == 0, run.stderr
    assert len(devcloud.hubs()) == 1


@pytest.mark.slow
async def test_cloud_that_never_answers_times_out_with_69_within_30_seconds(
    tmp_path: Path,
) -> None:
    """A server that accepts connections and then says nothing: the default timeouts apply."""
    held: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # keep the connection open, answer nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        box = make_box(tmp_path, f"http://127.0.0.1:{port}")
        run = await box.register()
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert run.code == 69
    assert "timed out" in run.stderr
    assert run.elapsed < 30
    assert box.written() == set()


async def test_503_twice_then_success(devcloud: DevCloud, box: Box) -> None:
    devcloud.fail_next("/api/auth/login/", 503, count=2)
    run = await box.register()
    assert run.code == 0, run.stderr
    retries = [e for e in run.log_events() if e.get("event") == "cloud request failed, retrying"]
    assert len(retries) == 2
    assert len(devcloud.hubs()) == 1


async def test_register_401_refreshes_and_succeeds(devcloud: DevCloud, box: Box) -> None:
    devcloud.fail_next("/api/hubs/register/", 401, body='{"detail": "Token is expired"}')
    run = await box.register()
    assert run.code == 0, run.stderr
    assert len(devcloud.hubs()) == 1


async def test_html_error_page_from_a_proxy(devcloud: DevCloud, box: Box) -> None:
    page = (
        "<html><head><title>403 Forbidden</title></head>"
        "<body><h1>Blocked by the shop's firewall</h1></body></html>"
    )
    devcloud.fail_next("/api/hubs/register/", 403, body=page, content_type="text/html")
    run = await box.register()
    assert run.code == 1
    assert "403 Forbidden: Blocked by the shop's firewall" in run.stderr
    assert "<title>" not in run.stderr
    assert box.written() == set()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            {"hub_id": "6d0c6d1e-58a8-4bb0-9f2d-9f3b3c2c8a10", "slug": "x", "tunnel_port": 7001},
            "tunnel_token: missing",
        ),
        (
            {"hub_id": "hub-1", "slug": "x", "tunnel_port": 7001, "tunnel_token": "t" * 40},
            "hub_id = 'hub-1'",
        ),
        (
            {
                "hub_id": "6d0c6d1e-58a8-4bb0-9f2d-9f3b3c2c8a10",
                "slug": "x",
                "tunnel_port": 65536,
                "tunnel_token": "t" * 40,
            },
            "tunnel_port = 65536",
        ),
    ],
    ids=["missing-field", "non-uuid-hub-id", "port-out-of-range"],
)
async def test_invalid_register_answer_saves_nothing(
    devcloud: DevCloud, box: Box, answer: dict[str, object], expected: str
) -> None:
    devcloud.fail_next("/api/hubs/register/", 201, body=json.dumps(answer))
    run = await box.register()
    assert run.code == 1
    assert expected in run.stderr
    assert "nothing was saved" in run.stderr
    assert "t" * 40 not in run.stderr
    assert box.written() == set()


# --- TLS in front of the Cloud ------------------------------------------------------------


@contextlib.asynccontextmanager
async def tls_front(target_port: int, ca: trustme.CA) -> AsyncIterator[int]:
    """Terminate TLS on a free port and pass the bytes to the Cloud, like a reverse proxy."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass  # the other side went away; closing below is all there is to do
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def test_untrusted_certificate_fails_clearly_then_tls_ca_file_fixes_it(
    devcloud: DevCloud, tmp_path: Path
) -> None:
    ca = trustme.CA()
    async with tls_front(devcloud.port, ca) as port:
        box = make_box(tmp_path, f"https://127.0.0.1:{port}")
        run = await box.register()
        assert run.code == 69
        assert f"127.0.0.1:{port}" in run.stderr
        assert "certificate" in run.stderr and "tls.ca_file" in run.stderr
        assert run.elapsed < 10  # a bad certificate is not retried
        assert box.written() == set()

        ca_file = tmp_path / "shop-ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        box.env["HUBLINK_TLS__CA_FILE"] = str(ca_file)
        run = await box.register()
        assert run.code == 0, run.stderr
    assert len(devcloud.hubs()) == 1


# --- concurrency and crashes ---------------------------------------------------------------


async def test_concurrent_registers_save_exactly_one_hub(devcloud: DevCloud, box: Box) -> None:
    """Two runs at once: one enrolls; the other waits for the lock, then refuses (78)."""
    devcloud.fail_next("/api/auth/login/", None, delay=1.0)
    first, second = await asyncio.gather(box.register(), box.register())
    assert sorted([first.code, second.code]) == [0, 78]
    refused = first if first.code == 78 else second
    assert "already registered" in refused.stderr
    (hub,) = devcloud.hubs()
    assert tomllib.loads(box.credentials.read_text())["hub_id"] == hub.hub_id


def limit_file_size() -> None:
    """In the child: any file write beyond 64 bytes fails (EFBIG), mid-way through the data."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))


async def test_failed_credential_write_leaves_the_old_file_intact(
    devcloud: DevCloud, box: Box
) -> None:
    assert (await box.register()).code == 0
    before = box.credentials.read_bytes()
    assert len(before) > 64
    run = await box.register("--force", preexec_fn=limit_file_size)
    assert run.code == 78
    assert f"could not write {box.credentials}" in run.stderr
    assert box.credentials.read_bytes() == before
    assert not [n for n in box.written() if n.endswith(".tmp")]  # no temporary file left


# --- on a terminal ------------------------------------------------------------------------


class Terminal:
    """The primary side of a pseudo-terminal that a child uses as its controlling tty."""

    def __init__(self) -> None:
        self.primary, self.secondary = pty.openpty()
        self.output = ""

    def become_controlling_tty(self) -> None:
        """In the child: a new session whose controlling terminal is the pty (for getpass)."""
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    async def read_until(self, text: str, timeout: float = 20) -> None:
        """Collect output until ``text`` shows up (or the child closes the terminal)."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while text not in self.output:
            left = deadline - time.monotonic()
            assert left > 0, f"waited for {text!r}; got {self.output!r}"
            try:
                chunk = await asyncio.wait_for(
                    loop.run_in_executor(None, os.read, self.primary, 4096), left
                )
            except OSError:  # EIO: the child closed its side
                return
            if not chunk:
                return
            self.output += chunk.decode(errors="replace")

    def type(self, line: str) -> None:
        os.write(self.primary, (line + "\n").encode())


async def test_interactive_prompts_and_never_echoes_the_password(
    devcloud: DevCloud, box: Box
) -> None:
    box.env["HUBLINK_LOG__LEVEL"] = "warning"
    tty = Terminal()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hublink",
        "register",
        stdin=tty.secondary,
        stdout=tty.secondary,
        stderr=tty.secondary,
        env=box.env,
        preexec_fn=tty.become_controlling_tty,
    )
    os.close(tty.secondary)
    try:
        await tty.read_until("email: ")
        tty.type(DEMO_EMAIL)
        await tty.read_until("password: ")
        tty.type(DEMO_PASSWORD)
        await tty.read_until("registered: hub id")
        await tty.read_until("\n", timeout=5)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(tty.primary)
    assert DEMO_EMAIL in tty.output  # the email is echoed as typed...
    assert DEMO_PASSWORD not in tty.output  # ...the password is not
    (hub,) = devcloud.hubs()
    assert hub.name == "Corner Shop"
