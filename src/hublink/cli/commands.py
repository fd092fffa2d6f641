"""The commands of ``hublink``: arguments and settings in, an exit code out.

They print their results with :func:`out`; errors are raised as
:class:`~hublink.errors.HublinkError` and turned into words and exit codes by
:mod:`hublink.cli.main`. Heavy modules are imported inside each command.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from hublink import statedir
from hublink.cli import inputs
from hublink.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    HublinkError,
    InvalidEvent,
    OutboxError,
    UsageError,
)
from hublink.link.eventdata import loads_event_data

if TYPE_CHECKING:
    from pathlib import Path

    from hublink.backup.service import BackupOutcome
    from hublink.config import Settings
    from hublink.statusreport import StatusReport

#: ``hublink devcloud --frps-port`` by default: the port every hub's
#: ``tunnel.server_port`` defaults to, fixed so that a restarted reference
#: Cloud is where its hubs' frpc look for it.
DEVCLOUD_FRPS_PORT = 7000
#: Signals that stop ``hublink backup`` cleanly (its temporary files removed),
#: beside Ctrl-C, which asyncio.run turns into a cancellation already.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def configure_logging(level: str, fmt: str, *, daemon: bool = False) -> None:
    """Set up structlog for this process (``log.level``, ``log.format``).

    ``daemon`` for ``hublink run``: a line a Cloud message is its common case,
    and logging must stay a small part of the receive loop's cost, even in a
    flood (:func:`hublink.logs.configure`).
    """
    from hublink import logs

    logs.configure(level, fmt, daemon=daemon)


def out(text: str = "") -> None:
    """Print a line of a command's result on stdout."""
    print(text, flush=True)


# --- commands ---------------------------------------------------------------


def cmd_register(args: argparse.Namespace, settings: Settings) -> int:
    """``hublink register``: one-shot enrollment; prints each step, then the hub id and slug."""
    import asyncio

    from pydantic import SecretStr

    from hublink.credentials import CredentialStore
    from hublink.enroll import enroll, ensure_replaceable, hub_address, hub_name

    # Refuse before prompting: nobody should type a password for nothing.
    # (enroll checks again under the lock, and reports a replacement then.)
    ensure_replaceable(
        CredentialStore(settings.state_dir), force=args.force, progress=lambda _note: None
    )
    email, password = _register_login(args)
    creds = asyncio.run(
        enroll(
            settings,
            email=email,
            password=SecretStr(password),
            name=hub_name(settings, args.name),
            address=hub_address(settings, args.address),
            force=args.force,
            progress=out,
        )
    )
    out(f"registered: hub id {creds.hub_id}, slug {creds.slug}")
    return EXIT_OK


def _register_login(args: argparse.Namespace) -> tuple[str, str]:
    """The owner's email and password: from the options, or asked on a terminal.

    On a terminal the password is always asked without echo, ``--password-stdin``
    or not: typed there, a "stdin" password would otherwise show on the screen.
    """
    interactive = sys.stdin.isatty()
    if not interactive and not (args.email and args.password_stdin):
        raise UsageError(
            "stdin is not a terminal: pass --email and --password-stdin "
            "(the password on the first line of stdin)"
        )
    email = (args.email or inputs.ask("Cloud account email: ", what="email")).strip()
    if interactive:
        password = inputs.ask_secret("Cloud account password: ", what="password")
    else:
        password = inputs.read_line(what="password")
    if not email or not password:
        raise UsageError("register needs the owner's email and password")
    return email, password


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """``hublink run``: the daemon in the foreground, until SIGTERM/SIGINT.

    Unregistered, it waits for a registration instead of exiting (contract section 5).
    """
    from hublink.configfile import config_path
    from hublink.daemon import run

    return run(settings, config_path=config_path(args.config)[0])


