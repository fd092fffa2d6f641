"""contrib/prometheus: the fleet alert rules load in Prometheus and pass their own unit tests."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "contrib" / "prometheus" / "hublink-alerts.yml"
RULE_TESTS = ROOT / "contrib" / "prometheus" / "hublink-alerts.test.yml"
# Contract section 10: the series names are binding, and a typo in a rule
# would pass promtool (its test series would carry the same typo).
CONTRACT_SERIES = {
    "hublink_link_up",
    "hublink_link_reconnects_total",
    "hublink_heartbeats_sent_total",
    "hublink_frames_received_total",
    "hublink_events_sent_total",
    "hublink_outbox_pending",
    "hublink_outbox_oldest_age_seconds",
    "hublink_tunnel_up",
    "hublink_tunnel_restarts_total",
    "hublink_backups_total",
    "hublink_backup_duration_seconds",
    "hublink_last_backup_timestamp_seconds",
    "hublink_hook_runs_total",
}
ALERTS = {
    "HublinkLinkDown",
    "HublinkOutboxStale",
    "HublinkTunnelDown",
    "HublinkTunnelRestartLoop",
    "HublinkBackupOverdue",
    "HublinkNeverBackedUp",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    if not found:
        pytest.fail("promtool is not installed; run `make tools` (Debian's prometheus package)")
    return subprocess.run(
        [found, *args],
        cwd=RULES.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_prometheus_accepts_the_rules() -> None:
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_every_alert_fires_and_stays_silent_as_its_unit_tests_say() -> None:
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    assert set(re.findall(r"- alert: (\w+)", RULES.read_text())) == ALERTS
    cases = RULE_TESTS.read_text().split("- eval_time:")[1:]
    silent = {re.search(r"alertname: (\w+)", case)[1] for case in cases if "exp_alerts: []" in case}
    firing = {re.search(r"alertname: (\w+)", case)[1] for case in cases if "exp_labels" in case}
    assert silent == ALERTS
    assert firing == ALERTS


def test_rules_use_only_the_contract_series() -> None:
    used = set(re.findall(r"\bhublink_\w+", RULES.read_text()))
    assert used <= CONTRACT_SERIES, used - CONTRACT_SERIES
