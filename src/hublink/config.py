"""Settings: a frozen model read from the TOML file and ``HUBLINK_*`` variables.

The environment beats the file, the file beats the defaults. Every key is the
contract's (section 5); defaults are the named constants below.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from hublink.errors import ConfigError
from hublink.logs import register_secret_str

DEFAULT_CONFIG_PATH = Path("/etc/hublink/hublink.toml")
DEFAULT_CLOUD_URL = "https://erplora.com"
DEFAULT_STATE_DIR = Path("/var/lib/hublink")
DEFAULT_RUNTIME_DIR = Path("/run/hublink")
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
DEFAULT_HOOKS_TIMEOUT = 30.0

#: The hook a person triggers to install a recorded plugin update (contract section 6).
INSTALL_PLUGIN_UPDATE = "install_plugin_update"


def hook_keys() -> frozenset[str]:
    """The keys ``[hooks]`` accepts: every Cloud→Hub message type, plus the install hook."""
    # The types come from the message models, whose build costs `hublink status`
    # a sixth of its start-up: only a config that has hooks pays for it.
    from hublink.link.messages import INBOUND_TYPES

    return INBOUND_TYPES | {INSTALL_PLUGIN_UPDATE}


_SECRET_KEYS = ("server_token", "tunnel_token", "password")

Port = Annotated[int, Field(ge=1, le=65535)]
Seconds = Annotated[float, Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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
    frpc_path: str = DEFAULT_FRPC_PATH
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
    """``[outbox]``: the durable queue's bound."""

    max_pending: Annotated[int, Field(ge=1)] = DEFAULT_OUTBOX_MAX_PENDING


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
    )

    cloud_url: str = DEFAULT_CLOUD_URL
    allow_insecure_http: bool = False
    state_dir: Path = DEFAULT_STATE_DIR
    runtime_dir: Path = DEFAULT_RUNTIME_DIR
    hub: HubSettings = HubSettings()
    websocket: WebSocketSettings = WebSocketSettings()
    tunnel: TunnelSettings = TunnelSettings()
    backup: BackupSettings = BackupSettings()
    outbox: OutboxSettings = OutboxSettings()
    hooks: dict[str, Annotated[tuple[str, ...], Field(min_length=1)]] = Field(default_factory=dict)
    hooks_timeout: Seconds = DEFAULT_HOOKS_TIMEOUT
    tls: TlsSettings = TlsSettings()
    log: LogSettings = LogSettings()

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
        return self.runtime_dir / "control.sock"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (localhost or a loopback address)."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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


def load_settings(explicit: str | None = None) -> Settings:
    """Build the settings from the config file and the environment.

    Raises:
        ConfigError: the file is missing (when named), unreadable, not TOML,
            or a value is invalid; the message names the key and the value.
    """
    path, named = config_path(explicit)
    data = _read_toml(path, required=named)
    try:
        settings = Settings(**data)
    except ValidationError as err:
        raise ConfigError(
            f"invalid configuration ({path} and HUBLINK_* variables):\n"
            + describe_validation_error(err),
            hint=f"fix the value in {path} or the matching HUBLINK_* variable",
        ) from None
    # Masked from the start, whichever code path ends up holding it.
    register_secret_str(settings.tunnel.server_token)
    return settings


def _read_toml(path: Path, *, required: bool) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        if required:
            raise ConfigError(
                f"config file {path} does not exist",
                hint="create it from hublink.example.toml, or drop --config",
            ) from None
        return {}
    except PermissionError:
        raise ConfigError(
            f"config file {path} is not readable by this user",
            hint="run as the hublink user, or fix the file's owner and mode",
        ) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(
            f"config file {path} is not valid TOML: {err}",
            hint="fix the syntax; hublink.example.toml shows every key",
        ) from None


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
