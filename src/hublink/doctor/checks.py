"""``hublink doctor``: the troubleshooting steps as checks, each pass, warn, fail or skip.

    config        the settings load (the CLI reports it when they do not)
    credentials   present, parseable, mode 0600, owned by the running user
    state_dir     exists and writable; runtime_dir likewise; disk_space free
    backup_database  backup.database opens read-only, as the backup opens it
    cloud         GET /api/auth/public-key/ answers 200 with an RS256 key
    tls           the Cloud's certificate verifies (system CAs + tls.ca_file)
    clock         this machine's clock against the Cloud's Date header
    websocket     the hub's token opens the link (or the daemon's link is up)
    frpc          found, executable, version 0.52 or later
    frps          the tunnel server's port accepts TCP
    local_port    the Hub application listens on hub.local_port
    daemon        ``hublink run`` answers on the control socket, and its state

Network checks run concurrently with a short timeout, so a dead network costs
seconds, not minutes. A check that cannot run because an earlier one failed is
``skip``; only ``fail`` makes the report not ok.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import shutil
import sqlite3
import ssl
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import structlog

from hublink.errors import ConfigError, CredentialsError, NotRegisteredError
from hublink.logs import mask_text, register_secret_str

if TYPE_CHECKING:
    import aiohttp

    from hublink.config import Settings
    from hublink.credentials import Credentials
    from hublink.status import StatusReport

log = structlog.get_logger(__name__)

Status = Literal["pass", "warn", "fail", "skip"]
_T = TypeVar("_T")

#: Patience for each network check.
DEFAULT_TIMEOUT = 10.0
#: frp's TOML config (what hublink writes) arrived in 0.52.
MIN_FRPC_VERSION = (0, 52, 0)
#: Free space in state_dir below which the outbox and backups are at risk.
WARN_FREE_BYTES = 256 * 1024 * 1024
FAIL_FREE_BYTES = 16 * 1024 * 1024
#: Clock difference that breaks login tokens (the Cloud's JWT leeway).
MAX_CLOCK_SKEW = 60.0

SQLITE_MAGIC = b"SQLite format 3\x00"

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Check:
    """One check's verdict; ``hint`` says what to do when it did not pass."""

    name: str
    status: Status
    detail: str
    hint: str | None = None


@dataclass
class Report:
    """Every check, in a fixed order."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether nothing failed (warnings are fine)."""
        return all(check.status != "fail" for check in self.checks)

    @property
    def config_failed(self) -> bool:
        """Whether the configuration itself did not load."""
        return any(c.name == "config" and c.status == "fail" for c in self.checks)

    def as_json(self) -> dict[str, Any]:
        """``{"ok": bool, "checks": [{"name", "status", "detail", "hint"}]}``."""
        return {"ok": self.ok, "checks": [asdict(check) for check in self.checks]}


def config_report(err: ConfigError) -> Report:
    """The report when the settings do not load: nothing else can be checked."""
    return Report(
        [
            Check("config", "fail", mask_text(err.message), err.hint),
            *(Check(name, "skip", "needs a valid configuration") for name in _LATER_CHECKS),
        ]
    )


_LATER_CHECKS = (
    "credentials",
    "state_dir",
    "runtime_dir",
    "disk_space",
    "backup_database",
    "cloud",
    "tls",
    "clock",
    "websocket",
    "frpc",
    "frps",
    "local_port",
    "daemon",
)


async def run_checks(
    settings: Settings, *, config_path: Path | None = None, patience: float = DEFAULT_TIMEOUT
) -> Report:
    """Run every check against ``settings``; never raises for a failed check."""
    register_secret_str(settings.tunnel.server_token)  # masked in whatever a check shows
    report = Report([_config_check(settings, config_path)])
    creds, creds_check = _credentials_check(settings)
    report.checks.append(creds_check)
    report.checks += [
        _dir_check("state_dir", settings.state_dir, required=True),
        _dir_check("runtime_dir", settings.runtime_dir, required=False),
        _disk_space_check(settings.state_dir),
        await _guard("backup_database", asyncio.to_thread(_database_check, settings)),
    ]
    fetched = await _guard("daemon", _fetch_daemon(settings))
    daemon_status = fetched if isinstance(fetched, dict) else None
    cloud, websocket, frpc, frps, local = await asyncio.gather(
        _guard("cloud", _cloud_checks(settings, patience)),
        _guard("websocket", _websocket_check(settings, creds, daemon_status, patience)),
        _guard("frpc", _frpc_check(settings, patience)),
        _guard("frps", _frps_check(settings, patience)),
        _guard("local_port", _local_port_check(settings, patience)),
    )
    report.checks += cloud if isinstance(cloud, list) else [cloud]
    report.checks += [websocket, frpc, frps, local]
    report.checks.append(
        fetched if isinstance(fetched, Check) else _daemon_check(settings, daemon_status)
    )
    return report


