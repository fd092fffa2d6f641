"""`make dist` makes an sdist and a wheel; operations.md's install steps work from them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from hublink import __version__

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [
    "Makefile",
    "pyproject.toml",
    "MANIFEST.in",
    "README.md",
    "hublink.example.toml",
    "src",
    "systemd",
    "scripts",
    "contrib",
]
SYSTEMD_FILES = ["hublink.service", "hublink.sysusers", "hublink.tmpfiles"]
# One file of each kind the local page ships, put into the copy of the tree
# that is built: the wheel must carry whatever lands in these folders later,
# without anyone remembering to list it.
PAGE_FILES = [
    "web/templates/_packaging_probe.html",
    "web/static/_packaging_probe.css",
    "web/locale/de/LC_MESSAGES/_packaging_probe.mo",
]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and wheel, built from a copy of the source tree (the tree stays untouched)."""
    source = tmp_path_factory.mktemp("source")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in SHIPPED:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    for name in PAGE_FILES:
        probe = source / "src" / "hublink" / name
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_text(f"{name}\n")
    # `make dist`, as the install steps say, with this checkout's venv (which
    # has `build`); -o: never remake that venv from the copy's pyproject.toml.
    venv = Path(sys.prefix)
    subprocess.run(
        ["make", "-C", str(source), "-o", str(venv / ".installed"), "dist", f"VENV={venv}"],
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    return source / "dist"


def only(folder: Path, pattern: str) -> Path:
    (found,) = folder.glob(pattern)
    return found


def test_sdist_carries_the_docs_and_the_systemd_files(dist: Path) -> None:
    sdist = only(dist, f"hublink-{__version__}.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.partition("/")[2] for name in archive.getnames()}
    expected = {
        "README.md",
        "hublink.example.toml",
        "src/hublink/__init__.py",
        "src/hublink/devcloud/__init__.py",
        "contrib/prometheus/hublink-alerts.yml",
        "contrib/prometheus/hublink-alerts.test.yml",
        *(f"systemd/{name}" for name in SYSTEMD_FILES),
        *(f"src/hublink/{name}" for name in PAGE_FILES),
    }
    assert expected <= names


def test_wheel_carries_the_package_its_page_files_and_the_systemd_files(dist: Path) -> None:
    wheel = only(dist, f"hublink-{__version__}-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    data = f"hublink-{__version__}.data/data/share/hublink"
    expected = {
        "hublink/__init__.py",
        "hublink/cli/__init__.py",
        "hublink/devcloud/__init__.py",
        f"{data}/hublink.example.toml",
        *(f"{data}/systemd/{name}" for name in SYSTEMD_FILES),
        *(f"hublink/{name}" for name in PAGE_FILES),
    }
    assert expected <= names


def documented_install(dist: Path, box: Path) -> list[str]:
    """operations.md's commands that install the wheel on a box, moved into ``box``.

    The wheel copied to ``/root/`` is found in ``dist``; ``/opt/hublink`` and
    ``/usr/bin`` become folders of ``box``; ``python3`` is the Python running the tests.
    """
    page = (ROOT / "docs" / "operations.md").read_text()
    block = re.search(r"<!-- install-from-wheel.*?-->\s*```\n(.*?)```", page, flags=re.S)
    assert block is not None, "operations.md lost its install-from-wheel block"
    (box / "usr-bin").mkdir(parents=True)
    lines = []
    for line in block.group(1).splitlines():
        command = line.partition("  #")[0].strip()
        command = re.sub(r"^python3 ", f"{sys.executable} ", command)
        command = command.replace("/opt/hublink", str(box / "opt-hublink"))
        command = command.replace("/root/", f"{dist}/").replace("/usr/bin/", f"{box}/usr-bin/")
        lines.append(command)
    return lines


def test_the_documented_install_works_from_make_dist(dist: Path, tmp_path: Path) -> None:
    box = tmp_path / "box"
    started = time.monotonic()
    # With its dependencies, from pip's cache or the index, as an operator would.
    for command in documented_install(dist, box):
        done = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=200, check=False
        )
        assert done.returncode == 0, f"{command}\n{done.stderr}"
    installed = time.monotonic() - started
    venv = box / "opt-hublink"
    assert (box / "usr-bin" / "hublink").resolve() == (venv / "bin" / "hublink").resolve()

    result = subprocess.run(
        [box / "usr-bin" / "hublink", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == f"hublink {__version__}"
    share = venv / "share" / "hublink"
    assert (share / "hublink.example.toml").read_text() == (
        ROOT / "hublink.example.toml"
    ).read_text()
    for name in SYSTEMD_FILES:
        assert (share / "systemd" / name).read_text() == (ROOT / "systemd" / name).read_text()
    # The wheel's code is what runs, not the source tree's.
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import hublink; print(hublink.__file__)"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert where.stdout.startswith(str(venv))
    # The local page finds its files through the installed package.
    page = subprocess.run(
        [
            venv / "bin" / "python",
            "-c",
            "import sys; from importlib.resources import files;"
            " sys.stdout.write(''.join((files('hublink') / n).read_text() for n in sys.argv[1:]))",
            *PAGE_FILES,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert page.stdout.splitlines() == PAGE_FILES
    print(f"venv + install of the wheel with its dependencies: {installed:.1f} s")
