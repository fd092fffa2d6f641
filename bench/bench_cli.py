"""CLI cost: cold start of ``hublink --version`` and peak memory of ``hublink register``.

Run with ``.venv/bin/python bench/bench_cli.py`` (or ``make bench``). Prints:

* the median wall time of ``hublink --version`` over RUNS runs, beside
  ``python -c pass`` (the interpreter's own floor);
* the modules that ``python -X importtime`` blames most for that start-up;
* the peak RSS (``wait4`` rusage of that one child) of ``python -c pass``,
  ``hublink --version`` and a full ``hublink register`` against the
  reference Cloud on a random loopback port.

:func:`rows` (for ``make bench``) times what users type, through the
``hublink`` script: ``hublink status`` while a connected daemon runs, and
``hublink send user_sync`` to it, each beside ``python -c pass``;
``BENCH_CLI_RUNS`` (default 5) runs per round, ``BENCH_ROUNDS`` rounds.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench_idle import daemon_env, make_hub
from report import Row, interleaved

from hublink.devcloud import DEMO_EMAIL, DEMO_PASSWORD, DevCloud

RUNS = 20
PY = sys.executable


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUBLINK_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra)
    return env


def wall_times(argv: list[str], env: dict[str, str], runs: int = RUNS) -> list[float]:
    """Wall time of ``argv`` per run, after one warm-up run (page cache, .pyc files)."""
    subprocess.run(argv, env=env, check=True, capture_output=True)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return times


#: Runs one command and reports its peak RSS. A separate small process does the
#: spawning because ru_maxrss also counts the child's pre-exec copy of its
#: parent, and this bench (with the reference Cloud loaded) is not small.
_RSS_PROBE = (
    "import os, subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "_, status, usage = os.wait4(p.pid, 0)\n"
    "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)\n"
)


def peak_rss_kib(argv: list[str], env: dict[str, str], stdin: bytes = b"") -> tuple[int, int]:
    """(exit code, peak RSS in KiB) of one run of ``argv``, measured for that child alone."""
    done = subprocess.run(
        [PY, "-c", _RSS_PROBE, *argv],
        env=env,
        input=stdin,
        capture_output=True,
        check=True,
    )
    code, kib = done.stdout.split()
    return int(code), int(kib)  # ru_maxrss is in KiB on Linux


def import_offenders(env: dict[str, str], top: int = 8) -> list[tuple[int, str]]:
    """The modules with the largest cumulative import time (µs) for ``hublink --version``."""
    done = subprocess.run(
        [PY, "-X", "importtime", "-m", "hublink", "--version"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self_us, cumulative, name = line.removeprefix("import time:").split("|")
        rows.append((int(cumulative), name.rstrip()))
    return sorted(rows, reverse=True)[:top]


@contextmanager
def running_devcloud(data_dir: Path) -> Iterator[DevCloud]:
    """The reference Cloud served from its own thread and loop while the block runs."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    cloud = DevCloud(data_dir)
    asyncio.run_coroutine_threadsafe(cloud.start(), loop).result(30)
    try:
        yield cloud
    finally:
        asyncio.run_coroutine_threadsafe(cloud.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def median_ms(argv: list[str], env: dict[str, str], runs: int) -> float:
    """Median wall time of ``runs`` runs of ``argv``, in ms."""
    return statistics.median(wall_times(argv, env, runs)) * 1000


def rows() -> list[Row]:
    """``hublink status`` and ``send`` with a connected daemon, beside ``python -c pass``."""
    runs = int(os.environ.get("BENCH_CLI_RUNS", "5"))
    script = str(Path(PY).with_name("hublink"))
    data = '{"users": [{"cloud_user_id": 1, "email": "a@b.c", "last_activity": null}]}'
    with tempfile.TemporaryDirectory(prefix="hublink-bench-") as tmp:
        base = Path(tmp)
        with running_devcloud(base / "devcloud") as cloud:
            _, state_dir = make_hub(cloud, base, "hub")
            env = daemon_env(cloud.url, state_dir)
            daemon = subprocess.Popen(
                [PY, "-m", "hublink", "run"],
                env=env,
                stdin=subprocess.DEVNULL,
                stderr=(base / "daemon.log").open("ab"),
            )
            try:
                deadline = time.monotonic() + 30
                while (
                    b'"connected"'
                    not in subprocess.run(
                        [script, "status", "--json"], env=env, capture_output=True, check=False
                    ).stdout
                ):
                    if time.monotonic() > deadline:
                        raise TimeoutError("bench: the daemon never connected")
                    time.sleep(0.1)
                floor = [PY, "-c", "pass"]
                status = interleaved(
                    lambda: median_ms([script, "status"], env, runs),
                    lambda: median_ms(floor, env, runs),
                )
                send = interleaved(
                    lambda: median_ms([script, "send", "user_sync", "--data", data], env, runs),
                    lambda: median_ms(floor, env, runs),
                )
            finally:
                daemon.terminate()
                daemon.wait(30)
    return [
        Row("`hublink status`, daemon running", "ms", *status, "`python -c pass`", "<= 5x"),
        Row("`hublink send user_sync`, daemon running", "ms", *send, "`python -c pass`", "<= 5x"),
    ]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "hublink.toml").write_text("")
        env = clean_env(HUBLINK_CONFIG=str(base / "hublink.toml"))

        floor = wall_times([PY, "-c", "pass"], env)
        version = wall_times([PY, "-m", "hublink", "--version"], env)
        script = Path(PY).with_name("hublink")
        console = wall_times([str(script), "--version"], env) if script.exists() else []

        rss_floor = peak_rss_kib([PY, "-c", "pass"], env)[1]
        rss_version = peak_rss_kib([PY, "-m", "hublink", "--version"], env)[1]
        with running_devcloud(base / "devcloud") as cloud:
            register_env = clean_env(
                HUBLINK_CONFIG=str(base / "hublink.toml"),
                HUBLINK_CLOUD_URL=cloud.url,
                HUBLINK_STATE_DIR=str(base / "state"),
                HUBLINK_HUB__NAME="Bench Shop",
            )
            argv = [PY, "-m", "hublink", "register", "--email", DEMO_EMAIL, "--password-stdin"]
            started = time.perf_counter()
            code, rss_register = peak_rss_kib(argv, register_env, f"{DEMO_PASSWORD}\n".encode())
            register_s = time.perf_counter() - started
            if code != 0:
                print(f"hublink register failed with exit {code}", file=sys.stderr)
                return 1

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:7.1f} ms" if values else "      n/a"

    print(f"cold start (median of {RUNS} runs)")
    print(f"  python -c pass                 {ms(floor)}")
    print(f"  python -m hublink --version    {ms(version)}")
    print(f"  hublink --version (script)     {ms(console)}")
    print(
        "  hublink's own share            "
        f"{(statistics.median(version) - statistics.median(floor)) * 1000:7.1f} ms"
    )
    print("slowest imports of --version (cumulative)")
    for micros, name in import_offenders(env):
        print(f"  {micros / 1000:7.1f} ms  {name}")
    print("peak RSS (this child only)")
    print(f"  python -c pass                 {rss_floor / 1024:7.1f} MiB")
    print(f"  hublink --version              {rss_version / 1024:7.1f} MiB")
    print(f"  hublink register               {rss_register / 1024:7.1f} MiB  ({register_s:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
