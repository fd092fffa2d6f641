"""The docs stay true to the code.

The configuration page and the example file match the settings model, and
README.md and docs/*.md name every exit code, command, status field, frame
type, control route, doctor check and state file the code has, and link only
to files in the repository.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from hublink import errors, statedir
from hublink.config import Settings, hook_keys, load_settings
from hublink.link import messages
from support.cli import make_child_env, run_hublink

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "hublink.example.toml"
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONFIG_PAGE = DOCS / "configuration.md"
OPERATIONS = DOCS / "operations.md"
PROTOCOL = DOCS / "protocol.md"
GENERATOR = ROOT / "scripts" / "gen_config_docs.py"
UNIT = ROOT / "systemd" / "hublink.service"
CONTROL_SOURCE = ROOT / "src" / "hublink" / "control.py"


def leaves(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Dotted key → default, for every leaf setting of the model."""
    found: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.update(leaves(annotation, f"{prefix}{name}."))
        else:
            found[prefix + name] = field.get_default(call_default_factory=True)
    return found


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted key → value of a parsed TOML document (``hooks`` stays one value)."""
    found: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict) and key != "hooks":
            found.update(flatten(value, f"{prefix}{key}."))
        else:
            found[prefix + key] = value
    return found


def uncommented_example() -> str:
    """The example with every ``# key = value`` line switched on."""
    return re.sub(r"^# ([a-z_]+ = .*)$", r"\1", EXAMPLE.read_text(), flags=re.MULTILINE)


def test_example_as_shipped_loads_to_the_defaults() -> None:
    assert load_settings(str(EXAMPLE)) == Settings()


def test_example_documents_every_key_with_its_default(tmp_path: Path) -> None:
    enabled = tmp_path / "hublink.toml"
    enabled.write_text(uncommented_example())
    load_settings(str(enabled))  # every value shown is a valid one
    shown = flatten(tomllib.loads(enabled.read_text()))
    model = leaves(Settings)
    assert sorted(shown) == sorted(model)
    for key, default in model.items():
        if default is None or default in ({}, ()):
            continue  # unset by default: the example shows a sample value
        expected = [str(v) for v in default] if isinstance(default, tuple) else default
        actual = shown[key]
        assert (str(actual) if isinstance(default, Path) else actual) == (
            str(expected) if isinstance(default, Path) else expected
        ), key


def test_example_names_every_environment_variable() -> None:
    text = EXAMPLE.read_text()
    for key in leaves(Settings):
        assert f"HUBLINK_{key.replace('.', '__').upper()}" in text


def test_configuration_table_lists_every_key_and_its_environment_name() -> None:
    table = CONFIG_PAGE.read_text().partition("<!-- config-table:start")[2].partition("-->")[2]
    table = table.partition("<!-- config-table:end -->")[0]
    rows = re.findall(r"^\| `([a-z_.]+)` \| `(HUBLINK_[A-Z_]+)` \|", table, flags=re.MULTILINE)
    assert sorted(rows) == sorted(
        (key, f"HUBLINK_{key.replace('.', '__').upper()}") for key in leaves(Settings)
    )


def run_generator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(GENERATOR), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_docs_are_what_the_generator_makes_of_the_model() -> None:
    result = run_generator("--check")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("victim", ["page", "example"])
def test_generator_check_catches_drift(tmp_path: Path, victim: str) -> None:
    page = tmp_path / "configuration.md"
    example = tmp_path / "hublink.example.toml"
    page.write_text(CONFIG_PAGE.read_text())
    example.write_text(EXAMPLE.read_text())
    if victim == "page":
        # Inside the generated table: the prose above it is the page's own.
        head, marker, table = page.read_text().partition("<!-- config-table:start")
        page.write_text(
            head + marker + table.replace("heartbeat_interval", "heartbeet_interval", 1)
        )
    else:
        example.write_text(
            example.read_text().replace("heartbeat_interval", "heartbeet_interval", 1)
        )

    result = run_generator("--check", "--page", str(page), "--example", str(example))
    assert result.returncode == 1
    assert "heartbeet" in result.stdout

    assert run_generator("--page", str(page), "--example", str(example)).returncode == 0
    assert page.read_text() == CONFIG_PAGE.read_text()
    assert example.read_text() == EXAMPLE.read_text()


def test_the_table_lives_in_the_configuration_page_not_the_readme() -> None:
    assert "config-table:start" in CONFIG_PAGE.read_text()
    assert "config-table:" not in README.read_text()


# --- helpers for the pages ---------------------------------------------------

FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """``text`` without its fenced code blocks (links in examples are not links)."""
    return FENCE.sub("", text)


