"""What the backup service leaves behind: its last success and failure, and its next slot, in one small JSON file of
its state volume. Read by `invoke status` (through the hub's container) and by /hub/metrics (hub_ext.web.metrics)."""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# The gauges of /hub/metrics, from the status: what an alert reads (docs/howto/backups.md has a rule)
GAUGES = (
    ("hubforge_backup_last_success_timestamp_seconds", "When the last scheduled backup succeeded (0: never)"),
    ("hubforge_backup_last_failure_timestamp_seconds", "When the last scheduled backup failed (0: never)"),
    ("hubforge_backup_last_duration_seconds", "How long the last successful backup took, retention included"),
    ("hubforge_backup_last_added_bytes", "What the last successful backup added to the repository, in bytes"),
    ("hubforge_backup_next_run_timestamp_seconds", "When the backup service takes its next snapshot"),
)


def read(path: Path) -> dict[str, Any]:
    """The status, or {} when there is none yet."""
    try:
        return parse(path.read_text())
    except OSError:
        return {}


def parse(text: str) -> dict[str, Any]:
    """The status from its file's text; {} for anything else (the next run writes it again)."""
    try:
        document = json.loads(text)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def write(path: Path, document: dict[str, Any]) -> None:
    """Replaced whole (a rename), so that a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(document, indent=1, sort_keys=True))
    os.replace(partial, path)


def succeeded(
    document: dict[str, Any], when: float, summary: dict[str, Any], seconds: float, kept: int, forgotten: int
) -> dict[str, Any]:
    return {
        **document,
        "last_success": {
            "time": when,
            "snapshot": str(summary.get("snapshot_id", ""))[:8],
            "seconds": round(seconds, 1),
            "added_bytes": int(summary.get("data_added") or 0),
            "kept": kept,
            "forgotten": forgotten,
        },
    }


def failed(document: dict[str, Any], when: float, reason: str) -> dict[str, Any]:
    lines = [line.strip() for line in reason.splitlines() if line.strip()] or ["(no reason given)"]
    return {**document, "last_failure": {"time": when, "reason": lines[0][:300]}}


def gauges(document: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(name, help, value) of each gauge; 0 where nothing happened yet, so that an alert on age fires then too."""
    success, failure = document.get("last_success") or {}, document.get("last_failure") or {}
    values = (
        success.get("time", 0),
        failure.get("time", 0),
        success.get("seconds", 0),
        success.get("added_bytes", 0),
        document.get("next_run") or 0,
    )
    return [(name, text, float(value)) for (name, text), value in zip(GAUGES, values, strict=True)]


STUCK_SECONDS = 6 * 3600  # a slot's backup still running this long after it began: the service is unhealthy


def problem(document: dict[str, Any], now: float) -> str | None:
    """Why the service is unhealthy (its container's health check), or None: it has written no status since it
    started, or the backup of its last slot has been running for STUCK_SECONDS."""
    if not document.get("next_run"):
        return "the backup service has written no status yet"
    if now - document["next_run"] > STUCK_SECONDS:
        return f"the backup of the slot at {_when(document['next_run'])} UTC is still running"
    return None


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M")


def line(document: dict[str, Any]) -> str:
    """`invoke status`'s line: `every day at 02:30 UTC; last success 2026-12-07 02:30 (snapshot 1a2b3c4d, 1.9 s);
    last failure: none`."""
    success, failure = document.get("last_success"), document.get("last_failure")
    parts = [document.get("schedule", "?")]
    if success:
        parts.append(
            f"last success {_when(success['time'])} UTC (snapshot {success.get('snapshot', '?')}, "
            f"{success.get('seconds', 0):.1f} s)"
        )
    else:
        parts.append("no success yet")
    parts.append(
        f"last failure {_when(failure['time'])} UTC: {failure.get('reason', '?')}" if failure else "last failure: none"
    )
    if document.get("next_run"):
        parts.append(f"next {_when(document['next_run'])} UTC")
    return "; ".join(parts)


if __name__ == "__main__":  # the backup service's health check: `python3 -m hub_ext.backup.status`
    from hub_ext.backup.plan import STATE_MOUNT, STATUS_FILE

    trouble = problem(read(Path(STATE_MOUNT) / STATUS_FILE), time.time())
    if trouble:
        sys.exit(f"unhealthy: {trouble}")
