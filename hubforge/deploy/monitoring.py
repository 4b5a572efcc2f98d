"""The monitoring profile's files in the run folder: Prometheus' configuration (made here as data), the alert rules
and Alertmanager's configuration (copied from stack/monitoring/), and the scrape token as a file."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from hub_ext.monitoring import PROMETHEUS_PORT, SERVICE_NAME

from ..errors import HubforgeError

FOLDER = "monitoring"  # in the run folder
PROMETHEUS_UID = 65532  # the monitoring image's user
TOKEN_FILE = "metrics-token"
HUB_METRICS = "hub:8081"  # the hub's own port on the stack network (c.JupyterHub.hub_bind_url), not the proxy's
NODE_EXPORTER = "node-exporter:9100"
ALERTMANAGER = "alertmanager:9093"


def route_prefix(base_url: str) -> str:
    """Where Prometheus serves its pages and API: the path the hub's proxy gives its service."""
    return f"{base_url}services/{SERVICE_NAME}/"


def prometheus_config(base_url: str, interval: int) -> dict[str, Any]:
    """prometheus.yml, as data: the hub (with the metrics token), node-exporter, Alertmanager and itself."""
    every = f"{interval}s"
    return {
        "global": {"scrape_interval": every, "evaluation_interval": every, "scrape_timeout": f"{min(interval, 10)}s"},
        "rule_files": ["/etc/prometheus/alerts.yml", "/etc/prometheus/rules.d/*.yml"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [ALERTMANAGER]}]}]},
        "scrape_configs": [
            {
                "job_name": "jupyterhub",
                "metrics_path": f"{base_url}hub/metrics",
                "authorization": {"type": "Bearer", "credentials_file": f"/etc/prometheus/{TOKEN_FILE}"},
                "static_configs": [{"targets": [HUB_METRICS]}],
            },
            {"job_name": "node", "static_configs": [{"targets": [NODE_EXPORTER]}]},
            {"job_name": "alertmanager", "static_configs": [{"targets": [ALERTMANAGER]}]},
            {
                "job_name": "prometheus",
                "metrics_path": f"{route_prefix(base_url)}metrics",
                "static_configs": [{"targets": [f"localhost:{PROMETHEUS_PORT}"]}],
            },
        ],
    }


def write_private(path: Path, text: str, owner: int) -> None:
    """A secret file readable by the monitoring image's user only: owned by it when we are root, else (a rootless
    Docker, whose files the containers' users see as their own) by us alone."""
    path.unlink(missing_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400), "w") as handle:
        handle.write(text)
    if os.geteuid() == 0:
        os.chown(path, owner, owner)


def write_files(root: Path, run_dir: Path, base_url: str, interval: int, metrics_token: str) -> str:
    """Every file the three services read, in <run_dir>/monitoring/; returns their digest (a label on the services,
    so that Compose recreates them when one changes). Alertmanager's file and rules.d/ are the operator's: made once."""
    if not metrics_token:
        raise HubforgeError(
            "MONITORING is on but JUPYTERHUB_METRICS_TOKEN is empty in .env: Prometheus scrapes the hub with it; "
            "set it to a long random string (e.g. `openssl rand -hex 24`) (nothing was started)"
        )
    folder = run_dir / FOLDER
    (folder / "rules.d").mkdir(parents=True, exist_ok=True)
    (folder / "prometheus.yml").write_text(json.dumps(prometheus_config(base_url, interval), indent=1) + "\n")
    shutil.copyfile(root / "stack" / FOLDER / "alerts.yml", folder / "alerts.yml")
    if not (folder / "alertmanager.yml").exists():
        shutil.copyfile(root / "stack" / FOLDER / "alertmanager.yml", folder / "alertmanager.yml")
    write_private(folder / TOKEN_FILE, metrics_token, PROMETHEUS_UID)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:20]
