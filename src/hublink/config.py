"""Settings: a frozen model read from the TOML file and ``HUBLINK_*`` variables.

The environment beats the file, the file beats the defaults. Every key is the
contract's (section 5); defaults are the named constants below.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from hublink.configfile import (
    CONTROL_SOCKET,
    DEFAULT_RUNTIME_DIR,
    config_path,
    read_config_file,
)
from hublink.errors import ConfigError
from hublink.logs import register_secret_str

DEFAULT_CLOUD_URL = "https://erplora.com"
DEFAULT_STATE_DIR = Path("/var/lib/hublink")
DEFAULT_LOCAL_PORT = 8001
DEFAULT_HEARTBEAT_INTERVAL = 30.0
DEFAULT_RECONNECT_MIN = 1.0
DEFAULT_RECONNECT_MAX = 60.0
DEFAULT_RECONNECT_SPREAD = 10.0
DEFAULT_UNAUTHORIZED_RETRY = 300.0
DEFAULT_PING_INTERVAL = 20.0
DEFAULT_PING_TIMEOUT = 20.0
DEFAULT_MAX_MESSAGE_SIZE = 1024 * 1024
DEFAULT_FRPC_PATH = "frpc"
DEFAULT_FRPS_PORT = 7000
DEFAULT_FRPC_ADMIN_PORT = 7400
DEFAULT_RESTART_MIN = 1.0
DEFAULT_RESTART_MAX = 60.0
DEFAULT_ZSTD_LEVEL = 3
DEFAULT_OUTBOX_MAX_PENDING = 100_000
#: Below the Cloud's 1 MiB frame limit (contract section 2), with room for a
#: proxy's or a newer Cloud's framing: an event over it could never be delivered.
DEFAULT_OUTBOX_MAX_EVENT_SIZE = 1_000_000
#: Revoked users kept for ``hublink status``: the latest ones; a count says how
#: many older ones were dropped.
DEFAULT_NOTICES_MAX_REVOKED_USERS = 100
DEFAULT_HOOKS_TIMEOUT = 30.0
DEFAULT_SCHEDULE_JITTER = 3600.0
#: A scheduled backup's jitter must stay under a day, so that each day keeps its one slot.
MAX_SCHEDULE_JITTER = 86400.0

#: The hook a person triggers to install a recorded plugin update (contract section 6).
INSTALL_PLUGIN_UPDATE = "install_plugin_update"


def hook_keys() -> frozenset[str]:
    """The keys ``[hooks]`` accepts: every Cloud→Hub message type, plus the install hook."""
    # The types come from the message models, whose build costs `hublink status`
    # a sixth of its start-up: only a config that has hooks pays for it.
    from hublink.link.messages import INBOUND_TYPES

    return INBOUND_TYPES | {INSTALL_PLUGIN_UPDATE}


ENV_PREFIX = "HUBLINK_"

_SECRET_KEYS = ("server_token", "tunnel_token", "password")


def _not_blank(value: object) -> object:
    # Path("") is ".", the current folder: never what "" in a config means.
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty; leave the key out to use the default")
    return value


Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0)]
#: A path or name that has a default, so an empty one is a mistake rather than "unset".
NonBlankPath = Annotated[Path, BeforeValidator(_not_blank)]
NonBlankStr = Annotated[str, BeforeValidator(_not_blank)]


def _blank_means_unset(fields: Mapping[str, FieldInfo], data: Any) -> Any:
    """``""`` or whitespace for a key whose default is unset (``None``) means unset.

    ``backup.database = ""`` in a file, or ``HUBLINK_BACKUP__DATABASE=`` in a
    systemd drop-in, is how people switch a setting off; read as a path it
    would be ``.``. Applied to every such key of every section, present and future.
    """
    if not isinstance(data, dict):
        return data
    return {
        key: None
        if isinstance(value, str)
        and not value.strip()
        and key in fields
        and fields[key].default is None
        else value
        for key, value in data.items()
    }


#: ``HH:MM``, 24-hour, two digits each (contract section 11).
_SCHEDULE = re.compile(r"(?:[01]\d|2[0-3]):[0-5]\d")
_LISTEN = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):(?P<port>\d{1,5})")


def split_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:9464"`` → ``("127.0.0.1", 9464)``; ``"[::1]:9464"`` → ``("::1", 9464)``.

    Raises:
        ValueError: not ``HOST:PORT`` with a port in 1..65535 (the message says so).
    """
    match = _LISTEN.fullmatch(value.strip())
    if match is None:
        raise ValueError(
            f'{value!r} is not HOST:PORT; write it like "127.0.0.1:9464" or "[::1]:9464"'
        )
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"{value!r}: the port must be between 1 and 65535, not {port}")
    return match["host"].strip("[]"), port


