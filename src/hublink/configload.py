"""Loading the settings (contract section 5): the file, then ``HUBLINK_*``, each failure named.

The model is :mod:`hublink.config`; the file's bytes and syntax are
:mod:`hublink.configfile`'s. Here: the environment's rules (a table given
whole in one variable replaces the file's table; a per-key variable merges
into it) and the words of a validation error for a person.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import SettingsError

from hublink.config import ENV_PREFIX, SECRET_KEYS, Settings
from hublink.configfile import config_path, read_config_file
from hublink.errors import ConfigError
from hublink.logs import register_secret_str


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
        shown = "***" if any(s in loc for s in SECRET_KEYS) else repr(given)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        lines.append(f"  {loc} = {shown}: {message}")
    return "\n".join(lines)
