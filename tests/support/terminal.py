"""A real pseudo-terminal for the CLI tests: prompts, echo, Ctrl-D, as a person at a keyboard."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import termios
import time

from support.cli import HUBLINK_COMMAND
from support.timing import scaled

#: What Ctrl-D sends: end of input at the start of a line.
CTRL_D = "\x04"


class Terminal:
    """The primary side of a pseudo-terminal that a child uses as its controlling tty."""

    def __init__(self) -> None:
        self.primary, self.secondary = pty.openpty()
        self.output = ""

    def become_controlling_tty(self) -> None:
        """In the child: a new session whose controlling terminal is the pty (for getpass)."""
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    async def read_until(self, text: str, timeout: float = 20) -> None:
        """Collect output until ``text`` shows up (or the child closes the terminal)."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + scaled(timeout)
        while text not in self.output:
            left = deadline - time.monotonic()
            assert left > 0, f"waited for {text!r}; got {self.output!r}"
            try:
                chunk = await asyncio.wait_for(
                    loop.run_in_executor(None, os.read, self.primary, 4096), left
                )
            except OSError:  # EIO: the child closed its side
                return
            if not chunk:
                return
            self.output += chunk.decode(errors="replace")

    def type(self, line: str) -> None:
        """Type ``line`` and Enter."""
        os.write(self.primary, (line + "\n").encode())

    async def finish(self, proc: asyncio.subprocess.Process, timeout: float = 20) -> int:
        """Wait for ``proc`` (killed after ``timeout``), close the terminal; its exit code."""
        try:
            return await asyncio.wait_for(proc.wait(), scaled(timeout))
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            os.close(self.primary)


async def spawn_on(tty: Terminal, *args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    """``hublink ARGS`` with the pty as its stdin, stdout, stderr and controlling terminal."""
    proc = await asyncio.create_subprocess_exec(
        *HUBLINK_COMMAND,
        *args,
        stdin=tty.secondary,
        stdout=tty.secondary,
        stderr=tty.secondary,
        env=env,
        preexec_fn=tty.become_controlling_tty,
    )
    os.close(tty.secondary)
    return proc
