"""Metrics (contract section 10): the scrape's size and time, and what metrics cost an idle daemon.

Two daemons connect to the reference Cloud (in this process) at once, with a 30 s
heartbeat and the tunnel off: one with ``metrics.listen`` set and scraped over TCP
every ``BENCH_SCRAPE_EVERY`` seconds (default 5, a busy Prometheus), one without
(no TCP listener, never scraped). Their RSS and CPU are sampled over the same
window (``BENCH_IDLE_SECONDS``, default 20). Then ``BENCH_SCRAPES`` (default 50)
back-to-back scrapes of ``/metrics`` are timed beside ``GET /v1/status`` on the
same daemon. The last scrape is kept as the sample that BENCHMARKS.md shows, and
the shipped alert rules are run through ``promtool check rules`` and
``promtool test rules``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from bench_idle import make_hub, proc_cpu, proc_rss, start_daemon, wait_for
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client import generate_latest as bare_exposition
from report import ROOT, Row, rounds

from hublink.control import request
from hublink.devcloud import DevCloud
from hublink.devcloud.ports import free_port

RULES = ROOT / "contrib" / "prometheus"
_sample: list[str] = []


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def _answers(url: str) -> bool:
    """Whether ``url`` answers (the daemon listens for scrapes once READY, after its link)."""
    try:
        _get(url)
    except OSError:
        return False
    return True


def _timed(call: object) -> float:
    started = time.perf_counter()
    call()  # type: ignore[operator]
    return 1000 * (time.perf_counter() - started)


async def measure(seconds: float, every: float, scrapes: int) -> dict[str, float]:
    """One round: both daemons' RSS and CPU, then the scrape and status times."""
    with tempfile.TemporaryDirectory(prefix="hublink-bench-") as tmp:
        base = Path(tmp)
        cloud = DevCloud(base / "cloud")
        await cloud.start()
        procs: list[asyncio.subprocess.Process] = []
        try:
            on_creds, on_dir = make_hub(cloud, base, "on")
            off_creds, off_dir = make_hub(cloud, base, "off")
            listen = f"127.0.0.1:{free_port()}"
            url = f"http://{listen}/metrics"
            on = await start_daemon(cloud.url, on_dir, HUBLINK_METRICS__LISTEN=listen)
            off = await start_daemon(cloud.url, off_dir)
            procs += [on, off]
            await wait_for(
                lambda: cloud.heartbeats(on_creds.hub_id) and cloud.heartbeats(off_creds.hub_id)
            )
            # The first scrape pays for its imports.
            await wait_for(lambda: _answers(url))
            await asyncio.sleep(min(5.0, seconds / 4))
            cpu = {p.pid: proc_cpu(p.pid) for p in procs}
            began = time.monotonic()
            next_scrape = began
            while (now := time.monotonic()) - began < seconds:
                if now >= next_scrape:
                    await asyncio.to_thread(_get, url)
                    next_scrape += every
                await asyncio.sleep(min(1.0, max(0.0, next_scrape - time.monotonic())))
            elapsed = time.monotonic() - began
            figures = {
                "on_cpu": 100 * (proc_cpu(on.pid) - cpu[on.pid]) / elapsed,
                "off_cpu": 100 * (proc_cpu(off.pid) - cpu[off.pid]) / elapsed,
                "on_rss": proc_rss(on.pid) / 2**20,
                "off_rss": proc_rss(off.pid) / 2**20,
            }
            sock = on_dir.parent / "run" / "control.sock"
            # Wall time per request (medians), and the daemon's CPU per request (means):
            # each kind in a loop of its own, so /proc's CPU ticks add up to something.
            before = proc_cpu(on.pid)
            status_ms = [
                await asyncio.to_thread(_timed, lambda: request(sock, "GET", "/v1/status"))
                for _ in range(scrapes)
            ]
            between = proc_cpu(on.pid)
            scrape_ms = [await asyncio.to_thread(_timed, lambda: _get(url)) for _ in range(scrapes)]
            after = proc_cpu(on.pid)
            body = await asyncio.to_thread(_get, url)
            _sample[:] = [body.decode()]
            figures |= {
                "scrape_ms": statistics.median(scrape_ms),
                "status_ms": statistics.median(status_ms),
                "scrape_cpu_ms": 1000 * (after - between) / scrapes,
                "status_cpu_ms": 1000 * (between - before) / scrapes,
                "size": float(len(body)),
            }
        finally:
            for p in procs:
                if p.returncode is None:
                    p.terminate()
                    await p.wait()
            await cloud.stop()
    return figures


def bare_size() -> float:
    """The exposition of prometheus_client's own collectors alone (process, platform, gc)."""
    registry = CollectorRegistry()
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)
    return float(len(bare_exposition(registry)))


def rows() -> list[Row]:
    """Scrape time and size, and idle RSS/CPU with metrics on vs off, from the same runs."""
    seconds = float(os.environ.get("BENCH_IDLE_SECONDS", "20"))
    every = float(os.environ.get("BENCH_SCRAPE_EVERY", "5"))
    scrapes = int(os.environ.get("BENCH_SCRAPES", "50"))
    runs = [asyncio.run(measure(seconds, every, scrapes)) for _ in range(rounds())]

    def col(key: str) -> list[float]:
        return [run[key] for run in runs]

    on = f"metrics.listen set, scraped every {every:g} s ({seconds:.0f} s)"
    return [
        Row(
            "`GET /metrics` over TCP, connected daemon",
            "ms",
            col("scrape_ms"),
            col("status_ms"),
            "`GET /v1/status` on the control socket",
            "< 50 ms",
        ),
        Row(
            "daemon CPU per `GET /metrics`",
            "ms",
            col("scrape_cpu_ms"),
            col("status_cpu_ms"),
            "per `GET /v1/status`",
        ),
        Row(
            "`/metrics` size",
            "bytes",
            col("size"),
            [bare_size()] * len(runs),
            "prometheus_client's process/platform/gc collectors alone",
        ),
        Row(f"idle RSS, {on}", "MiB", col("on_rss"), col("off_rss"), "metrics.listen unset"),
        Row(f"idle CPU, {on}", "%", col("on_cpu"), col("off_cpu"), "metrics.listen unset"),
    ]


def promtool(*args: str) -> str:
    """``promtool ARGS`` in contrib/prometheus: its output, or why it could not run."""
    found = shutil.which("promtool")
    if found is None:
        return "promtool is not installed (`make tools` installs it)"
    done = subprocess.run(
        [found, *args], cwd=RULES, capture_output=True, text=True, timeout=120, check=False
    )
    return (done.stdout + done.stderr).strip() + f"\n(exit status {done.returncode})"


def markdown() -> str:
    """BENCHMARKS.md's sections after the table: the sample scrape and the alert rules' tests."""
    sample = _sample[0] if _sample else "(no scrape was taken)"
    return "\n".join(
        [
            "## A sample of `GET /metrics`",
            "",
            f"The last scrape of the run above ({len(sample.encode()):,} bytes): a connected "
            "daemon, tunnel off, no backup yet.",
            "",
            "```",
            sample.rstrip(),
            "```",
            "",
            "## The alert rules (`contrib/prometheus`)",
            "",
            "```",
            "$ promtool check rules hublink-alerts.yml",
            promtool("check", "rules", "hublink-alerts.yml"),
            "$ promtool test rules hublink-alerts.test.yml",
            promtool("test", "rules", "hublink-alerts.test.yml"),
            "```",
            "",
        ]
    )


if __name__ == "__main__":
    for row in rows():
        print(" | ".join(row.cells()))
    print(markdown())