def _listen_address(value: str) -> str:
    split_listen(value)
    return value.strip()


#: A ``HOST:PORT`` to listen on (``metrics.listen``), checked when the settings load.
ListenAddress = Annotated[str, AfterValidator(_listen_address)]


class _Section(BaseModel):
    # allow_inf_nan: "inf" seconds would sleep forever, "nan" compares false to every bound.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _blanks(cls, data: Any) -> Any:
        return _blank_means_unset(cls.model_fields, data)


class HubSettings(_Section):
    """``[hub]``: defaults for ``register`` and the Hub application's port."""

    name: str = ""
    address: str = ""
    local_port: Port = DEFAULT_LOCAL_PORT


class WebSocketSettings(_Section):
    """``[websocket]``: the link's timings and limits."""

    heartbeat_interval: Seconds = DEFAULT_HEARTBEAT_INTERVAL
    reconnect_min: Seconds = DEFAULT_RECONNECT_MIN
    reconnect_max: Seconds = DEFAULT_RECONNECT_MAX
    reconnect_spread: Annotated[float, Field(ge=0)] = DEFAULT_RECONNECT_SPREAD
    unauthorized_retry: Seconds = DEFAULT_UNAUTHORIZED_RETRY
    ping_interval: Seconds = DEFAULT_PING_INTERVAL
    ping_timeout: Seconds = DEFAULT_PING_TIMEOUT
    max_message_size: Annotated[int, Field(ge=1)] = DEFAULT_MAX_MESSAGE_SIZE

    @model_validator(mode="after")
    def _ordered(self) -> WebSocketSettings:
        if self.reconnect_min > self.reconnect_max:
            raise ValueError("reconnect_min must not be greater than reconnect_max")
        return self


class TunnelSettings(_Section):
    """``[tunnel]``: the frpc child."""

    enabled: bool = True
    frpc_path: NonBlankStr = DEFAULT_FRPC_PATH
    server_addr: str | None = None
    server_port: Port = DEFAULT_FRPS_PORT
    server_token: SecretStr | None = None
    admin_port: Port = DEFAULT_FRPC_ADMIN_PORT
    restart_min: Seconds = DEFAULT_RESTART_MIN
    restart_max: Seconds = DEFAULT_RESTART_MAX
    proxy_type: Literal["tcp", "http"] = "tcp"

    @model_validator(mode="after")
    def _ordered(self) -> TunnelSettings:
        if self.restart_min > self.restart_max:
            raise ValueError("restart_min must not be greater than restart_max")
        return self


