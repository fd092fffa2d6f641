"""The command line: parses arguments, runs a command, maps errors to exit codes.

This is the only module that prints for the user or decides an exit code.
Imports of heavy modules stay inside the commands so that ``--version`` and
``--help`` start fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from hublink import __version__, statedir
from hublink.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    HublinkError,
    UsageError,
)

if TYPE_CHECKING:
    from hublink.config import Settings

Command = Callable[[argparse.Namespace, "Settings"], int]


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as exit 2 through our own path."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{message}\n{self.format_usage().strip()}")


class _EventTypes:
    """argparse ``choices`` read from the message models when ``send`` parses its TYPE.

    Not a literal list: the types are the models' (hublink.link.messages), and
    the parser must not load pydantic for ``--version`` or ``--help``.
    """

    def __contains__(self, value: object) -> bool:
        return value in self._types()

    def __iter__(self) -> Iterator[str]:
        return iter(self._types())

    @staticmethod
    def _types() -> tuple[str, ...]:
        from hublink.link.messages import APP_EVENT_TYPES  # cold start: see above

        return APP_EVENT_TYPES


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (contract section 5)."""
    parser = _Parser(prog="hublink", description="Link this shop's Hub to its Cloud.")
    parser.add_argument("--version", action="version", version=f"hublink {__version__}")
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $HUBLINK_CONFIG, then /etc/hublink/hublink.toml)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("register", help="enroll this hub with the Cloud (once)")
    p.add_argument("--email", help="the owner's Cloud account")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin",
    )
    p.add_argument("--name", help="the hub's name (default: hub.name)")
    p.add_argument("--address", help="the shop's address (default: hub.address)")
    p.add_argument("--force", action="store_true", help="replace existing credentials")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("run", help="run the daemon in the foreground")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("status", help="registration and the daemon's live state")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("send", help="queue an event for the Cloud")
    p.add_argument("type", metavar="TYPE", choices=_EventTypes())
    p.add_argument("--data", required=True, metavar="JSON", help="the event's fields")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("backup", help="back up the Hub's database now")
    p.add_argument("--output", metavar="FILE", help="write the encrypted backup here")
    p.set_defaults(func=cmd_backup)

    p = sub.add_parser("restore", help="decrypt and decompress a backup into a SQLite file")
    p.add_argument("backup", metavar="BACKUP")
    p.add_argument("--identity", required=True, metavar="FILE", help="an age identity file")
    p.add_argument("--output", required=True, metavar="DB", help="the SQLite file to write")
    p.add_argument("--force", action="store_true", help="replace an existing DB")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("doctor", help="troubleshooting checks")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    # doctor loads the settings itself, so that a broken config is one of its findings.
    p.set_defaults(func=cmd_doctor, no_settings=True)

    _add_support_bundle(sub)

    p = sub.add_parser("tunnel-config", help="print the frpc config, the token masked")
    p.set_defaults(func=cmd_tunnel_config)

    p = sub.add_parser("unregister", help="forget this hub's credentials")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=cmd_unregister)

    p = sub.add_parser("demo", help="the whole flow against the built-in reference Cloud")
    p.add_argument("--keep", action="store_true", help="leave it running afterwards")
    p.set_defaults(func=cmd_demo, no_settings=True)

    p = sub.add_parser("devcloud", help="serve the reference Cloud (for development)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--data-dir", metavar="DIR", help="where its SQLite state lives")
    p.add_argument("--frps", metavar="PATH", help="an frps binary to run beside it")
    p.set_defaults(func=cmd_devcloud, no_settings=True)
    for command in sub.choices.values():
        # `hublink status --config X` means what `hublink --config X status` does;
        # SUPPRESS keeps an absent one from hiding the option given before COMMAND.
        command.add_argument(
            "--config", metavar="PATH", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    return parser


def _add_support_bundle(sub: Any) -> None:
    p = sub.add_parser(
        "support-bundle", help="one .tar.gz for support: versions, config, status, logs"
    )
    p.add_argument(
        "--output", metavar="FILE", help="where to write it (default: ./hublink-support-…)"
    )
    p.add_argument("--force", action="store_true", help="replace an existing FILE")
    # Like doctor, it loads the settings itself: a config that does not load is worth sending.
    p.set_defaults(func=cmd_support_bundle, no_settings=True)


def main(argv: Sequence[str]) -> int:
    """Run one command; return its exit code."""
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "no_settings", False):
            _configure_logging("info", "auto")
            return int(args.func(args, None))
        # hublink uses no pydantic plugin; looking for one reads the metadata of
        # every installed distribution, the largest cost of loading the settings
        # after pydantic itself. PYDANTIC_DISABLE_PLUGINS is pydantic's own switch.
        os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
        from hublink.config import load_settings

        settings = load_settings(args.config)
        _configure_logging(settings.log.level, settings.log.format)
        return int(args.func(args, settings))
    except HublinkError as err:
        from hublink.logs import mask_text

        # A safety net: a Cloud's error text may echo a token back.
        print(f"hublink: error: {mask_text(str(err))}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("hublink: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `hublink status --json | head`: the reader left; that is not our failure,
        # and Python must not print a second traceback while flushing at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except SystemExit as exit_:
        # argparse's --help and --version end this way.
        code = exit_.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_USAGE)