async def _guard(name: str, work: Awaitable[_T]) -> _T | Check:
    """Run one check; a bug in it becomes a failed check, not a crashed doctor."""
    try:
        return await work
    except asyncio.CancelledError:
        raise
    except Exception as err:
        log.exception("doctor check crashed", check=name)
        return Check(
            name,
            "fail",
            f"the check itself failed: {type(err).__name__}: {mask_text(str(err))}",
            "please report this with the output of: hublink doctor --json",
        )


# --- local checks --------------------------------------------------------------


def _config_check(settings: Settings, path: Path | None) -> Check:
    where = f"{path}" if path is not None and path.exists() else "defaults and environment"
    return Check("config", "pass", f"loaded from {where}; cloud_url = {settings.cloud_url}")


def _credentials_check(settings: Settings) -> tuple[Credentials | None, Check]:
    from hublink.credentials import CredentialStore

    store = CredentialStore(settings.state_dir)
    path = store.path
    try:
        info = path.stat()
    except FileNotFoundError:
        return None, Check(
            "credentials",
            "fail",
            f"{path} does not exist: this hub is not registered",
            "run `hublink register` (as the hublink user) to enroll it",
        )
    except PermissionError:
        return None, Check(
            "credentials",
            "fail",
            f"cannot reach {path}: permission denied",
            "run doctor as the hublink user: sudo -u hublink hublink doctor",
        )
    problems: list[str] = []
    hints: list[str] = []
    mode = info.st_mode & 0o777
    if mode != 0o600:
        problems.append(f"mode is {mode:04o}, not 0600 (the token is a password)")
        hints.append(f"chmod 600 {path}")
    if info.st_uid != os.geteuid():
        problems.append(f"owned by {_user(info.st_uid)}, but doctor runs as {_user(os.geteuid())}")
        hints.append(
            f"run as the owner (sudo -u {_user(info.st_uid)} hublink doctor), "
            f"or chown hublink: {path}"
        )
    try:
        creds = store.load()
    except (NotRegisteredError, CredentialsError) as err:
        problems.insert(0, err.message)
        hints.insert(0, err.hint or "run `hublink register --force`")
        creds = None
    if problems:
        return creds, Check("credentials", "fail", "; ".join(problems), "; ".join(hints))
    assert creds is not None
    detail = f"hub {creds.hub_id} ({creds.slug}), registered {creds.registered_at:%Y-%m-%d}"
    if creds.cloud_url.rstrip("/") != settings.cloud_url:
        return creds, Check(
            "credentials",
            "warn",
            f"{detail}, but with {creds.cloud_url}, not cloud_url = {settings.cloud_url}",
            "set cloud_url back, or enroll with the new Cloud: hublink register --force",
        )
    return creds, Check("credentials", "pass", detail)


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _dir_check(name: str, path: Path, *, required: bool) -> Check:
    if not path.is_dir():
        if required:
            return Check(
                name,
                "fail",
                f"{path} does not exist",
                "systemd creates it (StateDirectory=hublink); by hand: "
                f"install -d -m 0700 -o hublink -g hublink {path}",
            )
        return Check(
            name,
            "warn",
            f"{path} does not exist (the daemon needs it for control.sock)",
            "systemd creates it at start (RuntimeDirectory=hublink); by hand, create it "
            "or set runtime_dir",
        )
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        return Check(
            name,
            "fail",
            f"{path} is not writable by {_user(os.geteuid())}: {err.strerror}",
            f"run as the hublink user, or chown hublink: {path}",
        )
    return Check(name, "pass", f"{path} is writable")


