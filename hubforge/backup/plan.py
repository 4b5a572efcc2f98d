"""What `invoke backup --list` and `invoke restore` read back and refuse, as data: the manifest, the snapshots,
the choice of one, one user's volumes. The shared half (the tree, restic's argv, its answers) is hub_ext.backup.plan,
which the stack's backup service runs too; it is re-exported here. No Docker here."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub_ext.backup.plan import (  # noqa: F401 -- the shared half, re-exported: one namespace for hubforge's callers
    CACHE_MOUNT,
    DATABASE,
    DATABASE_COPY,
    DEFAULT_REPOSITORY_FOLDER,
    HUB_DATA,
    HUB_DATA_KIND,
    MANIFEST,
    MANIFEST_FILE,
    MANIFEST_FORMAT,
    PASSWORD_FILE_NAME,
    PASSWORD_MOUNT,
    REMOTE_ENVIRONMENT,
    RENDERED,
    REPOSITORY_MOUNT,
    ROOT,
    SETTINGS,
    VOLUMES,
    Progress,
    Repository,
    Volume,
    backup_argv,
    backup_excludes,
    backup_summary,
    dump_argv,
    environment,
    human_bytes,
    list_argv,
    manifest,
    node_host,
    parse_backup_line,
    progress_line,
    repository,
    restic_problem,
    restore_argv,
    run_tags,
    stack_volumes,
    summary_line,
    tags,
    volume_of,
)
from hub_ext.naming import VOLUME_KINDS

from ..errors import HubforgeError


def write_password(path: Path) -> None:
    """A new repository's password, in a file private from its first byte (made only where none is)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")


SWARM_REFUSAL = (
    "scheduled backups of swarm stacks are not supported yet; run `invoke backup` on the manager (from cron, say), "
    "which backs up every node"
)


