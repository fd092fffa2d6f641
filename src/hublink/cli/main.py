"""argv → command → exit code: the parser, and the one place that maps errors to exit codes.

Every path out of :func:`main` is a message and a contract exit code (section
5): a :class:`~hublink.errors.HublinkError` carries its own; an ``OSError``
that escaped a command is named with its file (78 when it is a permission
problem, as in a state dir of another user); anything else is reported as a
bug in one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hublink import __version__
from hublink.cli import commands, failures
from hublink.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, HublinkError, UsageError
from hublink.link.eventdata import APP_EVENT_TYPES

if TYPE_CHECKING:
    from hublink.config import Settings

#: Exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as exit 2 through our own path."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{message}\n{self.format_usage().strip()}")


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
        help="read the password from the first line of stdin (asked without echo on a terminal)",
    )
    p.add_argument("--name", help="the hub's name (default: hub.name)")
    p.add_argument("--address", help="the shop's address (default: hub.address)")
    p.add_argument("--force", action="store_true", help="replace existing credentials")
    p.set_defaults(func=commands.cmd_register)

    p = sub.add_parser("run", help="run the daemon in the foreground")
    p.set_defaults(func=commands.cmd_run)

    p = sub.add_parser("status", help="registration and the daemon's live state")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=commands.cmd_status)

    p = sub.add_parser("send", help="queue an event for the Cloud")
    p.add_argument("type", metavar="TYPE", choices=APP_EVENT_TYPES)
    p.add_argument(
        "--data",
        required=True,
        metavar="JSON",
        help="the event's fields: JSON text, @FILE to read it from a file, or - for stdin",
    )
    p.set_defaults(func=commands.cmd_send)

    p = sub.add_parser("backup", help="back up the Hub's database now")
    p.add_argument("--output", metavar="FILE", help="write the encrypted backup here")
    p.add_argument("--force", action="store_true", help="replace an existing --output FILE")
    p.set_defaults(func=commands.cmd_backup)

    p = sub.add_parser("restore", help="decrypt and decompress a backup into a SQLite file")
    p.add_argument("backup", metavar="BACKUP")
    p.add_argument("--identity", required=True, metavar="FILE", help="an age identity file")
    p.add_argument("--output", required=True, metavar="DB", help="the SQLite file to write")
    p.add_argument("--force", action="store_true", help="replace an existing DB")
    p.set_defaults(func=commands.cmd_restore)

    p = sub.add_parser("doctor", help="troubleshooting checks")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    # doctor loads the settings itself, so that a broken config is one of its findings.
    p.set_defaults(func=commands.cmd_doctor, no_settings=True)

    _add_support_bundle(
        sub.add_parser(
            "support-bundle", help="one .tar.gz for support: versions, config, status, logs"
        )
    )

    p = sub.add_parser("tunnel-config", help="print the frpc config, the token masked")
    p.set_defaults(func=commands.cmd_tunnel_config)

    p = sub.add_parser("unregister", help="forget this hub's credentials")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.set_defaults(func=commands.cmd_unregister)

    p = sub.add_parser("demo", help="the whole flow against the built-in reference Cloud")
    p.add_argument("--keep", action="store_true", help="leave it running afterwards")
    p.set_defaults(func=commands.cmd_demo, no_settings=True)

    _add_devcloud(sub.add_parser("devcloud", help="serve the reference Cloud (for development)"))
    for command in sub.choices.values():
        # `hublink status --config X` means what `hublink --config X status` does;
        # SUPPRESS keeps an absent one from hiding the option given before COMMAND.
        command.add_argument(
            "--config", metavar="PATH", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
    return parser


def _add_support_bundle(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--output", metavar="FILE", help="where to write it (default: ./hublink-support-…)"
    )
    p.add_argument("--force", action="store_true", help="replace an existing FILE")
    # Like doctor, it loads the settings itself: a config that does not load is worth sending.
    p.set_defaults(func=commands.cmd_support_bundle, no_settings=True)


def _add_devcloud(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8000)
    p.add_argument("--data-dir", metavar="DIR", help="where its SQLite state lives")
    p.add_argument("--frps", metavar="PATH", help="an frps binary to run beside it")
    p.add_argument(
        "--frps-port",
        type=_port,
        default=commands.DEVCLOUD_FRPS_PORT,
        metavar="PORT",
        help="where frps listens for hubs (default: %(default)s, hublink's tunnel.server_port)",
    )
    p.set_defaults(func=commands.cmd_devcloud, no_settings=True)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (0 to 65535)")
    return port


class _Context:
    """What is known when an error escapes: for the words of its message."""

    # A plain class: dataclasses (with inspect) would be an eighth of `hublink status`.
    __slots__ = ("command", "settings")

    def __init__(self) -> None:
        self.command: str | None = None
        self.settings: Settings | None = None


def main(argv: Sequence[str]) -> int:
    """Run one command; return its exit code."""
    failures.tolerant_output()
    context = _Context()
    try:
        return _run(argv, context)
    except HublinkError as err:
        return failures.report(err, context.command)
    except KeyboardInterrupt:
        failures.say("hublink: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        failures.reader_left()
        return EXIT_FAILURE
    except SystemExit as exit_:
        # argparse's --help and --version end this way.
        code = exit_.code
        return code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_USAGE)
    except Exception as err:
        # The last net: a user sees one clear line, never a traceback.
        return failures.report_unexpected(err, context.command, context.settings)


def _run(argv: Sequence[str], context: _Context) -> int:
    args = build_parser().parse_args(argv)
    context.command = args.command
    if args.command in commands.QUICK_PATHS:
        # Asked of a running daemon before any settings load (most of a cold start).
        answered = commands.QUICK_PATHS[args.command](args)
        if answered is not None:
            return answered
    if getattr(args, "no_settings", False):
        commands.configure_logging("info", "auto")
        return int(args.func(args, None))
    # hublink uses no pydantic plugin; looking for one reads the metadata of
    # every installed distribution, the largest cost of loading the settings
    # after pydantic itself. PYDANTIC_DISABLE_PLUGINS is pydantic's own switch.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from hublink.configload import load_settings

    context.settings = load_settings(args.config)
    commands.configure_logging(
        context.settings.log.level, context.settings.log.format, daemon=args.command == "run"
    )
    return int(args.func(args, context.settings))