def _disk_space_check(path: Path) -> Check:
    try:
        free = shutil.disk_usage(path).free
    except OSError as err:
        return Check("disk_space", "skip", f"cannot measure free space at {path}: {err.strerror}")
    shown = f"{free / 1024 / 1024:.0f} MiB free at {path}"
    hint = "free some space: the outbox and backups need it"
    if free < FAIL_FREE_BYTES:
        return Check("disk_space", "fail", shown, hint)
    if free < WARN_FREE_BYTES:
        return Check("disk_space", "warn", shown, hint)
    return Check("disk_space", "pass", shown)


def _database_check(settings: Settings) -> Check:
    """Open ``backup.database`` the way a backup does (read-only, one read transaction)."""
    name = "backup_database"
    database = settings.backup.database
    if database is None:
        return Check(name, "skip", "backup.database is not set (backup requests are refused)")
    header = _database_header(database)
    if isinstance(header, Check):
        return header
    wal = len(header) > 19 and header[18] == 2
    error = _read_once(database)
    if error:
        return Check(name, "fail", f"{database} cannot be read: {error}", _DB_ACCESS_HINT)
    mode = "WAL" if wal else "rollback-journal"
    if wal and not os.access(database.parent, os.W_OK):
        return Check(
            name,
            "warn",
            f"{database} is in WAL mode and {database.parent} is not writable by "
            f"{_user(os.geteuid())}: reading works only while the Hub keeps its -shm file",
            "SQLite readers of a WAL database update its -shm file: ReadWritePaths= "
            "and group write access to the folder (README: Install, backups)",
        )
    return Check(name, "pass", f"{database} reads fine ({mode} mode)")


_DB_ACCESS_HINT = "give hublink access with a drop-in (README: Install, backups)"


def _database_header(database: Path) -> bytes | Check:
    name = "backup_database"
    try:
        with database.open("rb") as handle:
            header = handle.read(100)
    except FileNotFoundError:
        return Check(name, "fail", f"{database} does not exist", "check backup.database")
    except OSError as err:
        user = _user(os.geteuid())
        return Check(
            name, "fail", f"{database} cannot be read by {user}: {_os_reason(err)}", _DB_ACCESS_HINT
        )
    if not header.startswith(SQLITE_MAGIC):
        return Check(name, "fail", f"{database} is not a SQLite database", "check backup.database")
    return header


def _read_once(database: Path) -> str | None:
    uri = f"{database.resolve().as_uri()}?mode=ro"
    try:
        connection = sqlite3.connect(uri, uri=True, timeout=2.0, isolation_level=None)
    except sqlite3.Error as err:
        return str(err)
    try:
        connection.execute("BEGIN")
        connection.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        connection.execute("ROLLBACK")
    except sqlite3.Error as err:
        return str(err)
    finally:
        connection.close()
    return None


# --- the Cloud -------------------------------------------------------------------


@dataclass
class _Fetched:
    status: int = 0
    body: bytes = b""
    date: str | None = None
    error: BaseException | None = None


async def _cloud_checks(settings: Settings, patience: float) -> list[Check]:
    from hublink.cloud.client import PUBLIC_KEY_PATH, make_session

    url = settings.cloud_url + PUBLIC_KEY_PATH
    try:
        session = make_session(settings)
    except ConfigError as err:
        return [
            Check("cloud", "skip", "no TLS settings to connect with"),
            Check("tls", "fail", err.message, err.hint),
            Check("clock", "skip", "needs an answer from the Cloud"),
        ]
    async with session:
        fetched = await _fetch(session, url, patience)
    return [
        _public_key_check(settings, url, fetched),
        _tls_check(settings, fetched),
        _clock_check(fetched),
    ]


async def _fetch(session: aiohttp.ClientSession, url: str, patience: float) -> _Fetched:
    import aiohttp

    fetched = _Fetched()
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=patience)) as resp:
            fetched.status = resp.status
            fetched.date = resp.headers.get("Date")
            fetched.body = await resp.content.read(1024 * 1024)
    except (aiohttp.ClientError, TimeoutError, OSError) as err:
        fetched.error = err
    return fetched