class BackupSettings(_Section):
    """``[backup]``: what to back up and to whom it is encrypted."""

    database: Path | None = None
    recipients: tuple[str, ...] = ()
    zstd_level: Annotated[int, Field(ge=1, le=22)] = DEFAULT_ZSTD_LEVEL
    schedule: str | None = None
    schedule_jitter: Annotated[float, Field(ge=0, lt=MAX_SCHEDULE_JITTER)] = DEFAULT_SCHEDULE_JITTER

    @field_validator("schedule")
    @classmethod
    def _schedule_shape(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None  # schedule = "" reads as "no schedule", as leaving it out does
        if not _SCHEDULE.fullmatch(value.strip()):
            raise ValueError(
                f"{value!r} is not a time of day as HH:MM (24-hour, two digits each), "
                'e.g. "03:30" or "23:05"'
            )
        return value.strip()

    @field_validator("recipients")
    @classmethod
    def _recipients_valid(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            if not entry.startswith(("age1", "ssh-ed25519 ", "ssh-rsa ")):
                raise ValueError(
                    f"{entry[:40]!r} is not an age (age1…) or SSH (ssh-ed25519/ssh-rsa) public key"
                )
        return value


class OutboxSettings(_Section):
    """``[outbox]``: the durable queue's bounds."""

    max_pending: Annotated[int, Field(ge=1)] = DEFAULT_OUTBOX_MAX_PENDING
    #: Bytes of one event's JSON frame; a larger event is refused when queued.
    max_event_size: Annotated[int, Field(ge=1024)] = DEFAULT_OUTBOX_MAX_EVENT_SIZE


class NoticesSettings(_Section):
    """``[notices]``: how much of what the Cloud told the hub is kept for ``status``."""

    max_revoked_users: Annotated[int, Field(ge=1)] = DEFAULT_NOTICES_MAX_REVOKED_USERS


class MetricsSettings(_Section):
    """``[metrics]``: the Prometheus endpoint on TCP (contract section 10)."""

    listen: ListenAddress | None = None


class TlsSettings(_Section):
    """``[tls]``: trust beyond the system store."""

    ca_file: Path | None = None


class LogSettings(_Section):
    """``[log]``: verbosity and output format."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "console", "json", "journal"] = "auto"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        # HUBLINK_LOG__LEVEL=DEBUG is what people type.
        return value.lower() if isinstance(value, str) else value


class Settings(BaseSettings):
    """Every setting of hublink, frozen once built."""

    model_config = SettingsConfigDict(
        env_prefix="HUBLINK_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        case_sensitive=False,
        allow_inf_nan=False,
    )

    cloud_url: str = DEFAULT_CLOUD_URL
    allow_insecure_http: bool = False
    state_dir: NonBlankPath = DEFAULT_STATE_DIR
    runtime_dir: NonBlankPath = DEFAULT_RUNTIME_DIR
    hub: HubSettings = HubSettings()
    websocket: WebSocketSettings = WebSocketSettings()
    tunnel: TunnelSettings = TunnelSettings()
    backup: BackupSettings = BackupSettings()
    outbox: OutboxSettings = OutboxSettings()
    notices: NoticesSettings = NoticesSettings()
    hooks: dict[str, Annotated[tuple[str, ...], Field(min_length=1)]] = Field(default_factory=dict)
    hooks_timeout: Seconds = DEFAULT_HOOKS_TIMEOUT
    tls: TlsSettings = TlsSettings()
    log: LogSettings = LogSettings()
    metrics: MetricsSettings = MetricsSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's content arrives as init kwargs; listing env first makes
        # the environment win, as the contract says.
        return (env_settings, init_settings)

    @model_validator(mode="before")
    @classmethod
    def _blanks(cls, data: Any) -> Any:
        return _blank_means_unset(cls.model_fields, data)

    @field_validator("cloud_url")
    @classmethod
    def _cloud_url_shape(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an https:// URL such as https://erplora.com")
        if parts.query or parts.fragment or (parts.path not in ("", "/")):
            raise ValueError("must be the Cloud's base URL, without a path or query")
        return value

    @field_validator("hooks")
    @classmethod
    def _hook_types(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        allowed_keys = hook_keys() if value else frozenset()
        for key in value:
            if key not in allowed_keys:
                allowed = ", ".join(sorted(allowed_keys))
                raise ValueError(f"no Cloud message is called {key!r}; hooks exist for {allowed}")
        return value

    @model_validator(mode="after")
    def _insecure_only_when_allowed(self) -> Settings:
        if self.cloud_scheme == "http" and not (
            self.allow_insecure_http or is_loopback(self.cloud_host)
        ):
            raise ValueError(
                f"cloud_url {self.cloud_url!r} is plain http to a non-loopback host; "
                "use https://, or set allow_insecure_http = true if you really mean it"
            )
        return self

    @property
    def cloud_scheme(self) -> str:
        """``https`` or ``http``."""
        return urlsplit(self.cloud_url).scheme

    @property
    def cloud_host(self) -> str:
        """The Cloud's host name, without port."""
        return urlsplit(self.cloud_url).hostname or ""

    @property
    def frps_addr(self) -> str:
        """Where frps listens: ``tunnel.server_addr``, else the Cloud's host."""
        return self.tunnel.server_addr or self.cloud_host

    @property
    def credentials_path(self) -> Path:
        """``{state_dir}/credentials.toml``."""
        return self.state_dir / "credentials.toml"

    @property
    def control_socket(self) -> Path:
        """``{runtime_dir}/control.sock``."""
        return self.runtime_dir / CONTROL_SOCKET


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (localhost or a loopback address)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_settings(explicit: str | None = None) -> Settings:
    """Build the settings from the config file and the environment.

    A table given whole in the environment (``HUBLINK_HOOKS='{}'``) replaces
    the file's table; a variable for one key (``HUBLINK_HOOKS__USER_REVOKED``)
    merges into it.

    Raises:
        ConfigError: the file is missing (when named), unreadable, a folder,
            not UTF-8, not TOML, or a value (from the file or a ``HUBLINK_*``
            variable) is invalid; the message names the file or variable,
            the key and the value.
    """
    path, named = config_path(explicit)
    data = read_config_file(path, required=named)
    data = _drop_tables_given_whole(data, os.environ)
    try:
        settings = Settings(**data)
    except ValidationError as err:
        raise ConfigError(
            f"invalid configuration ({path} and HUBLINK_* variables):\n"
            + describe_validation_error(err),
            hint=f"fix the value in {path} or the matching HUBLINK_* variable",
        ) from None
    except SettingsError as err:
        raise _env_json_error(err, os.environ) from None
    # Masked from the start, whichever code path ends up holding it.
    register_secret_str(settings.tunnel.server_token)
    return settings


def _is_table(field: FieldInfo) -> bool:
    annotation = field.annotation
    if get_origin(annotation) is dict:
        return True
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


#: The top-level keys that are TOML tables (``[hooks]``, ``[backup]``, …).
TABLES = frozenset(name for name, field in Settings.model_fields.items() if _is_table(field))


def _env_name(table: str) -> str:
    return f"{ENV_PREFIX}{table.upper()}"


def _drop_tables_given_whole(data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """The file's data without the tables the environment gives whole.

    pydantic-settings deep-merges the environment into the file, so
    ``HUBLINK_HOOKS='{}'`` would leave every hook of the file in place: the
    opposite of what an operator who empties the table means.

    Raises:
        ConfigError: such a variable is not a JSON object's text.
    """
    given = {name.upper(): value for name, value in environ.items()}
    dropped = dict(data)
    for table in TABLES:
        value = given.get(_env_name(table))
        if value is None:
            continue
        try:
            json.loads(value)
        except (ValueError, RecursionError) as err:
            raise ConfigError(
                f"the environment variable {_env_name(table)} is not valid JSON: "
                + _json_problem(err),
                hint=f"a table in the environment is a JSON object, e.g. "
                f"{_env_name(table)}='{{}}' for an empty one; or unset it",
            ) from None
        dropped.pop(table, None)
    return dropped


def _json_problem(err: Exception) -> str:
    if isinstance(err, json.JSONDecodeError):
        return f"{err.msg} (column {err.colno})"
    if isinstance(err, RecursionError):
        return "nested too deeply"
    return str(err)


def _env_json_error(err: SettingsError, environ: Mapping[str, str]) -> ConfigError:
    """A clear error for a ``HUBLINK_*`` list or table that pydantic-settings could not parse."""
    culprits = []
    for name, value in environ.items():
        if not name.upper().startswith(ENV_PREFIX) or "__" not in name:
            continue
        if value.strip()[:1] not in ("[", "{"):
            continue
        try:
            json.loads(value)
        except (ValueError, RecursionError) as json_err:
            culprits.append(f"  {name.upper()}: {_json_problem(json_err)}")
    detail = "\n".join(culprits) or f"  {err}"
    return ConfigError(
        "a HUBLINK_* variable holding a list or table is not valid JSON:\n" + detail,
        hint="lists and tables in the environment are JSON, e.g. '[\"age1...\"]' or '{}'",
    )


def describe_validation_error(err: ValidationError) -> str:
    """One line per problem: the dotted key, the value given, what is allowed."""
    lines = []
    for problem in err.errors(include_url=False):
        loc = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key; see hublink.example.toml for the valid ones")
            continue
        if problem["type"] == "missing":
            lines.append(f"  {loc}: required")
            continue
        given = problem.get("input")
        if isinstance(given, dict):
            # A whole section failed (restart_min > restart_max, http to a remote
            # host): its dump could hold tunnel.server_token, and the message says enough.
            lines.append(f"  {loc}: {message}")
            continue
        shown = "***" if any(s in loc for s in _SECRET_KEYS) else repr(given)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        lines.append(f"  {loc} = {shown}: {message}")
    return "\n".join(lines)
