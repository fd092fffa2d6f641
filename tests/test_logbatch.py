"""The daemon's batched log output: every line arrives, in the order it was logged."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import threading

from hublink.logbatch import BatchedLogger


class CountingStream(io.StringIO):
    """A text stream that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


async def test_the_lines_of_one_loop_step_leave_in_one_write_after_it() -> None:
    stream = CountingStream()
    logger = BatchedLogger(stream)
    for n in range(100):
        logger.info(f"line {n}")
    assert stream.getvalue() == ""  # still this step
    await asyncio.sleep(0)
    assert stream.getvalue().splitlines() == [f"line {n}" for n in range(100)]
    assert stream.writes == 1


async def test_lines_from_other_threads_keep_the_order_they_were_logged_in() -> None:
    stream = CountingStream()
    logger = BatchedLogger(stream)
    logger.info("loop 1")
    thread = threading.Thread(target=logger.error, args=("thread 2",))
    thread.start()
    thread.join()
    logger.info("loop 3")
    await asyncio.sleep(0)
    assert stream.getvalue().splitlines() == ["loop 1", "thread 2", "loop 3"]


def test_without_a_running_loop_a_line_is_written_at_once() -> None:
    stream = CountingStream()
    BatchedLogger(stream).warning("now")
    assert stream.getvalue() == "now\n"


async def test_a_broken_stream_loses_its_lines_but_never_raises() -> None:
    stream = io.StringIO()
    logger = BatchedLogger(stream)
    stream.close()
    logger.info("into the void")
    await asyncio.sleep(0)
    logger.flush()


def test_lines_logged_as_the_loop_ends_are_written_at_exit() -> None:
    # asyncio.run returns before the step that would write them.
    code = (
        "import asyncio, structlog\n"
        "from hublink import logs\n"
        "logs.configure('info', 'journal', daemon=True)\n"
        "async def main():\n"
        "    for n in range(3): structlog.get_logger().info('last words', n=n)\n"
        "asyncio.run(main())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stderr.splitlines() == [f"<6>last words n={n}" for n in range(3)]