def status_from_daemon(args: argparse.Namespace) -> int | None:
    """``hublink status`` answered by a running daemon, before any settings load; else None.

    The settings model is most of the command's start-up and the daemon's
    answer needs none of it; without an answer, :func:`cmd_status` runs as usual
    (and reports a broken config with exit 78).
    """
    from hublink.configfile import control_socket_of
    from hublink.control import status_now

    socket = control_socket_of(args.config)
    status = status_now(socket) if socket is not None else None
    if status is None:
        args.unanswered = socket
        return None
    _print_status(status, as_json=args.json)
    return EXIT_OK


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """``hublink status``: the running daemon's view, else what the files say."""
    from hublink.control import status_now
    from hublink.status import offline_status

    socket = settings.control_socket
    status = status_now(socket) if _not_asked_yet(args, socket) else None
    _print_status(status or offline_status(settings), as_json=args.json)
    return EXIT_OK


def _print_status(status: StatusReport, *, as_json: bool) -> None:
    """Print ``status``; run by a user who can read the daemon's ``web-code`` (root,
    hublink), with the local page's URL carrying the setup code (contract section 9)."""
    import json

    from hublink.status import add_setup_url, summary_lines

    add_setup_url(status)

    if as_json:
        out(json.dumps(status, indent=2))
    else:
        for line in summary_lines(status):
            out(line)


def send_to_daemon(args: argparse.Namespace) -> int | None:
    """``hublink send`` queued by a running daemon, before any settings load; else None.

    The daemon validates and queues the event (contract section 8); without an
    answer, :func:`cmd_send` queues it itself with the same data.

    Raises:
        UsageError, InvalidEvent: ``--data`` is not a JSON object (exit 2).
        InvalidEvent, OutboxError, HublinkError: the daemon refused the event.
    """
    from hublink.configfile import control_socket_of
    from hublink.control import post_event

    socket = control_socket_of(args.config)
    if socket is None:
        return None
    answer = post_event(socket, args.type, _event_data(args))
    if answer is None:
        args.unanswered = socket
        return None
    out(_event_id_from(answer, args.type))
    return EXIT_OK


def _not_asked_yet(args: argparse.Namespace, socket: Path) -> bool:
    """Whether the quick path has not already waited on ``socket`` in vain.

    A daemon that did not answer it (stopped, hung, or busy past the client's
    timeout) is not asked again: the wait would double, and a daemon that is
    only slow would queue ``send``'s event once for each time it was asked.
    """
    return getattr(args, "unanswered", None) != socket


def cmd_send(args: argparse.Namespace, settings: Settings) -> int:
    """``hublink send TYPE --data JSON|@FILE|-``: queue an event durably, wake a running daemon.

    Prints the event's id. Works without a daemon and before registration:
    the daemon sends whatever the outbox holds once it is connected.
    """
    from hublink.control import post_event
    from hublink.link.events import queue_event
    from hublink.link.notices import StateStore
    from hublink.link.outbox import Outbox

    data = _event_data(args)
    # A running daemon queues it: one writer of the outbox, and the way for a
    # user in group hublink, who may not write the state dir, to send at all.
    socket = settings.control_socket
    answer = post_event(socket, args.type, data) if _not_asked_yet(args, socket) else None
    if answer is not None:
        out(_event_id_from(answer, args.type))
        return EXIT_OK
    outbox = Outbox.for_settings(settings)
    try:
        notices = StateStore.load(settings.state_dir)
        try:
            event_id = queue_event(outbox, notices, args.type, data)
        finally:
            notices.close()
    finally:
        outbox.close()
    _poke_daemon(settings)
    out(event_id)
    return EXIT_OK


def _event_data(args: argparse.Namespace) -> dict[str, Any]:
    """``--data`` read and parsed once: stdin can be read only once, and the quick
    path hands what it read to :func:`cmd_send` when no daemon answers.

    Raises:
        UsageError, InvalidEvent: not readable, not JSON, or not an object (exit 2).
    """
    parsed = getattr(args, "parsed_data", None)
    if isinstance(parsed, dict):
        return parsed
    text, source = inputs.event_data(args.data)
    data = loads_event_data(text, source=source)
    if not isinstance(data, dict):
        raise UsageError(f"{source} must be a JSON object, not {type(data).__name__}")
    args.parsed_data = data
    return data


