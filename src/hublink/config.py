"""Settings: a frozen model read from the TOML file and ``HUBLINK_*`` variables.

The environment beats the file, the file beats the defaults. Every key is the
contract's (section 5); defaults are the named constants below.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from hublink.addresses import is_loopback, split_listen
from hublink.configfile import (
    CONTROL_SOCKET,
    DEFAULT_RUNTIME_DIR,
)

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
DEFAULT_WEB_LISTEN = "127.0.0.1:8002"
#: The local page's languages (contract section 9); the first is the fallback.
PageLanguage = Literal["en", "es"]
PAGE_LANGUAGES: tuple[str, ...] = get_args(PageLanguage)
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

#: Setting names whose values an error message never shows.
SECRET_KEYS = ("server_token", "tunnel_token", "password")


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


def _listen_address(value: str) -> str:
    split_listen(value)
    return value.strip()


def _page_listen_address(value: str) -> str:
    split_listen(value, any_port=True)
    return value.strip()


#: A ``HOST:PORT`` to listen on (``metrics.listen``), checked when the settings load.
ListenAddress = Annotated[str, AfterValidator(_listen_address)]
#: The page's ``HOST:PORT`` (``web.listen``); port 0 takes any free port.
PageListenAddress = Annotated[str, AfterValidator(_page_listen_address)]


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


class WebSettings(_Section):
    """``[web]``: the local page (contract section 9).

    Attributes:
        enabled: serve the page at all.
        listen: ``HOST:PORT``, an IPv6 host in brackets (``[::1]:8002``); port 0
            takes any free port (tests).
        language: ``en`` or ``es`` to force one; None follows ``Accept-Language``.
    """

    enabled: bool = True
    listen: PageListenAddress = DEFAULT_WEB_LISTEN
    language: PageLanguage | None = None

    @field_validator("language", mode="before")
    @classmethod
    def _language_lower(cls, value: object) -> object:
        # "" means unset, as for any optional key given through the environment.
        if isinstance(value, str):
            return value.strip().lower() or None
        return value


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
    web: WebSettings = WebSettings()
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