def _public_key_check(settings: Settings, url: str, fetched: _Fetched) -> Check:
    if fetched.error is not None:
        if _is_tls_error(fetched.error):
            return Check(
                "cloud", "fail", f"{url}: the TLS handshake failed", "see the tls check below"
            )
        return Check(
            "cloud",
            "fail",
            f"{url} cannot be reached: {_network_reason(fetched.error)}",
            f"check the network, cloud_url, and HTTPS_PROXY/NO_PROXY; try: curl -sS {url}",
        )
    if fetched.status != 200:
        return Check(
            "cloud",
            "fail",
            f"{url} answered HTTP {fetched.status}",
            "the Cloud is up but unhappy: check cloud_url, or try again later",
        )
    problem = _public_key_problem(fetched.body)
    if problem:
        return Check(
            "cloud",
            "fail",
            f"{url}: {problem}",
            "check cloud_url: a proxy or another server may be answering in the Cloud's place",
        )
    return Check("cloud", "pass", f"{settings.cloud_url} answers with its RS256 public key")


def _network_reason(err: BaseException) -> str:
    import aiohttp

    from hublink.retry import describe_transient

    if isinstance(err, aiohttp.ClientConnectorError) and not isinstance(
        err, aiohttp.ClientConnectorDNSError
    ):
        return f"cannot connect ({_os_reason(err.os_error)})"
    return describe_transient(err)


def _os_reason(err: OSError) -> str:
    # asyncio's "Connect call failed (...)" hides the errno's plain words.
    if err.errno:
        return os.strerror(err.errno).lower()
    return err.strerror or str(err) or type(err).__name__


def _public_key_problem(body: bytes) -> str | None:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from pydantic import ValidationError

    from hublink.cloud import PublicKey

    try:
        key = PublicKey.model_validate_json(body)
    except ValidationError:
        return "the answer is not a public key object"
    if key.algorithm.upper() != "RS256":
        return f"the Cloud signs with {key.algorithm}, hublink expects RS256"
    try:
        loaded = load_pem_public_key(key.public_key.encode())
    except ValueError:
        return "the public key is not a readable PEM key"
    if not isinstance(loaded, RSAPublicKey):
        return "the public key is not an RSA key"
    return None


def _is_tls_error(err: BaseException) -> bool:
    import aiohttp

    return isinstance(err, aiohttp.ClientSSLError | ssl.SSLError)


def _tls_check(settings: Settings, fetched: _Fetched) -> Check:
    from hublink.config import is_loopback

    if settings.cloud_scheme == "http":
        if is_loopback(settings.cloud_host):
            return Check("tls", "skip", "plain http to this machine (development Cloud)")
        return Check(
            "tls",
            "warn",
            f"plain http to {settings.cloud_host}: the link is not encrypted",
            "use an https:// cloud_url",
        )
    if fetched.error is not None:
        if _is_tls_error(fetched.error):
            return Check(
                "tls",
                "fail",
                f"the certificate of {settings.cloud_host} does not verify: "
                f"{_tls_reason(fetched.error)}",
                "check the clock; behind a TLS-inspecting proxy, put its CA in tls.ca_file",
            )
        return Check("tls", "skip", "no connection to check a certificate on")
    return Check("tls", "pass", f"the certificate of {settings.cloud_host} verifies")


def _tls_reason(err: BaseException) -> str:
    reason = getattr(err, "verify_message", None) or getattr(err, "reason", None)
    if reason:
        return str(reason)
    certificate_error = getattr(err, "certificate_error", None)
    return str(certificate_error or err)


def _clock_check(fetched: _Fetched) -> Check:
    if fetched.error is not None:
        return Check("clock", "skip", "needs an answer from the Cloud")
    if not fetched.date:
        return Check("clock", "skip", "the Cloud's answer carried no Date header")
    try:
        cloud_time = parsedate_to_datetime(fetched.date).timestamp()
    except (TypeError, ValueError):
        return Check("clock", "skip", f"the Cloud's Date header is unreadable: {fetched.date!r}")
    skew = cloud_time - time.time()
    if abs(skew) > MAX_CLOCK_SKEW:
        direction = "behind" if skew > 0 else "ahead of"
        return Check(
            "clock",
            "fail",
            f"this machine's clock is {_duration(abs(skew))} {direction} the Cloud's; "
            "TLS certificates and login tokens break beyond a minute",
            "turn on time synchronisation (timedatectl set-ntp true) or set the clock",
        )
    return Check("clock", "pass", f"within {abs(skew):.0f} s of the Cloud's")


