"""hub_ext's Prometheus metrics, served with JupyterHub's own at /hub/metrics (same scrape token).

They count what the audit lines record, so a dashboard shows self-service and broadcast activity
beside JupyterHub's spawn and request metrics (stack/grafana/hubforge.json).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

from hub_ext.backup import status as backup_status
from hub_ext.backup.plan import STATE_MOUNT, STATUS_FILE

RESTARTS = Counter(
    "hubforge_server_restarts",
    "In-place restarts of users' servers, by result (restarted, failed, refused)",
    ["result"],
)
RESTART_SECONDS = Histogram(
    "hubforge_server_restart_duration_seconds",
    "Time from the restart request until the lab answers again",
    buckets=(0.5, 1, 2, 3, 5, 10, 20, 30, 60, 90),
)
VOLUME_RESETS = Counter(
    "hubforge_volume_resets",
    "Volumes reset by their owners or admins, by volume kind and result (removed, not found, failed)",
    ["volume", "result"],
)
BROADCAST_DELIVERIES = Counter(
    "hubforge_broadcast_deliveries",
    "Broadcast notifications posted to labs, by result (delivered, failed)",
    ["result"],
)


def count_restart(result: dict | None) -> None:
    """A restart's outcome; None when it was refused before it began (not running, or busy)."""
    if result is None:
        RESTARTS.labels(result="refused").inc()
        return
    RESTARTS.labels(result=result["status"]).inc()
    if result["status"] == "restarted":
        RESTART_SECONDS.observe(result["seconds"])


def count_volume_resets(results: dict[str, dict]) -> None:
    for kind, outcome in results.items():
        VOLUME_RESETS.labels(volume=kind, result=outcome["result"]).inc()


def count_deliveries(results: list[dict]) -> None:
    for outcome in results:
        BROADCAST_DELIVERIES.labels(result=outcome["result"]).inc()


class BackupGauges:
    """The backup service's last success and failure (hub_ext.backup.status), read from its status file at each
    scrape: the service writes it in another container, so there is nothing to count here."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, text, value in backup_status.gauges(backup_status.read(self.path)):
            yield GaugeMetricFamily(name, text, value=value)


def watch_backups(path: Path = Path(STATE_MOUNT) / STATUS_FILE) -> BackupGauges:
    """Serve the backup gauges (BACKUP_SCHEDULE on: the service's volume is mounted read-only at STATE_MOUNT)."""
    global _backup_gauges
    if _backup_gauges is None:  # once per process, however often the configuration is loaded
        _backup_gauges = BackupGauges(path)
        REGISTRY.register(_backup_gauges)
    _backup_gauges.path = path
    return _backup_gauges


_backup_gauges: BackupGauges | None = None