def _event_id_from(answer: tuple[int, Any], event_type: str) -> str:
    """The id in a daemon's answer to ``POST /v1/events``, or its refusal as an error.

    Raises:
        InvalidEvent: 422, the event does not validate (exit 2, as without a daemon).
        OutboxError: 503, the outbox is full or unwritable.
        HublinkError: any other answer.
    """
    status, body = answer
    body = body if isinstance(body, dict) else {}
    if status == 201 and isinstance(body.get("id"), str):
        return str(body["id"])
    message = str(body.get("error") or f"the daemon answered HTTP {status}")
    if status == 422:
        problems = [str(p) for p in body.get("problems") or []]
        lines = "".join(f"\n  {p}" for p in problems if p not in message)
        raise InvalidEvent(message + lines, problems=problems)
    if status == 503:
        raise OutboxError(message, hint="wait for the Cloud to take the queued events")
    raise HublinkError(f"the daemon did not queue the {event_type} event: {message}")


def _poke_daemon(settings: Settings) -> None:
    # Best effort: the event is durable already and a daemon finds it at its
    # next drain anyway; the poke only makes it leave within a second.
    try:
        from hublink.control import poke
    except ImportError:
        return
    poke(settings.control_socket)


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    """``hublink backup``: back up now, to the Cloud or to ``--output FILE``.

    SIGTERM and SIGHUP stop it as Ctrl-C does: the backup is cancelled, its
    temporary files removed, and an existing ``--output`` file is left as it was.
    """
    import asyncio
    from pathlib import Path

    output = Path(args.output).absolute() if args.output else None
    stopped_by: list[signal.Signals] = []
    try:
        outcome = asyncio.run(_back_up(settings, output, args.force, stopped_by))
    except asyncio.CancelledError:
        if not stopped_by:
            raise
        print(
            f"hublink: backup stopped by {stopped_by[0].name}; nothing was written", file=sys.stderr
        )
        return 128 + stopped_by[0]
    out(f"filename:  {outcome.filename}")
    out(f"size:      {outcome.size}")
    out(f"sha256:    {outcome.sha256}")
    if outcome.backup_id is not None:
        out(f"backup_id: {outcome.backup_id}")
    else:
        out(f"written to {outcome.path}")
    return EXIT_OK


async def _back_up(
    settings: Settings, output: Path | None, force: bool, stopped_by: list[signal.Signals]
) -> BackupOutcome:
    import asyncio

    from hublink.backup.service import back_up_now

    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()

    def stop(signum: signal.Signals) -> None:
        stopped_by.append(signum)
        task.cancel()

    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await back_up_now(settings, output=output, replace=force)
    finally:
        for signum in _STOP_SIGNALS:
            loop.remove_signal_handler(signum)


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    """``hublink restore``: decrypt, decompress and check a backup into a SQLite file."""
    from pathlib import Path

    from hublink.backup.restore import restore_backup

    restored = restore_backup(
        Path(args.backup), Path(args.identity), Path(args.output), force=args.force
    )
    out(f"restored {restored.path} ({restored.size} bytes); PRAGMA integrity_check: ok")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace, settings: Settings | None) -> int:
    """``hublink doctor``: every check; exit 0 unless one fails (78 when the config does)."""
    import asyncio
    import json

    from hublink import doctor
    from hublink.configfile import config_path
    from hublink.configload import load_settings
    from hublink.errors import EXIT_CONFIG, ConfigError

    path, _ = config_path(args.config)
    try:
        settings = load_settings(args.config)
    except ConfigError as err:
        report = doctor.config_report(err)
    else:
        configure_logging(settings.log.level, settings.log.format)
        report = asyncio.run(doctor.run_checks(settings, config_path=path))
    out(json.dumps(report.as_json(), indent=2) if args.json else doctor.render(report))
    if report.config_failed:
        return EXIT_CONFIG
    return EXIT_OK if report.ok else EXIT_FAILURE