def _duration(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.0f} hours"
    if seconds >= 120:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


async def _websocket_check(
    settings: Settings,
    creds: Credentials | None,
    daemon_status: StatusReport | None,
    patience: float,
) -> Check:
    if creds is None:
        return Check("websocket", "skip", "needs the hub's credentials")
    if daemon_status is not None and daemon_status["websocket"]["state"] == "connected":
        # A second handshake would replace the daemon's own link on the Cloud.
        return Check("websocket", "pass", "the running daemon's link is connected")
    from websockets.asyncio.client import connect
    from websockets.exceptions import WebSocketException

    from hublink import __version__
    from hublink.link.connection import ws_url
    from hublink.tls import ssl_context

    context: ssl.SSLContext | None = None
    if settings.cloud_scheme == "https":
        try:
            context = ssl_context(settings)
        except ConfigError as err:
            return Check("websocket", "skip", err.message)
    try:
        async with connect(
            ws_url(settings, creds),
            ssl=context,
            open_timeout=patience,
            close_timeout=patience,
            user_agent_header=f"hublink/{__version__}",
        ) as ws:
            await ws.close()
    except (WebSocketException, OSError, TimeoutError) as err:
        return _handshake_failure(err)
    return Check("websocket", "pass", "the Cloud accepted the hub's token; closed cleanly")


def _handshake_failure(err: BaseException) -> Check:
    from websockets.exceptions import InvalidStatus

    from hublink.retry import describe_transient

    if isinstance(err, InvalidStatus):
        status = err.response.status_code
        if status in (401, 403):
            return Check(
                "websocket",
                "fail",
                f"the Cloud refused the hub's token (HTTP {status}): revoked or deleted",
                "enroll again: sudo -u hublink hublink register --force",
            )
        return Check(
            "websocket",
            "fail",
            f"the Cloud answered the handshake with HTTP {status}",
            "check cloud_url; a proxy may be in the way of WebSockets",
        )
    return Check(
        "websocket",
        "fail",
        f"the handshake failed: {mask_text(describe_transient(err))}",
        "check the network and that proxies let WebSockets through",
    )


# --- the tunnel --------------------------------------------------------------------


async def _frpc_check(settings: Settings, patience: float) -> Check:
    if not settings.tunnel.enabled:
        return Check("frpc", "skip", "tunnel.enabled = false")
    found = shutil.which(settings.tunnel.frpc_path)
    if found is None:
        return _frpc_missing(settings.tunnel.frpc_path)
    version = await _frpc_version(found, patience)
    if version is None:
        return Check(
            "frpc",
            "warn",
            f"{found} did not report a version",
            f"check that {found} really is frpc: {found} --version",
        )
    shown = ".".join(str(part) for part in version)
    if version < MIN_FRPC_VERSION:
        return Check(
            "frpc",
            "fail",
            f"{found} is frp {shown}; hublink needs 0.52 or later (TOML config)",
            "upgrade frp from https://github.com/fatedier/frp/releases",
        )
    return Check("frpc", "pass", f"{found}, frp {shown}")


def _frpc_missing(configured: str) -> Check:
    if "/" in configured and Path(configured).is_file():
        return Check("frpc", "fail", f"{configured} is not executable", f"chmod 755 {configured}")
    return Check(
        "frpc",
        "fail",
        f"{configured} not found" + ("" if "/" in configured else " on PATH"),
        "install frp 0.52 or later (frpc), or set tunnel.frpc_path",
    )


async def _frpc_version(path: str, patience: float) -> tuple[int, int, int] | None:
    try:
        proc = await asyncio.create_subprocess_exec(
            path,
            "--version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
    except OSError:
        return None
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), patience)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    match = _VERSION.search(output.decode(errors="replace"))
    if match is None:
        return None
    major, minor, patch = match.groups()
    return int(major), int(minor), int(patch or 0)