def section(text: str, heading: str) -> str:
    """The body of the section whose heading line is ``heading``, up to the next one of
    the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    start = lines.index(heading) + 1
    body = []
    for line in lines[start:]:
        hashes = len(line) - len(line.lstrip("#"))
        if line.startswith("#") and hashes <= level and line[hashes : hashes + 1] == " ":
            break
        body.append(line)
    return "\n".join(body)


def table_rows(text: str) -> list[str]:
    """The first cell of every table row in ``text``, backticks removed."""
    cells = re.findall(r"^\| ((?:[^|\\]|\\.)+?) \|", text, flags=re.MULTILINE)
    return [cell.replace("`", "").strip() for cell in cells]


def slug(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading (GitHub's rule)."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = prose(path.read_text())
    return {slug(m) for m in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}


def run_unconfigured(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``hublink ARGS`` with a private state dir and no config file or HUBLINK_* of ours."""
    clean = make_child_env(
        HUBLINK_CONFIG=str(tmp_path / "absent.toml"),
        HUBLINK_STATE_DIR=str(tmp_path / "state"),
        HUBLINK_RUNTIME_DIR=str(tmp_path / "run"),
        **env,
    )
    return run_hublink(*args, env=clean)


def all_docs() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


# --- README ------------------------------------------------------------------


def test_readme_shows_make_demo_first() -> None:
    first_block = FENCE.search(README.read_text())
    assert first_block is not None
    commands = [line for line in first_block.group(0).splitlines()[1:] if line.strip()]
    assert commands[0].startswith("make demo")
    assert any(line.startswith("make test") for line in commands)


def test_readme_links_only_to_files_in_the_repository() -> None:
    text = README.read_text()
    assert "../shared" not in text
    assert "shared/design" not in text
    targets = LINK.findall(prose(text))
    for page in ("docs/protocol.md", "docs/configuration.md", "docs/operations.md"):
        assert page in targets, f"README does not link {page}"
    for target in targets:
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (ROOT / target.partition("#")[0]).resolve()
        assert path.is_relative_to(ROOT), f"README links outside the repository: {target}"
        assert path.exists(), f"README links a missing file: {target}"


@pytest.mark.parametrize("page", ["README.md", "protocol.md", "configuration.md", "operations.md"])
def test_every_relative_link_resolves(page: str) -> None:
    source = README if page == "README.md" else DOCS / page
    assert source.exists()
    for target in LINK.findall(prose(source.read_text())):
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        path = (source.parent / file_part).resolve() if file_part else source
        assert path.is_relative_to(ROOT), f"{page} links outside the repository: {target}"
        assert path.exists(), f"{page} links a missing file: {target}"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path), f"{page}: no heading for #{anchor} in {path.name}"


def test_the_docs_folder_holds_the_three_pages() -> None:
    assert {p.name for p in all_docs()} >= {"protocol.md", "configuration.md", "operations.md"}
    for page in all_docs():
        assert "../shared" not in page.read_text(), page.name


# --- operations.md -------------------------------------------------------------


def test_every_exit_code_is_documented() -> None:
    codes = {v for k, v in vars(errors).items() if k.startswith("EXIT_") and isinstance(v, int)}
    assert codes >= {0, 1, 2, 69, 77, 78}
    documented = table_rows(section(OPERATIONS.read_text(), "## Exit codes"))
    assert {str(code) for code in codes} <= set(documented)
    # And no error class exits with a code the table does not explain.
    classes = [errors.HublinkError, *_subclasses(errors.HublinkError)]
    assert {str(cls.exit_code) for cls in classes} <= set(documented)


def _subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


def test_the_codes_systemd_does_not_restart_are_the_units() -> None:
    unit = UNIT.read_text()
    prevent = re.search(r"^RestartPreventExitStatus=(.+)$", unit, flags=re.MULTILINE)
    assert prevent is not None
    kept_down = set(prevent.group(1).split())
    rows = re.findall(
        r"^\| `(\d+)` \|.*\| ([^|]*) \|$", section(OPERATIONS.read_text(), "## Exit codes"), re.M
    )
    said = {code for code, restart in rows if "not restarted" in restart}
    assert said == kept_down


def test_every_command_is_documented() -> None:
    result = run_hublink("--help")
    assert result.returncode == 0, result.stderr
    commands = re.findall(r"^ {4}([a-z][a-z-]*)\b", result.stdout, flags=re.MULTILINE)
    assert len(commands) >= 10, result.stdout
    documented = {
        row.split()[0] for row in table_rows(section(OPERATIONS.read_text(), "## Command line"))
    }
    missing = sorted(set(commands) - documented)
    assert not missing, f"commands missing from operations.md: {missing}"


def test_every_status_field_is_documented(tmp_path: Path) -> None:
    result = run_unconfigured(tmp_path, "status", "--json")
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    doc = section(OPERATIONS.read_text(), "## Status")
    fields = table_rows(doc)
    named = {name.strip() for row in fields for name in row.split(",")}
    missing = sorted(set(status) - named)
    assert not missing, f"status fields missing from the table: {missing}"
    for key, value in status.items():
        if isinstance(value, dict):
            for sub in value:
                assert f"`{sub}`" in doc, f"status field {key}.{sub} is not documented"


