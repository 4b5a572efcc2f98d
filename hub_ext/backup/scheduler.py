"""The stack's `backup` service (BACKUP_SCHEDULE): a snapshot at each slot, then the retention, and the outcome in its
status file. Runs in the hub's image with the Docker socket; restic itself runs in a one-shot container of the backup
image, as for `invoke backup`. A failure is recorded with its reason and tried again at the next slot: the service
itself never stops for one."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hub_ext.naming import PROJECT_LABEL, ROLE_LABEL
from hub_ext.settings.schedule import Schedule, parse_schedule

from . import plan, status
from .gateway import HubDocker
from .job import ResticJob

log = logging.getLogger("hubforge-backup")
ENVIRONMENT = "HUBFORGE_BACKUP"  # the service's settings, as JSON, rendered by `invoke up` (hubforge.deploy.engine)
STATUS = Path(plan.STATE_MOUNT) / plan.STATUS_FILE
STAGING = Path(plan.STATE_MOUNT) / "manifest"


@dataclass(frozen=True)
class Service:
    """What `invoke up` rendered: the project, the backup image, the schedule, the retention, and the host's paths
    of the repository, its password file, the run folder and the state volume's name."""

    project: str
    engine: str
    image: str
    version: str
    repository: str
    password_file: str
    run_dir: str
    state_volume: str
    schedule: Schedule
    keep: tuple[int, int, int]  # daily, weekly, monthly

    @classmethod
    def from_json(cls, text: str) -> Service:
        given: dict[str, Any] = json.loads(text)
        keep = given["keep"]
        return cls(
            given["project"],
            given["engine"],
            given["image"],
            given["version"],
            given["repository"],
            given["password_file"],
            given["run_dir"],
            given["state_volume"],
            parse_schedule("BACKUP_SCHEDULE", given["schedule"]),
            (int(keep["daily"]), int(keep["weekly"]), int(keep["monthly"])),
        )


def hub_of(docker: HubDocker, project: str) -> dict | None:
    running = docker.containers({PROJECT_LABEL: project, ROLE_LABEL: "hub"}, all=False)
    return running[0] if running else None


def job_for(service: Service, docker: HubDocker, passed: dict[str, str]) -> tuple[ResticJob, str]:
    """The restic job, and the host's path of the manifest's staging folder (both in the state volume)."""
    mountpoint = (docker.volume(service.state_volume) or {}).get("Mountpoint")
    if not mountpoint:
        raise RuntimeError(f"the backup service's volume {service.state_volume} is gone: run `invoke up` again")
    repo = plan.Repository(service.repository, Path(service.password_file), False)
    job = ResticJob(
        docker,
        service.project,
        service.engine,
        service.image,
        repo,
        f"{mountpoint}/cache",
        service.run_dir,
        passed,
        lambda: hub_of(docker, service.project),
    )
    return job, f"{mountpoint}/{STAGING.name}"


def run_once(service: Service, docker: HubDocker, document: dict[str, Any]) -> dict[str, Any]:
    """One scheduled backup and its retention; the status with its outcome."""
    started = time.monotonic()
    try:
        job, staging_host = job_for(service, docker, dict(os.environ))
        if not job.initialised():
            job.restic(["init"])
            log.info("made a restic repository at %s", service.repository)
        summary = job.snapshot(service.version, "", STAGING, staging_host, log.info)
        log.info(plan.summary_line(summary))
        kept, forgotten = job.forget(*service.keep)
        log.info("retention: %d snapshots kept, %d forgotten", kept, forgotten)
    except Exception as exc:  # noqa: BLE001 -- any failure is recorded and tried again at the next slot, never a crash
        log.warning("backup failed: %s", exc)
        return status.failed(document, time.time(), f"{exc}" or type(exc).__name__)
    return status.succeeded(document, time.time(), summary, time.monotonic() - started, kept, forgotten)


def serve(service: Service, docker: HubDocker) -> None:
    document = status.read(STATUS)
    while True:
        due = service.schedule.next_run(datetime.now(timezone.utc))
        document = {**document, "schedule": service.schedule.describe(), "next_run": due.timestamp()}
        status.write(STATUS, document)
        log.info("next backup at %s UTC", due.strftime("%Y-%m-%d %H:%M:%S"))
        while (left := due.timestamp() - time.time()) > 0:
            time.sleep(min(left, 60))  # short naps: a suspended host wakes to the right slot
        document = run_once(service, docker, document)
        status.write(STATUS, document)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="hubforge-backup: %(message)s", stream=sys.stdout)
    # `docker compose down` sends SIGTERM: exit at once; a running restic container is removed on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        service = Service.from_json(os.environ[ENVIRONMENT])
    except (KeyError, ValueError, TypeError) as exc:
        sys.exit(f"hubforge-backup: {ENVIRONMENT} is missing or not valid ({exc}); start the stack with `invoke up`")
    if not service.schedule.on:
        sys.exit("hubforge-backup: BACKUP_SCHEDULE is off; this service runs only with a schedule")
    serve(service, HubDocker())


if __name__ == "__main__":
    main()
