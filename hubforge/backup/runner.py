"""Backups and restores of a compose stack: restic in one short-lived `backup` container, through the Docker
gateway, with the stack's volumes and run folder mounted under plan.ROOT."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub_ext.backup.job import ResticJob
from hub_ext.naming import USER_LABEL

from ..deploy.engine import Stack
from ..errors import HubforgeError
from . import plan
from .plan import Repository, Snapshot, Volume

log = logging.getLogger(__name__)
STOP_TIMEOUT = 150


class Job(ResticJob):
    """The shared restic job, whose refusals are hubforge's: `invoke` prints them as one line."""

    failure = HubforgeError


@dataclass
class Backups:
    """One project's backups: its stack (engine, run folder, Docker gateway), the backup image and the repository."""

    stack: Stack
    image: str
    repo: Repository
    cache_dir: Path  # restic's cache for this project, on the host
    passed: Mapping[str, str]  # restic's credential variables from the environment of `invoke` (remote repositories)
    say: Callable[[str], None]

    @property
    def project(self) -> str:
        return self.stack.options.project

    @property
    def docker(self):
        return self.stack.docker

    # -- one restic run -------------------------------------------------------------------------------------------
    @property
    def job(self) -> ResticJob:
        """restic as the backup service runs it too (hub_ext.backup.job), through this stack's gateway."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)  # else Docker makes the missing bind source, owned by root
        return Job(
            self.docker,
            self.project,
            self.stack.options.engine,
            self.image,
            dataclasses.replace(self.repo, password_file=self.repo.password_file.resolve()),  # as Docker binds it
            str(self.cache_dir),
            str(self.stack.options.run_dir),
            self.passed,
            self.stack.hub_container,
            **self.job_extras(),
        )

    def job_extras(self) -> dict[str, Any]:
        """More of the manager's job (its run tags and node, on the swarm engine)."""
        return {}

    def restic(self, argv: list[str], *args, **kwargs) -> str:
        """restic's stdout (ResticJob.restic: binds, writing, on_line); a failure is one line (restic_problem)."""
        return self.job.restic(argv, *args, **kwargs)

    # -- backup ---------------------------------------------------------------------------------------------------
    def ensure_repository(self) -> None:
        """Make the password file (at its default place only) and the repository, the first time."""
        try:
            self.make_repository()
        except PermissionError as exc:
            raise HubforgeError(
                f"cannot write {exc.filename} ({exc.strerror}): set BACKUP_REPOSITORY and BACKUP_PASSWORD_FILE to "
                "places you may write, or run as root"
            ) from None

    def make_repository(self) -> None:
        if not self.repo.password_file.is_file():
            if not self.repo.password_is_default:
                raise HubforgeError(
                    f"no password file at {self.repo.password_file} (BACKUP_PASSWORD_FILE); create it, or unset "
                    "BACKUP_PASSWORD_FILE to have one made"
                )
            plan.write_password(self.repo.password_file)
            self.say(
                f"[bold]made the repository's password[/] in {self.repo.password_file}: keep a copy somewhere else, "
                "without it no backup can be read"
            )
        if self.repo.local:
            Path(self.repo.location).mkdir(parents=True, exist_ok=True, mode=0o700)
            if (Path(self.repo.location) / "config").is_file():
                return
        elif self.job.initialised():
            return
        self.restic(["init"])
        self.say(f"made a restic repository at {self.repo.shown}")

    def backup(
        self,
        version: str,
        commit: str,
        staging: Path,
        status: Callable[[str], None],
        extra_tags: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """One snapshot of the whole stack while it runs; returns restic's summary."""
        self.check_stack()
        self.ensure_repository()
        return self.job.snapshot(version, commit, staging, str(staging), status, extra_tags)

    def check_stack(self) -> None:
        run_dir = self.stack.options.run_dir
        if not (run_dir / ".env").exists():
            raise HubforgeError(f"no stack {self.project} here ({run_dir}): start it with `invoke up` first")

    # -- reading the repository -----------------------------------------------------------------------------------
    def check_repository(self) -> None:
        problem = plan.missing_repository(self.repo)
        if problem:
            raise HubforgeError(problem)

    def snapshots(self) -> list[Snapshot]:
        self.check_repository()
        return plan.parse_snapshots(self.restic(plan.list_argv(self.project)))

    def manifest(self, snapshot: Snapshot) -> dict[str, Any]:
        document = plan.parse_manifest(self.restic(plan.dump_argv(snapshot.id)))
        if document.get("project") != self.project:
            raise HubforgeError(
                f"snapshot {snapshot.short_id} is of project {document.get('project')}; restore it with --project "
                f"{document.get('project')}"
            )
        return document

    # -- restore --------------------------------------------------------------------------------------------------
    def running(self) -> list[str]:
        """What of the stack runs: the hub, the guard, labs."""
        hub = self.stack.hub_container()
        running = ["hub"] if hub and hub.get("State") == "running" else []
        return running + [f"the lab of {user}" for user in self.stack.lab_users()]

    def recreate(self, volumes: list[Volume]) -> None:
        """Each volume made again, empty, with its labels (ResticJob.recreate); quota'd ones' files removed."""
        quota_files = self.job.recreate(volumes)
        if quota_files:
            self.stack.remove_quota_files(quota_files)

    def put_back(
        self, snapshot: Snapshot, volumes: list[Volume], settings: bool, status: Callable[[str], None]
    ) -> None:
        if settings:
            self.stack.options.run_dir.mkdir(parents=True, exist_ok=True)
        status(
            f"restoring snapshot {snapshot.short_id}: {len(volumes)} volumes"
            + (" and the settings" if settings else "")
        )
        self.job.put_back(snapshot.id, volumes, str(self.stack.options.run_dir) if settings else None)

    def restore_stack(self, wanted: str, force: bool, status: Callable[[str], None]) -> tuple[Snapshot, int]:
        """The whole stack from a snapshot: every volume and the run folder's settings. Refuses a running stack unless
        `force` (then stops it first, volumes kept until they are replaced)."""
        snapshot = plan.pick_snapshot(self.snapshots(), wanted, self.project)
        return snapshot, self.restore_here(snapshot, force, status)

    def restore_here(self, snapshot: Snapshot, force: bool, status: Callable[[str], None]) -> int:
        """This host's part of a whole restore: its volumes and the settings; returns how many volumes."""
        document = self.manifest(snapshot)
        running = self.running()
        if running and not force:
            raise HubforgeError(
                f"stack {self.project} is running ({', '.join(running)}): a restore replaces its data; stop it with "
                "`invoke down`, or pass --force to have the restore stop it"
            )
        if running:
            status(f"stopping stack {self.project}")
            self.stack.down(False, False)
        volumes = document["volumes"]
        status(f"making {len(volumes)} volumes again")
        self.recreate(volumes)
        self.put_back(snapshot, volumes, True, status)
        return len(volumes)

    def restore_user(
        self, wanted: str, user: str, kind: str | None, status: Callable[[str], None]
    ) -> tuple[Snapshot, list[Volume]]:
        """One user's volumes from a snapshot, while everyone else keeps working: their lab is stopped first (through
        the hub, as an admin stops it), then only their volumes are replaced."""
        snapshot = plan.pick_snapshot(self.snapshots(), wanted, self.project)
        volumes = plan.user_volumes(self.manifest(snapshot)["volumes"], user, kind)
        self.stop_lab(user, status)
        status(f"making {len(volumes)} volumes of {user} again")
        self.recreate(volumes)
        self.put_back(snapshot, volumes, False, status)
        return snapshot, volumes

    def hub_data_of(self, wanted: str) -> tuple[Snapshot, list[Volume]]:
        """The snapshot `wanted` and the hub's data volume in it (its database, its keys): what an upgrade's rollback
        puts back, found before anything stops."""
        snapshot = plan.pick_snapshot(self.snapshots(), wanted, self.project)
        volumes = [v for v in self.manifest(snapshot)["volumes"] if v.kind == plan.HUB_DATA_KIND]
        if not volumes:
            raise HubforgeError(f"snapshot {snapshot.short_id} holds no hub database")
        return snapshot, volumes

    def stop_lab(self, user: str, status: Callable[[str], None]) -> None:
        """The user's lab stopped: through the hub's API when it runs (so it knows), and the container gone."""
        hub = self.stack.hub_container()
        if hub and hub.get("State") == "running" and self.lab_of(user):
            status(f"stopping the lab of {user}")
            code, out = self.docker.exec_output(hub["Id"], ["python3", "-m", "hub_ext.hub.admincli", "stop", user])
            if code != 0:
                raise HubforgeError(f"the hub did not stop the lab of {user}: {out.strip()[-300:]} (nothing restored)")
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.lab_of(user):
            if time.monotonic() > deadline or not (hub and hub.get("State") == "running"):
                for lab in self.lab_of(user):  # no hub to ask, or it did not remove it: the lab goes
                    self.remove_lab(lab)
                break
            time.sleep(0.5)

    def lab_of(self, user: str) -> list[dict]:
        """The user's lab: its container here (a service on the swarm engine, SwarmBackups)."""
        return [c for c in self.stack.lab_containers() if c.get("Labels", {}).get(USER_LABEL) == user]

    def remove_lab(self, lab: dict) -> None:
        self.docker.remove_container(lab["Id"])


def run_rows(runs: list[plan.Run]) -> list[tuple[str, str, str, str, str]]:
    """id, time, version, engine and nodes of each backup, newest first: what `invoke backup --list` shows (one row
    per run: on the compose engine a run is one snapshot, and its id the snapshot's)."""
    return [
        (r.id, r.time[:19].replace("T", " "), r.tag("version"), r.tag("engine"), ", ".join(r.nodes()))
        for r in reversed(runs)
    ]
