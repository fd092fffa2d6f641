"""Reading the config file: bytes, encoding and TOML syntax, each failure named for a person.

:func:`hublink.configload.load_settings` validates what this returns. Whatever
the file holds (Latin-1 text, a BOM, a folder, a device, random bytes), the
result is its tables or a :class:`~hublink.errors.ConfigError` (exit 78)
naming the file and what to do; never another exception.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hublink.errors import ConfigError

#: The config file when neither ``--config`` nor ``$HUBLINK_CONFIG`` names one (contract §5).
DEFAULT_CONFIG_PATH = Path("/etc/hublink/hublink.toml")
#: ``runtime_dir``'s default: where the control socket lives.
DEFAULT_RUNTIME_DIR = Path("/run/hublink")
#: The control socket's name in ``runtime_dir`` (contract section 8).
CONTROL_SOCKET = "control.sock"

#: A config file bigger than this is not one (a device, a log, a database given by mistake).
MAX_CONFIG_BYTES = 1024 * 1024
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def config_path(explicit: str | None) -> tuple[Path, bool]:
    """The config file to read, and whether ``--config`` named it (then it must exist)."""
    if explicit:
        return Path(explicit), True
    # $HUBLINK_CONFIG only moves the default path (contract §5): a missing file
    # there means defaults plus environment, as it does at /etc/hublink.
    from_env = os.environ.get("HUBLINK_CONFIG")
    if from_env:
        return Path(from_env), False
    return DEFAULT_CONFIG_PATH, False


def control_socket_of(explicit: str | None) -> Path | None:
    """Where a running daemon's control socket is, read without the settings model; or None.

    For ``hublink status``: asking the daemon needs only ``runtime_dir``, and
    the full settings (pydantic-settings) cost most of the command's start-up.
    None when the file cannot be read: the caller then loads the settings,
    which say what is wrong.
    """
    runtime_dir = os.environ.get("HUBLINK_RUNTIME_DIR", "").strip()
    if not runtime_dir:
        path, named = config_path(explicit)
        try:
            value = _top_level_key(path, "runtime_dir", required=named)
        except ConfigError:
            return None
        if value is not None and not (isinstance(value, str) and value.strip()):
            return None
        runtime_dir = value or str(DEFAULT_RUNTIME_DIR)
    return Path(runtime_dir) / CONTROL_SOCKET


def _top_level_key(path: Path, key: str, *, required: bool) -> Any:
    """The file's top-level ``key``, or None; parsed only when the file can hold it.

    A key is written as its own letters (bare or quoted) or with backslash
    escapes in a quoted key; a file with neither holds no such key, and most
    configs (the example's included) never set ``runtime_dir``.

    Raises:
        ConfigError: as :func:`read_config_file`.
    """
    raw = _read_config_bytes(path, required=required)
    if raw is None or (key.encode() not in raw and b"\\" not in raw):
        return None
    return _parse_toml(path, raw).get(key)


def read_config_file(path: Path, *, required: bool) -> dict[str, Any]:
    """The file's tables; ``{}`` for a missing file at a default path.

    Raises:
        ConfigError: the file is missing (only when ``required``), unreadable, a
            folder, too big, not UTF-8 (or starts with a BOM), or not TOML; the
            message names ``path`` and, for bad bytes, the line and column.
    """
    raw = _read_config_bytes(path, required=required)
    if raw is None:
        return {}
    return _parse_toml(path, raw)


def _read_config_bytes(path: Path, *, required: bool) -> bytes | None:
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        if required:
            raise ConfigError(
                f"config file {path} does not exist",
                hint="create it from hublink.example.toml, or drop --config",
            ) from None
        return None
    except PermissionError:
        raise ConfigError(
            f"config file {path} is not readable by this user",
            hint="run as the hublink user (sudo -u hublink hublink …), "
            "or fix the file's owner and mode",
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            f"config file {path} is a folder, not a file",
            hint="name the file itself, e.g. --config /etc/hublink/hublink.toml",
        ) from None
    except OSError as err:
        raise ConfigError(
            f"config file {path} cannot be read: {err.strerror or err}",
            hint="name a readable TOML file, e.g. --config /etc/hublink/hublink.toml",
        ) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"config file {path} is larger than {MAX_CONFIG_BYTES // 1024} KiB: "
            "it cannot be a hublink config",
            hint="name the TOML file itself, e.g. --config /etc/hublink/hublink.toml",
        )
    return raw


def _parse_toml(path: Path, raw: bytes) -> dict[str, Any]:
    def save_hint(encoding: str) -> str:
        return (
            "TOML files are UTF-8: save it again as UTF-8 (without a BOM), e.g. "
            f"iconv -f {encoding} -t utf-8 {path} > hublink.toml.new"
        )

    if raw.startswith(_UTF8_BOM):
        raise ConfigError(
            f"config file {path} starts with a UTF-8 byte-order mark (BOM), "
            "which TOML does not allow",
            hint=f"save it as UTF-8 without a BOM, e.g. sed -i '1s/^\\xEF\\xBB\\xBF//' {path}",
        )
    if raw.startswith(_UTF16_BOMS):
        raise ConfigError(f"config file {path} is UTF-16 text, not UTF-8", hint=save_hint("utf-16"))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise ConfigError(
            f"config file {path} is not UTF-8 text: byte 0x{raw[err.start]:02x} "
            f"at line {line}, column {column}",
            hint=save_hint("latin1"),
        ) from None
    # tomllib (with datetime and string) is a fifth of a `hublink status` that
    # asks the daemon, which needs no parse at all (see _top_level_key).
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        problem = str(err)
    except RecursionError:
        problem = "arrays or tables nested too deeply"
    except ValueError as err:
        # tomllib turns digits into int() and hits Python's 4300-digit limit.
        problem = f"a value hublink cannot read ({str(err).partition(':')[0]})"
    raise ConfigError(
        f"config file {path} is not valid TOML: {problem}",
        hint="fix the syntax; hublink.example.toml shows every key",
    )