def cmd_support_bundle(args: argparse.Namespace, settings: Settings | None) -> int:
    """``hublink support-bundle``: versions, config, status, doctor, frpc.toml, metrics, journal."""
    from pathlib import Path

    from hublink import bundle
    from hublink.configfile import config_path
    from hublink.configload import load_settings
    from hublink.errors import ConfigError

    path, _ = config_path(args.config)
    error: ConfigError | None = None
    try:
        settings = load_settings(args.config)
    except ConfigError as err:
        settings, error = None, err
    else:
        configure_logging(settings.log.level, settings.log.format)
    output = Path(args.output) if args.output else bundle.default_output()
    if output.exists() and not args.force:
        # Before the minute of collecting: the answer would be the same afterwards.
        bundle.write(bundle.Bundle(), output, force=False)
    collected = bundle.collect(settings, error, path)
    members = bundle.write(collected, output, force=args.force)
    out(f"wrote {output.absolute()} (mode 0600): {', '.join(members)}")
    for note in collected.notes:
        out(f"  not collected: {note}")
    out("secrets are masked; look inside before you send it: tar -xzf FILE")
    return EXIT_OK


def cmd_tunnel_config(args: argparse.Namespace, settings: Settings) -> int:
    """``hublink tunnel-config``: the frpc.toml hublink would write, secrets masked."""
    from hublink.credentials import CredentialStore
    from hublink.tunnel.config import masked_config

    creds = CredentialStore(settings.state_dir).load()
    out(masked_config(settings, creds).rstrip("\n"))
    return EXIT_OK


def cmd_unregister(args: argparse.Namespace, settings: Settings) -> int:
    """``hublink unregister``: forget the credentials (the Cloud keeps the hub)."""
    from hublink.credentials import CredentialStore

    store = CredentialStore(settings.state_dir)
    if not store.exists():
        out("this hub is not registered; nothing to forget")
        return EXIT_OK
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("unregister needs --yes when stdin is not a terminal")
        if not inputs.confirm(f"Forget this hub's credentials in {store.path}? [y/N] "):
            out("kept the credentials")
            return EXIT_FAILURE
    store.remove()
    # frpc.toml holds the same tunnel token; it is rewritten at every frpc start.
    (settings.state_dir / statedir.FRPC_CONFIG).unlink(missing_ok=True)
    out(f"forgot the credentials ({store.path} removed); the Cloud still lists the hub")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, settings: Settings | None) -> int:
    """``hublink demo``: the whole flow against the built-in reference Cloud."""
    from hublink.devcloud.demo import main as demo_main

    return demo_main(keep=args.keep)


def cmd_devcloud(args: argparse.Namespace, settings: Settings | None) -> int:
    """``hublink devcloud``: serve the reference Cloud (and frps with ``--frps``) until stopped."""
    import asyncio
    from pathlib import Path

    from hublink.devcloud import DEMO_EMAIL, DEMO_PASSWORD, DevCloud
    from hublink.devcloud.serve import default_data_dir, serve

    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    cloud = DevCloud(
        data_dir,
        frps_path=Path(args.frps) if args.frps else None,
        frps_port=args.frps_port,
    )

    def ready(cloud: DevCloud) -> None:
        out(f"reference Cloud serving at {cloud.url}")
        out(f"  owner account: {DEMO_EMAIL} / {DEMO_PASSWORD}")
        out(f"  hubs:          {cloud.url}/admin/hubs")
        out(f"  state:         {data_dir}")
        if cloud.frps is not None:
            out(
                f"  frps:          port {cloud.frps.bind_port} for hubs "
                f"(tunnel.server_port), http vhost port {cloud.frps.vhost_http_port}"
            )
        out("press Ctrl-C to stop")

    asyncio.run(serve(cloud, args.host, args.port, ready))
    out("reference Cloud stopped")
    return EXIT_OK


#: Commands a running daemon answers before any settings load; each returns
#: None when no daemon answers, and the command then runs as usual.
QUICK_PATHS: dict[str, Callable[[argparse.Namespace], int | None]] = {
    "status": status_from_daemon,
    "send": send_to_daemon,
}
