"""The leak tests' machinery: a hub box whose every output is kept, and the secret finder.

    box = Box(base, umask, env)
    await box.hublink("register", "--email", E, "--password-stdin", stdin=P + "\\n")
    assert not find_leaks(box.seen, [token, password, ...])

Used by tests/contract/test_s04_files.py (a hub's whole life) and tests/test_bundle.py (the
support bundle): whatever a command printed, and whatever else a test adds to
``seen``, is checked for every planted secret and for anything shaped like a JWT.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from support.cli import run_hublink

JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.")


@dataclass
class Box:
    """One hub box under test: its folders, environment and everything seen."""

    base: Path
    umask: int
    env: dict[str, str]
    seen: dict[str, bytes] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        """Where hublink keeps its files on this box."""
        return self.base / "var" / "lib" / "hublink"

    @property
    def runtime_dir(self) -> Path:
        """Where the daemon's control socket goes on this box."""
        return self.base / "run" / "hublink"

    async def hublink(self, *args: str, stdin: str = "", code: int = 0) -> str:
        """Run one command to completion under the box's umask; its stdout."""
        result = await asyncio.to_thread(
            run_hublink,
            *args,
            env=self.env,
            stdin=stdin,
            timeout=50,
            umask=self.umask,
            cwd=self.base,
        )
        out, err = result.stdout.encode(), result.stderr.encode()
        self.seen[f"`hublink {' '.join(args)}` stdout"] = out
        self.seen[f"`hublink {' '.join(args)}` stderr"] = err
        assert result.returncode == code, f"hublink {args}: {result.returncode}\n{err.decode()}"
        return out.decode()


def find_leaks(seen: Mapping[str, bytes], secrets: Iterable[str]) -> list[str]:
    """``"where: what"`` for every planted secret, or JWT, found in what was seen."""
    found = []
    planted = [s for s in secrets if s]
    for where, data in seen.items():
        found += [f"{where}: a planted secret" for s in planted if s.encode() in data]
        if JWT.search(data):
            found.append(f"{where}: a JWT")
    return found