async def _frps_check(settings: Settings, patience: float) -> Check:
    if not settings.tunnel.enabled:
        return Check("frps", "skip", "tunnel.enabled = false")
    host, port = settings.frps_addr, settings.tunnel.server_port
    error = await _tcp_connect(host, port, patience)
    if error:
        return Check(
            "frps",
            "fail",
            f"{host}:{port} does not accept connections: {error}",
            "check tunnel.server_addr/server_port, and that outbound TCP to it is allowed",
        )
    return Check("frps", "pass", f"{host}:{port} accepts connections")


async def _local_port_check(settings: Settings, patience: float) -> Check:
    port = settings.hub.local_port
    error = await _tcp_connect("127.0.0.1", port, patience)
    if error:
        verdict: Status = "fail" if settings.tunnel.enabled else "warn"
        return Check(
            "local_port",
            verdict,
            f"nothing listens on 127.0.0.1:{port} ({error}); the tunnel would expose nothing",
            "start the Hub application, or set hub.local_port to its port",
        )
    return Check("local_port", "pass", f"the Hub application listens on 127.0.0.1:{port}")


async def _tcp_connect(host: str, port: int, patience: float) -> str | None:
    """None when ``host:port`` accepts a TCP connection, else why not."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), patience)
    except TimeoutError:
        return "timed out"
    except OSError as err:
        return _os_reason(err)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


# --- the daemon ---------------------------------------------------------------------


async def _fetch_daemon(settings: Settings) -> StatusReport | None:
    from hublink.control import fetch_status

    return await fetch_status(settings.control_socket)


def _daemon_check(settings: Settings, status: StatusReport | None) -> Check:
    socket_path = settings.control_socket
    if not isinstance(status, dict):
        if socket_path.exists() and not os.access(socket_path, os.R_OK | os.W_OK):
            return Check(
                "daemon",
                "fail",
                f"{socket_path} exists but {_user(os.geteuid())} may not use it",
                "run as the hublink user, or add this user to group hublink",
            )
        return Check(
            "daemon",
            "fail",
            f"no daemon answers on {socket_path}",
            "systemctl start hublink; if it keeps stopping: journalctl -u hublink -n 50",
        )
    pid = (status.get("daemon") or {}).get("pid")
    link = status.get("websocket") or {}
    tunnel = status.get("tunnel") or {}
    pending = (status.get("outbox") or {}).get("pending")
    detail = (
        f"pid {pid}; link {link.get('state')}, tunnel {tunnel.get('state')}, "
        f"{pending} event(s) waiting"
    )
    last_errors = [
        f"{what}: {mask_text(str(error))}"
        for what, error in (("link", link.get("last_error")), ("tunnel", tunnel.get("last_error")))
        if error
    ]
    if last_errors:
        detail += "; last error " + "; ".join(last_errors)
    if link.get("state") == "unauthorized":
        return Check(
            "daemon",
            "fail",
            detail,
            "the Cloud refuses this hub: enroll again with hublink register --force",
        )
    if tunnel.get("state") == "failed":
        return Check("daemon", "fail", detail, "see the frpc check, and journalctl -u hublink")
    if link.get("state") != "connected" or tunnel.get("state") == "backoff":
        return Check("daemon", "warn", detail, "see the checks above and journalctl -u hublink")
    return Check("daemon", "pass", detail)


# --- presentation --------------------------------------------------------------------


def render(report: Report) -> str:
    """The human form: one line per check, its hint below when it did not pass."""
    width = max(len(check.name) for check in report.checks)
    lines = []
    for check in report.checks:
        indent = " " * (width + 8)
        detail = check.detail.replace("\n", "\n" + indent)
        lines.append(f"{check.status.upper():<5} {check.name:<{width}}  {detail}")
        if check.hint and check.status in ("warn", "fail"):
            lines.append(f"{'':<5} {'':<{width}}  hint: {check.hint}")
    failed = sum(check.status == "fail" for check in report.checks)
    warned = sum(check.status == "warn" for check in report.checks)
    lines.append("")
    lines.append("all good" if failed == warned == 0 else f"{failed} failed, {warned} warning(s)")
    return "\n".join(lines)
