"""One restic run in a short-lived container of the `backup` image (restic only, no shell), and the snapshot of a
whole compose stack made of such runs. `invoke backup` (hubforge.backup.runner) and the stack's backup service
(hub_ext.backup.scheduler) both take their snapshots here, through a gateway of gateway.JobCalls' shape."""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from hub_ext.naming import PROJECT_LABEL, ROLE_LABEL

from . import plan
from .plan import Repository, Volume

log = logging.getLogger(__name__)
BACKUP_ROLE = {ROLE_LABEL: "backup"}
# What the container may do: read every file (backup), or put files back with their owners and modes (restore).
READ_CAPABILITIES = ["DAC_READ_SEARCH"]
WRITE_CAPABILITIES = ["CHOWN", "FOWNER", "DAC_OVERRIDE", "FSETID"]


class BackupError(Exception):
    """A backup that did not happen; str() is one line that says why and what to do."""


@dataclass
class ResticJob:
    """restic against one project's repository. Every path here is the Docker host's: the daemon resolves binds,
    whoever asks it (`invoke` on the host, or the backup service in its container)."""

    docker: Any  # run_streamed, exec_output, containers, volumes, volume (gateway.JobCalls)
    project: str
    engine: str
    image: str  # the backup image
    repo: Repository
    cache_host: str  # restic's cache folder, on the host
    run_dir_host: str  # the stack's run folder, on the host
    passed: Mapping[str, str]  # restic's credential variables (remote repositories)
    hub: Callable[[], dict | None]  # the hub's container, as `docker ps` lists it, or None
    failure: ClassVar[type[Exception]] = BackupError  # what a refusal raises (hubforge: its HubforgeError)
    # On a swarm worker (hub_ext.backup.node) no host path holds the password: it is put into each container instead
    password: bytes | None = None
    host: str = ""  # restic's --host of the snapshots (default: the project's name)
    extra_tags: tuple[str, ...] = ()  # the run and the node, on the swarm engine
    node: Mapping[str, str] | None = None  # the node the volumes are on, recorded in the manifest (swarm)

    def host_config(self, binds: list[str], writing: bool) -> dict[str, Any]:
        """The backup container: root with only the capabilities it needs, no new privileges, the repository's
        password read-only, no network for a local repository."""
        binds = [*binds, f"{self.cache_host}:{plan.CACHE_MOUNT}:rw"]  # a host folder, or a volume's name
        if self.password is None:
            binds.append(f"{self.repo.password_file}:{plan.PASSWORD_MOUNT}:ro")
        if self.repo.local:
            binds.append(f"{self.repo.location}:{plan.REPOSITORY_MOUNT}:rw")
        return {
            "binds": binds,
            "cap_drop": ["ALL"],
            "cap_add": WRITE_CAPABILITIES if writing else READ_CAPABILITIES,
            "security_opt": ["no-new-privileges:true"],
            "network_mode": "none" if self.repo.local else "bridge",
            # a restore also sets the owner and mode of /backup itself: its root stays writable, a backup's does not
            "read_only": not writing,
            "tmpfs": {"/tmp": "size=512m"},  # restic's pack files before they are written out
        }

    def restic(
        self,
        argv: list[str],
        binds: list[str] = (),
        writing: bool = False,
        on_line: Callable[[str], None] = lambda line: None,
        files: Mapping[str, bytes] | None = None,
    ) -> str:
        """restic's stdout; a failure is one line (plan.restic_problem). `files` are put into the container (the
        gateway's run_streamed), with the password when it has no file on this host."""
        code, out, err = self.docker.run_streamed(
            self.image,
            argv,
            self.host_config(list(binds), writing),
            {PROJECT_LABEL: self.project, **BACKUP_ROLE},
            plan.environment(self.repo, self.passed),
            user="0:0",
            on_line=on_line,
            files={**(files or {}), **({plan.PASSWORD_MOUNT: self.password} if self.password is not None else {})},
        )
        if code is None:
            raise self.failure(f"Docker refused the backup container: {err}")
        if code != 0:
            log.info("restic %s exited %s: %s", argv[0], code, err)
            raise self.failure(plan.restic_problem(err, self.repo))
        return out

    @contextlib.contextmanager
    def database_copy(self, volumes: list[Volume]) -> Iterator[list[str]]:
        """While the hub runs: a consistent copy of its database (SQLite's online backup, in the hub's own container),
        bound over the live file in the backup's tree; yields those binds. With the hub stopped, nothing: the files
        at rest are consistent."""
        hub = self.hub()
        data = next((v for v in volumes if v.kind == plan.HUB_DATA_KIND), None)
        if data is None or not hub or hub.get("State") != "running":
            yield []
            return
        name = plan.database_copy_name(secrets.token_hex(6))
        copy = f"{plan.HUB_DATA}/{name}"
        script = (
            "import sqlite3\n"
            f"copy = {copy!r}\n"
            f"source, target = sqlite3.connect({plan.HUB_DATA + '/' + plan.DATABASE!r}), sqlite3.connect(copy)\n"
            "source.backup(target)\n"
            "target.close(); source.close()\n"
        )
        code, out = self.docker.exec_output(hub["Id"], ["python3", "-c", script])
        if code != 0:
            raise self.failure(f"the hub could not copy its database: {out.strip()[-300:]}")
        mountpoint = (self.docker.volume(data.name) or {}).get("Mountpoint", "")
        try:
            yield [f"{mountpoint}/{name}:{data.path}/{plan.DATABASE}:ro"]
        finally:
            try:
                self.docker.exec_output(hub["Id"], ["python3", "-c", f"import os; os.remove({copy!r})"])
            except Exception as exc:  # noqa: BLE001 -- the hub went meanwhile (an upgrade): the copy stays, excluded
                log.warning("the database copy %s stays in the hub's data volume: %s", name, exc)

    def snapshot(
        self,
        version: str,
        commit: str,
        staging: Path | None,
        staging_host: str,
        status: Callable[[str], None],
        extra_tags: tuple[str, ...] = (),
    ) -> dict[str, Any]:
        """One snapshot of the stack's volumes on this Docker host (and of the run folder, when there is one) while it
        runs; returns restic's summary (with the count of volumes). The manifest is written to `staging` here and
        bound from `staging_host`, the same folder as the daemon sees it; with no staging folder (a swarm worker) it
        is put into the container itself."""
        volumes = plan.stack_volumes(self.docker.volumes({PROJECT_LABEL: self.project}))
        with self.database_copy(volumes) as database_binds:
            document = plan.manifest(
                self.project,
                self.engine,
                version,
                commit,
                volumes,
                "online copy" if database_binds else "files at rest",
                self.node,
            )
            binds, files = [], {}
            if staging is None:
                files[f"{plan.MANIFEST}/{plan.MANIFEST_FILE}"] = document.encode()
            else:
                staging.mkdir(parents=True, exist_ok=True)
                (staging / plan.MANIFEST_FILE).write_text(document)
                binds.append(f"{staging_host}:{plan.MANIFEST}:ro")
            if self.run_dir_host:
                binds.append(f"{self.run_dir_host}:{plan.SETTINGS}:ro")
            binds += [f"{v.name}:{v.path}:ro" for v in volumes] + database_binds
            argv = plan.backup_argv(
                self.project,
                [*plan.tags(self.project, self.engine, version, commit, extra_tags), *self.extra_tags],
                plan.backup_excludes(volumes, bool(database_binds)),
                self.host or self.project,
            )

            def on_line(line: str) -> None:
                parsed = plan.parse_backup_line(line)
                if isinstance(parsed, plan.Progress):
                    status(plan.progress_line(parsed))

            status(f"backing up {len(volumes)} volumes" + (" and the settings" if self.run_dir_host else ""))
            summary = plan.backup_summary(self.restic(argv, binds, on_line=on_line, files=files))
        if not summary:
            raise self.failure("restic finished without a summary: the snapshot may be incomplete; run it again")
        summary["volumes"] = len(volumes)
        return summary

    # -- restore ------------------------------------------------------------------------------------------------
    def recreate(self, volumes: list[Volume], wait: float = 0.0) -> list[str]:
        """Each volume made again, empty, with its labels (Compose's too: `up` then takes the stack's as its own).
        Waits up to `wait` s for what uses them to go (a lab's task that Swarm is still stopping), then refuses, for
        all before any is removed: a refusal leaves every volume as it was. Returns the devices of the quota'd volumes
        it removed (their files, on the host, are the caller's to remove)."""
        deadline = time.monotonic() + wait
        while True:
            in_use = {v.name: users for v in volumes if (users := self.docker.volume_users(v.name))}
            if not in_use or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        if in_use:
            name, users = next(iter(in_use.items()))
            raise self.failure(
                f"volume {name} is in use by {', '.join(users)}"
                + (f" (and {len(in_use) - 1} more volumes)" if len(in_use) > 1 else "")
                + ": stop what uses it, then restore again (nothing was restored)"
            )
        quota_files = []
        for volume in volumes:
            existing = self.docker.volume(volume.name)
            if existing is not None:
                self.docker.remove_volume(volume.name)
                device = (existing.get("Options") or {}).get("device", "")
                if plan.volume_of(existing).quota and device.endswith(".dev"):
                    quota_files.append(device)
            again = volume.recreated()
            self.docker.create_volume(again.name, again.driver, again.options, again.labels)
        return quota_files

    def put_back(self, snapshot_id: str, volumes: list[Volume], settings_host: str | None) -> None:
        """restic restore of the volumes (and, given the run folder's host path, the settings) of a snapshot."""
        binds = [f"{v.name}:{v.path}:rw" for v in volumes]
        if settings_host:
            binds.append(f"{settings_host}:{plan.SETTINGS}:rw")
        includes = None if settings_host else [v.path for v in volumes]
        started = time.monotonic()
        self.restic(plan.restore_argv(snapshot_id, includes), binds, writing=True)
        log.info("restored in %.1fs", time.monotonic() - started)

    def initialised(self) -> bool:
        """Whether the repository exists (restic reads its config)."""
        try:
            self.restic(["cat", "config"])
            return True
        except self.failure as exc:
            if "no backup repository" not in str(exc):
                raise
            return False

    def forget(self, daily: int, weekly: int, monthly: int) -> tuple[int, int]:
        """The retention: this project's snapshots beyond it forgotten, their data pruned when any went; returns
        (kept, forgotten). With every rule at 0, nothing is forgotten."""
        argv = plan.forget_argv(self.project, daily, weekly, monthly)
        if argv is None:
            return 0, 0
        kept, gone = plan.forgotten(self.restic(argv))
        if gone:
            self.restic(plan.PRUNE_ARGV)
        return kept, gone
