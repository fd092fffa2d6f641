"""The configuration docs (example file, README table) match the settings model."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from hublink.config import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "hublink.example.toml"
README = ROOT / "README.md"
GENERATOR = ROOT / "scripts" / "gen_config_docs.py"


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


def test_readme_table_lists_every_key_and_its_environment_name() -> None:
    table = README.read_text().partition("<!-- config-table:start")[2].partition("-->")[2]
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


@pytest.mark.parametrize("victim", ["readme", "example"])
def test_generator_check_catches_drift(tmp_path: Path, victim: str) -> None:
    readme = tmp_path / "README.md"
    example = tmp_path / "hublink.example.toml"
    readme.write_text(README.read_text())
    example.write_text(EXAMPLE.read_text())
    target = readme if victim == "readme" else example
    target.write_text(target.read_text().replace("heartbeat_interval", "heartbeet_interval", 1))

    result = run_generator("--check", "--readme", str(readme), "--example", str(example))
    assert result.returncode == 1
    assert "heartbeet" in result.stdout

    assert run_generator("--readme", str(readme), "--example", str(example)).returncode == 0
    assert readme.read_text() == README.read_text()
    assert example.read_text() == EXAMPLE.read_text()