def _configure_logging(level: str, fmt: str) -> None:
    from hublink import logs

    logs.configure(level, fmt)


def _out(text: str = "") -> None:
    print(text, flush=True)


# --- commands ---------------------------------------------------------------


def cmd_register(args: argparse.Namespace, settings: Settings) -> int:
    """``hublink register``: one-shot enrollment; prints each step, then the hub id and slug."""
    import asyncio
    import socket

    from pydantic import SecretStr

    from hublink.credentials import CredentialStore
    from hublink.enroll import enroll, ensure_replaceable

    # Refuse before prompting: nobody should type a password for nothing.
    # (enroll checks again under the lock, and reports a replacement then.)
    ensure_replaceable(
        CredentialStore(settings.state_dir), force=args.force, progress=lambda _note: None
    )
    email, password = _register_login(args)
    name = args.name or settings.hub.name or socket.gethostname()
    address = args.address if args.address is not None else settings.hub.address
    creds = asyncio.run(
        enroll(
            settings,
            email=email,
            password=SecretStr(password),
            name=name,
            address=address,
            force=args.force,
            progress=_out,
        )
    )
    _out(f"registered: hub id {creds.hub_id}, slug {creds.slug}")
    return EXIT_OK


def _register_login(args: argparse.Namespace) -> tuple[str, str]:
    """The owner's email and password: from the options, or asked on a terminal."""
    import getpass

    interactive = sys.stdin.isatty()
    if not interactive and not (args.email and args.password_stdin):
        raise UsageError(
            "stdin is not a terminal: pass --email and --password-stdin "
            "(the password on the first line of stdin)"
        )
    email = (args.email or input("Cloud account email: ")).strip()
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Cloud account password: ")
    if not email or not password:
        raise UsageError("register needs the owner's email and password")
    return email, password


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """``hublink run``: the daemon in the foreground, until SIGTERM/SIGINT."""
    from hublink.daemon import run

    return run(settings)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """``hublink status``: the running daemon's view, else what the files say."""
    import json

    from hublink.control import status_now
    from hublink.status import offline_status, summary_lines

    status = status_now(settings.control_socket) or offline_status(settings)
    if args.json:
        _out(json.dumps(status, indent=2))
    else:
        for line in summary_lines(status):
            _out(line)
    return EXIT_OK


def cmd_send(args: argparse.Namespace, settings: Settings) -> int:
    """``hublink send TYPE --data JSON``: queue an event durably, then wake a running daemon.

    Prints the event's id. Works without a daemon and before registration:
    the daemon sends whatever the outbox holds once it is connected.
    """
    import json

    from hublink.link.events import queue_event
    from hublink.link.notices import StateStore
    from hublink.link.outbox import Outbox

    try:
        data = json.loads(args.data)
    except json.JSONDecodeError as err:
        raise UsageError(
            f"--data is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno})",
            hint='quote it for the shell, e.g. --data \'{"plugin_id": "x", ...}\'',
        ) from None
    if not isinstance(data, dict):
        raise UsageError(f"--data must be a JSON object, not {type(data).__name__}")
    outbox = Outbox.open(settings.state_dir, settings.outbox.max_pending)
    notices = StateStore.load(settings.state_dir)
    try:
        event_id = queue_event(outbox, notices, args.type, data)
    finally:
        notices.close()
        outbox.close()
    _poke_daemon(settings)
    _out(event_id)
    return EXIT_OK


