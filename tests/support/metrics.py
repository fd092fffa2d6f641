"""Reading a daemon's ``GET /metrics`` the way Prometheus does: with prometheus_client's parser."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from hublink.control import metrics_now

#: Contract section 10: every series, its type, and its labels (besides ``le``).
CONTRACT_SERIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "hublink_link_up": ("gauge", ()),
    "hublink_link_reconnects": ("counter", ()),
    "hublink_heartbeats_sent": ("counter", ()),
    "hublink_frames_received": ("counter", ("type",)),
    "hublink_events_sent": ("counter", ("type",)),
    "hublink_outbox_pending": ("gauge", ()),
    "hublink_outbox_oldest_age_seconds": ("gauge", ()),
    "hublink_tunnel_up": ("gauge", ()),
    "hublink_tunnel_restarts": ("counter", ()),
    "hublink_backups": ("counter", ("result",)),
    "hublink_backup_duration_seconds": ("histogram", ()),
    "hublink_last_backup_timestamp_seconds": ("gauge", ()),
    "hublink_hook_runs": ("counter", ("type", "result")),
}


@dataclass(frozen=True)
class Scrape:
    """One parsed scrape: family types, and every sample by name and labels."""

    text: str
    types: dict[str, str]
    labels: dict[str, set[tuple[str, ...]]]
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float | None:
        """The sample ``name{labels}``, or None when the scrape has none."""
        return self.samples.get((name, frozenset(labels.items())))


def parse(text: str) -> Scrape:
    """Parse Prometheus text format (raises ValueError on malformed text)."""
    types: dict[str, str] = {}
    labels: dict[str, set[tuple[str, ...]]] = {}
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
            names = tuple(sorted(k for k in sample.labels if k != "le"))
            labels.setdefault(family.name, set()).add(names)
    return Scrape(text, types, labels, samples)


def scrape_socket(socket: Path) -> Scrape | None:
    """A scrape of the daemon's control socket, or None when no daemon answers."""
    text = metrics_now(socket)
    return parse(text) if text is not None else None


def scrape_tcp(listen: str) -> Scrape:
    """A scrape of ``http://{listen}/metrics``."""
    with urllib.request.urlopen(f"http://{listen}/metrics", timeout=5) as response:
        return parse(response.read().decode())