def parse_manifest(text: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except ValueError:
        raise HubforgeError(
            f"the snapshot's manifest is not JSON ({text[:40]!r}): was it made by `invoke backup`?"
        ) from None
    if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
        raise HubforgeError(
            f"the snapshot's manifest has format {document.get('format') if isinstance(document, dict) else '?'}, "
            f"this hubforge reads {MANIFEST_FORMAT}: restore with the release that made it"
        )
    document["volumes"] = [
        Volume(v["name"], v.get("driver", "local"), v.get("labels", {}), v.get("options", {}))
        for v in document.get("volumes", [])
    ]
    return document


@dataclass(frozen=True)
class Snapshot:
    id: str
    short_id: str
    time: str  # RFC 3339, as restic writes it
    tags: tuple[str, ...]
    host: str = ""  # restic's --host: the project's (the manager, or a compose host), or project@node (node_host)

    def tag(self, name: str) -> str:
        return next((t.split("=", 1)[1] for t in self.tags if t.startswith(f"{name}=")), "")


def parse_snapshots(text: str) -> list[Snapshot]:
    """`restic snapshots --json`, oldest first."""
    try:
        listed = json.loads(text.strip() or "[]")
    except ValueError:
        raise HubforgeError(
            f"restic listed the snapshots in a form this hubforge cannot read: {text[:120]!r}"
        ) from None
    snapshots = [
        Snapshot(
            item["id"],
            item.get("short_id", item["id"][:8]),
            item.get("time", ""),
            tuple(item.get("tags") or ()),
            item.get("hostname", ""),
        )
        for item in listed or []
    ]
    return sorted(snapshots, key=lambda s: s.time)


@dataclass(frozen=True)
class Run:
    """The snapshots one `invoke backup` made: on the swarm engine one per node with volumes (tag run=<id>), the
    manager's first; on the compose engine (or before runs existed) one snapshot, whose short id is the run's."""

    id: str
    snapshots: tuple[Snapshot, ...]

    @property
    def time(self) -> str:
        return min(s.time for s in self.snapshots)

    @property
    def short_id(self) -> str:
        return self.id

    @property
    def manager(self) -> Snapshot | None:
        """The snapshot of the manager (or of a compose host): the one without a node's own restic host."""
        return next((s for s in self.snapshots if "@" not in s.host), None)

    @property
    def workers(self) -> list[Snapshot]:
        return [s for s in self.snapshots if "@" in s.host]

    def tag(self, name: str) -> str:
        return (self.manager or self.snapshots[0]).tag(name)

    def nodes(self) -> list[str]:
        """Where each snapshot was taken: the manager, then each other node's hostname (and its id's start)."""
        return ["manager" if s is self.manager else f"{s.tag('node')} ({s.tag('node-id')[:6]})" for s in self.snapshots]


def group_runs(snapshots: list[Snapshot]) -> list[Run]:
    """Snapshots (oldest first) grouped into runs by their run tag, oldest first; a snapshot without one is a run."""
    runs: dict[str, list[Snapshot]] = {}
    for snapshot in snapshots:
        runs.setdefault(snapshot.tag("run") or snapshot.short_id, []).append(snapshot)
    ordered = [
        Run(run_id, tuple(sorted(members, key=lambda s: ("@" in s.host, s.host, s.time))))
        for run_id, members in runs.items()
    ]
    return sorted(ordered, key=lambda r: r.time)


def pick_run(runs: list[Run], wanted: str, project: str) -> Run:
    """`latest`, a run by its id (or its start), or the run of a snapshot given by its id (or its start); one line
    naming the latest when there is no such run, or several."""
    if not runs:
        raise HubforgeError(f"the repository has no snapshot of project {project}: make one with `invoke backup`")
    if wanted == "latest":
        return runs[-1]
    found = (
        [r for r in runs if r.id.startswith(wanted) or any(s.id.startswith(wanted) for s in r.snapshots)]
        if wanted
        else []
    )
    if len(found) == 1:
        return found[0]
    recent = ", ".join(r.id for r in runs[-5:])
    if len(found) > 1:
        raise HubforgeError(f"snapshot {wanted!r} is ambiguous; give more of its id (the latest: {recent})")
    raise HubforgeError(
        f"no snapshot {wanted!r} of project {project}; the latest are {recent} (`invoke backup --list` lists all)"
    )


def pick_snapshot(snapshots: list[Snapshot], wanted: str, project: str) -> Snapshot:
    """The manager's snapshot of the run `wanted` names (pick_run): on the compose engine, the snapshot itself."""
    return manager_snapshot(pick_run(group_runs(snapshots), wanted, project))


def manager_snapshot(run: Run) -> Snapshot:
    """The run's snapshot of the manager (the hub's database, the settings); one line when it has none."""
    if run.manager is None:
        raise HubforgeError(f"backup {run.id} holds no snapshot of the manager (its nodes: {', '.join(run.nodes())})")
    return run.manager


def local_repository_refusal(repo: Repository, holders: dict[str, int]) -> str | None:
    """Why a local repository cannot take a swarm stack's backup: other nodes hold volumes of the project (node name
    -> how many), and no other node reaches a folder on the manager. None when only the manager holds any."""
    if not repo.local or not holders:
        return None
    where = ", ".join(f"{name} ({count})" for name, count in sorted(holders.items()))
    return (
        f"BACKUP_REPOSITORY is a folder on this manager ({repo.location}), which the swarm's other nodes cannot "
        f"reach, and they hold volumes of this project: {where}; use a repository every node reaches (rest: or s3:)"
    )


def missing_repository(repo: Repository) -> str | None:
    """Why a restore or a listing cannot open the repository before restic runs, or None."""
    if repo.local and not (Path(repo.location) / "config").is_file():
        return f"there is no backup repository at {repo.location} (BACKUP_REPOSITORY); make one with `invoke backup`"
    if not repo.password_file.is_file():
        return (
            f"no password file at {repo.password_file} (BACKUP_PASSWORD_FILE): put the copy you kept of the "
            "repository's password there"
        )
    return None


def user_volumes(volumes: list[Volume], user: str, kind: str | None) -> list[Volume]:
    """One user's volumes of a snapshot (of one kind with --volume); one line naming the choices when there is none."""
    if kind is not None and kind not in VOLUME_KINDS:
        raise HubforgeError(f"--volume={kind!r} is not a user volume; use one of: {', '.join(VOLUME_KINDS)}")
    theirs = [v for v in volumes if v.user == user]
    if not theirs:
        users = sorted({v.user for v in volumes if v.user})
        raise HubforgeError(f"the snapshot holds no volumes of user {user!r}; its users: {', '.join(users) or 'none'}")
    chosen = [v for v in theirs if kind is None or v.kind == kind]
    if not chosen:
        raise HubforgeError(
            f"the snapshot holds no {kind} volume of {user!r}; it has: {', '.join(sorted(v.kind for v in theirs))}"
        )
    return chosen