def _poke_daemon(settings: Settings) -> None:
    # Best effort: the event is durable already and a daemon finds it at its
    # next drain anyway; the poke only makes it leave within a second.
    try:
        from hublink.control import poke
    except ImportError:
        return
    poke(settings.control_socket)


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    """``hublink backup``: back up now, to the Cloud or to ``--output FILE``."""
    import asyncio
    from pathlib import Path

    from hublink.backup.service import back_up_now

    output = Path(args.output).absolute() if args.output else None
    outcome = asyncio.run(back_up_now(settings, output=output))
    _out(f"filename:  {outcome.filename}")
    _out(f"size:      {outcome.size}")
    _out(f"sha256:    {outcome.sha256}")
    if outcome.backup_id is not None:
        _out(f"backup_id: {outcome.backup_id}")
    else:
        _out(f"written to {outcome.path}")
    return EXIT_OK


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    """``hublink restore``: decrypt, decompress and check a backup into a SQLite file."""
    from pathlib import Path

    from hublink.backup.restore import restore_backup

    restored = restore_backup(
        Path(args.backup), Path(args.identity), Path(args.output), force=args.force
    )
    _out(f"restored {restored.path} ({restored.size} bytes); PRAGMA integrity_check: ok")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace, settings: Settings | None) -> int:
    """``hublink doctor``: every check; exit 0 unless one fails (78 when the config does)."""
    import asyncio
    import json

    from hublink import doctor
    from hublink.config import config_path, load_settings
    from hublink.errors import EXIT_CONFIG, ConfigError

    path, _ = config_path(args.config)
    try:
        settings = load_settings(args.config)
    except ConfigError as err:
        report = doctor.config_report(err)
    else:
        _configure_logging(settings.log.level, settings.log.format)
        report = asyncio.run(doctor.run_checks(settings, config_path=path))
    _out(json.dumps(report.as_json(), indent=2) if args.json else doctor.render(report))
    if report.config_failed:
        return EXIT_CONFIG
    return EXIT_OK if report.ok else EXIT_FAILURE


def cmd_support_bundle(args: argparse.Namespace, settings: Settings | None) -> int:
    """``hublink support-bundle``: versions, config, status, doctor, frpc.toml, metrics, journal."""
    from pathlib import Path

    from hublink import bundle
    from hublink.config import config_path, load_settings
    from hublink.errors import ConfigError

    path, _ = config_path(args.config)
    error: ConfigError | None = None
    try:
        settings = load_settings(args.config)
    except ConfigError as err:
        settings, error = None, err
    else:
        _configure_logging(settings.log.level, settings.log.format)
    output = Path(args.output) if args.output else bundle.default_output()
    if output.exists() and not args.force:
        # Before the minute of collecting: the answer would be the same afterwards.
        bundle.write(bundle.Bundle(), output, force=False)
    collected = bundle.collect(settings, error, path)
    members = bundle.write(collected, output, force=args.force)
    _out(f"wrote {output.absolute()} (mode 0600): {', '.join(members)}")
    for note in collected.notes:
        _out(f"  not collected: {note}")
    _out("secrets are masked; look inside before you send it: tar -xzf FILE")
    return EXIT_OK


def cmd_tunnel_config(args: argparse.Namespace, settings: Settings) -> int:
    """``hublink tunnel-config``: the frpc.toml hublink would write, secrets masked."""
    from hublink.credentials import CredentialStore
    from hublink.tunnel.config import masked_config

    creds = CredentialStore(settings.state_dir).load()
    _out(masked_config(settings, creds).rstrip("\n"))
    return EXIT_OK


#: ``{state_dir}/frpc.toml`` (contract section 4), named here to avoid importing tomli_w.


def cmd_unregister(args: argparse.Namespace, settings: Settings) -> int:
    """``hublink unregister``: forget the credentials (the Cloud keeps the hub)."""
    from hublink.credentials import CredentialStore

    store = CredentialStore(settings.state_dir)
    if not store.exists():
        _out("this hub is not registered; nothing to forget")
        return EXIT_OK
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("unregister needs --yes when stdin is not a terminal")
        answer = input(f"Forget this hub's credentials in {store.path}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            _out("kept the credentials")
            return EXIT_FAILURE
    store.remove()
    # frpc.toml holds the same tunnel token; it is rewritten at every frpc start.
    (settings.state_dir / statedir.FRPC_CONFIG).unlink(missing_ok=True)
    _out(f"forgot the credentials ({store.path} removed); the Cloud still lists the hub")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, settings: Settings | None) -> int:
    """``hublink demo``: the whole flow against the built-in reference Cloud."""
    from hublink.devcloud.demo import main as demo_main

    return demo_main(keep=args.keep)


def cmd_devcloud(args: argparse.Namespace, settings: Settings | None) -> int:
    """``hublink devcloud``: serve the reference Cloud until Ctrl-C or SIGTERM."""
    import asyncio
    from pathlib import Path

    from hublink.devcloud import DEMO_EMAIL, DEMO_PASSWORD, DevCloud
    from hublink.devcloud.serve import default_data_dir, serve

    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    cloud = DevCloud(data_dir, frps_path=Path(args.frps) if args.frps else None)

    def ready(cloud: DevCloud) -> None:
        _out(f"reference Cloud serving at {cloud.url}")
        _out(f"  owner account: {DEMO_EMAIL} / {DEMO_PASSWORD}")
        _out(f"  hubs:          {cloud.url}/admin/hubs")
        _out(f"  state:         {data_dir}")
        if cloud.frps is not None:
            _out(f"  frps:          port {cloud.frps.bind_port}")
        _out("press Ctrl-C to stop")

    asyncio.run(serve(cloud, args.host, args.port, ready))
    _out("reference Cloud stopped")
    return EXIT_OK