def test_every_doctor_check_is_documented(tmp_path: Path) -> None:
    # A configuration that does not load makes doctor list every check, skipped, at once.
    result = run_unconfigured(tmp_path, "doctor", "--json", HUBLINK_LOG__LEVEL="nope")
    assert result.returncode == 78, result.stderr
    names = [check["name"] for check in json.loads(result.stdout)["checks"]]
    assert len(names) >= 10
    documented = table_rows(section(OPERATIONS.read_text(), "## Doctor"))
    missing = sorted(set(names) - set(documented))
    assert not missing, f"doctor checks missing from operations.md: {missing}"


def test_every_state_file_is_documented() -> None:
    files = {
        value for name, value in vars(statedir).items() if name.isupper() and isinstance(value, str)
    }
    assert "credentials.toml" in files
    doc = section(OPERATIONS.read_text(), "## Files and modes")
    for name in files:
        assert f"`{name}`" in doc, f"{name} is missing from the files table"


# --- configuration.md ----------------------------------------------------------


def test_every_hook_type_is_documented() -> None:
    doc = section(CONFIG_PAGE.read_text(), "## Hooks")
    for name in hook_keys():
        assert f"`{name}`" in doc, name


# --- protocol.md ---------------------------------------------------------------


def _literal_type(model: type[BaseModel]) -> str:
    (value,) = typing.get_args(model.model_fields["type"].annotation)
    return str(value)


def _outbound_models() -> dict[str, type[BaseModel]]:
    models: list[type[BaseModel]] = [messages.Heartbeat, *typing.get_args(messages.OutboundEvent)]
    return {_literal_type(model): model for model in models}


def _inbound_models() -> dict[str, type[BaseModel]]:
    union = typing.get_args(messages.InboundMessage)[0]
    return {_literal_type(model): model for model in typing.get_args(union)}


def _frames(heading: str) -> dict[str, str]:
    """Frame type → the body of its ``#### `type``` section, under ``heading``."""
    body = section(PROTOCOL.read_text(), heading)
    parts = re.split(r"^#### `([a-z_]+)`$", body, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_protocol_lists_exactly_the_frame_types_of_the_models() -> None:
    outbound = _outbound_models()
    inbound = _inbound_models()
    assert set(messages.APP_EVENT_TYPES) <= set(outbound)
    assert set(inbound) == set(messages.INBOUND_TYPES)
    assert sorted(_frames("### Hub → Cloud frames")) == sorted(outbound)
    assert sorted(_frames("### Cloud → Hub frames")) == sorted(inbound)


def _example(body: str) -> dict[str, Any]:
    block = re.search(r"^```json\n(.*?)^```", body, flags=re.MULTILINE | re.DOTALL)
    assert block is not None, "no JSON example"
    data = json.loads(block.group(1))
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize("kind", sorted(_outbound_models()))
def test_each_hub_to_cloud_example_is_a_valid_frame(kind: str) -> None:
    example = _example(_frames("### Hub → Cloud frames")[kind])
    assert example["type"] == kind
    _outbound_models()[kind].model_validate(example)
    if kind in messages.APP_EVENT_TYPES:
        fields = {k: v for k, v in example.items() if k != "type"}
        messages.validate_event(kind, fields)


@pytest.mark.parametrize("kind", sorted(_inbound_models()))
def test_each_cloud_to_hub_example_is_a_valid_frame(kind: str) -> None:
    example = _example(_frames("### Cloud → Hub frames")[kind])
    message = messages.parse_inbound(json.dumps(example))
    assert _literal_type(type(message)) == kind


def test_every_control_route_is_documented() -> None:
    routes = re.findall(
        r"add_(get|post|put|patch|delete)\(\s*\"([^\"]+)\"", CONTROL_SOURCE.read_text()
    )
    assert len(routes) >= 3
    doc = section(PROTOCOL.read_text(), "## 4. The control API on the unix socket")
    for method, path in routes:
        assert f"`{method.upper()} {path}`" in doc, f"{method.upper()} {path} is not documented"


def test_protocol_documents_the_contracts_control_calls_and_page_routes() -> None:
    control = section(PROTOCOL.read_text(), "## 4. The control API on the unix socket")
    for call in (
        "GET /v1/status",
        "POST /v1/events",
        "POST /v1/poke",
        "POST /v1/register",
        "POST /v1/backup",
        "POST /v1/plugin-updates/{plugin_id}/install",
        "GET /v1/doctor",
        "GET /metrics",
    ):
        assert f"| `{call}` |" in control, call
    page = section(PROTOCOL.read_text(), "## 5. The local page")
    for route in ("GET /", "POST /unlock", "POST /setup", "GET /api/status"):
        assert f"| `{route}` |" in page, route
