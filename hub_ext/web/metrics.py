"""hub_ext's Prometheus metrics, served with JupyterHub's own at /hub/metrics (same scrape token).

They count what the audit lines record, so a dashboard shows self-service and broadcast activity
beside JupyterHub's spawn and request metrics (stack/grafana/hubforge.json).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from hub_ext.backup import status as backup_status
from hub_ext.backup.plan import STATE_MOUNT, STATUS_FILE
from hub_ext.hub.activity import Collector

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


class LabGauges:
    """Each running lab's CPU time and memory, and every user's kills for memory, as the activity collector
    (hub_ext.hub.activity) last read them from the labs' cgroups: a scrape reads what it holds, never a file or Docker.
    The families are there with no sample before the collector runs, so that a dashboard's queries are valid."""

    def __init__(self) -> None:
        self.collector: Collector | None = None

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        cpu = CounterMetricFamily(
            "hubforge_lab_cpu_seconds", "CPU time the user's running lab used since it started", labels=["user"]
        )
        memory = GaugeMetricFamily(
            "hubforge_lab_memory_bytes", "The user's running lab's memory, as docker stats shows it", labels=["user"]
        )
        limit = GaugeMetricFamily(
            "hubforge_lab_memory_limit_bytes", "The user's running lab's memory limit (absent: none)", labels=["user"]
        )
        kills = CounterMetricFamily(
            "hubforge_lab_oom_kills",
            "Processes the kernel killed in the user's labs at their memory limit, since the hub started",
            labels=["user"],
        )
        collector = self.collector
        if collector is not None:
            for user, state in sorted(collector.labs.items()):
                reading = state.reading
                if reading is None:
                    continue
                cpu.add_metric([user], reading.cpu_ns / 1e9)
                memory.add_metric([user], reading.memory_bytes)
                if reading.memory_limit is not None:
                    limit.add_metric([user], reading.memory_limit)
            for user, count in sorted(collector.oom_kills.items()):
                kills.add_metric([user], count)
        yield from (cpu, memory, limit, kills)


def watch_labs(collector: Collector) -> LabGauges:
    """Serve the labs' figures of `collector` (the hub's one activity collector) at /hub/metrics."""
    LAB_GAUGES.collector = collector
    return LAB_GAUGES


def certificate_expiry(path: Path) -> float | None:
    """The certificate's notAfter, in seconds since the epoch; None when it cannot be read (not made yet)."""
    from cryptography import x509

    try:
        loaded = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None
    return loaded.not_valid_after_utc.timestamp()


class CertificateGauge:
    """The hub's TLS certificate's expiry, read at each scrape (a renewed certificate shows at once); no sample when it
    cannot be read, so that an alert on it does not fire for a missing file."""

    def __init__(self) -> None:
        self.path: Path | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "hubforge_tls_certificate_expiry_timestamp_seconds",
            "When the hub's TLS certificate expires (its notAfter), in seconds since the epoch",
        )
        expiry = certificate_expiry(self.path) if self.path is not None else None
        if expiry is not None:
            family.add_metric([], expiry)
        yield family


def watch_certificate(path: Path) -> CertificateGauge:
    """Serve the expiry of the certificate at `path` (the hub's, SSL_CERT or the self-signed one)."""
    CERTIFICATE.path = path
    return CERTIFICATE


LAB_GAUGES = LabGauges()
CERTIFICATE = CertificateGauge()
REGISTRY.register(LAB_GAUGES)
REGISTRY.register(CERTIFICATE)
