"""What a backup holds and how restic is asked for it, as data: the tree of a snapshot, restic's argv and
environment (backup, retention), and its JSON read back. Shared by `invoke backup` (hubforge.backup) and the stack's
backup service (hub_ext.backup.scheduler); standard library only, no Docker here."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub_ext.naming import QUOTA_LABEL, USER_LABEL, VOLUME_LABEL

# The snapshot's tree, the same on every host: a restore on a new machine puts each part back by these paths.
ROOT = "/backup"
MANIFEST = f"{ROOT}/manifest"  # stack.json: the volumes (labels, driver), the project, the version
SETTINGS = f"{ROOT}/settings"  # the run folder: .env, config.d/, compose.override.yml, stored secrets
VOLUMES = f"{ROOT}/volumes"  # /backup/volumes/<volume name>: the files inside each labelled volume
MANIFEST_FILE = "stack.json"
MANIFEST_FORMAT = 1

# In the backup container: the repository (a local one), its password, restic's cache.
REPOSITORY_MOUNT = "/repo"
PASSWORD_MOUNT = "/run/secrets/restic-password"
CACHE_MOUNT = "/cache"

DEFAULT_REPOSITORY_FOLDER = Path("/var/lib/hubforge/backups")
PASSWORD_FILE_NAME = "backup-password"
# The run folder's files that `invoke up` makes again from the checkout (and the stack's own state): never restored
# over what the new code writes. The password file is not kept inside the repository it opens.
RENDERED = ("compose.yml", "jupyterhub_config.py", "stack.json", PASSWORD_FILE_NAME)

# The hub's database, copied with SQLite's online backup inside the running hub (hub_ext.hub.database's file).
DATABASE = "jupyterhub.sqlite"
# The copy, beside it in the data volume, while the backup runs: a name of its own per run, so that two backups at
# once (`invoke backup` or an upgrade's, and the service's) never remove each other's copy; excluded by the pattern.
DATABASE_COPY = ".hubforge-backup-*.sqlite"
UPGRADE_TAG = "upgrade"  # the snapshot an upgrade takes first: its way back, which the retention never forgets
HUB_DATA = "/srv/jupyterhub/data"
HUB_DATA_KIND = "hub-data"

# The backup service's own volume (BACKUP_SCHEDULE): its status file, the manifest it stages, restic's cache. Owned
# by the hub's user (the folder is made so in the hub image); the hub mounts it read-only for /hub/metrics.
STATE_VOLUME = "backup-state"  # in the compose file; Compose names it <project>_backup-state
STATE_MOUNT = "/srv/jupyterhub/backups"
STATUS_FILE = "status.json"

# restic's variables for remote repositories, passed from the environment of `invoke` to the backup container.
REMOTE_ENVIRONMENT = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "RESTIC_REST_USERNAME",
    "RESTIC_REST_PASSWORD",
)


@dataclass(frozen=True)
class Repository:
    """Where the snapshots are: a folder on this host (mounted into the container) or a restic URL."""

    location: str  # the host folder, or s3:/rest: URL
    password_file: Path
    password_is_default: bool  # made at the first backup when missing

    @property
    def local(self) -> bool:
        return self.location.startswith("/")

    @property
    def shown(self) -> str:
        """The location as messages print it: a password in a URL (rest:https://user:password@host/) masked."""
        return re.sub(r"(://[^/@:]+:)[^/@]+@", r"\1***@", self.location)

    @property
    def restic_location(self) -> str:
        return REPOSITORY_MOUNT if self.local else self.location


def repository(backup_repository: str, backup_password_file: str, project: str, run_dir: Path) -> Repository:
    """The repository of BACKUP_REPOSITORY and BACKUP_PASSWORD_FILE (already checked by the settings table), with
    their defaults: a folder per project under /var/lib/hubforge/backups, and a password file in the run folder."""
    location = backup_repository or str(DEFAULT_REPOSITORY_FOLDER / project)
    if backup_password_file:
        return Repository(location, Path(backup_password_file), False)
    return Repository(location, run_dir / PASSWORD_FILE_NAME, True)


@dataclass(frozen=True)
class Volume:
    """A labelled Docker volume as the manifest records it, enough to make it again on another host."""

    name: str
    driver: str = "local"
    labels: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)

    @property
    def user(self) -> str | None:
        return self.labels.get(USER_LABEL)

    @property
    def kind(self) -> str:
        return self.labels.get(VOLUME_LABEL, "")

    @property
    def quota(self) -> bool:
        return bool(self.labels.get(QUOTA_LABEL))

    @property
    def path(self) -> str:
        return f"{VOLUMES}/{self.name}"

    def recreated(self) -> Volume:
        """How a restore makes it: the same name and labels. A quota'd volume (an ext4 file on a loop device, made by
        the hub's quota helper) comes back as a plain local volume, without its quota label: the spawner then treats
        it as one made before its quota (docs: held to it again after a reset)."""
        if not self.quota:
            return self
        return Volume(self.name, "local", {k: v for k, v in self.labels.items() if k != QUOTA_LABEL}, {})

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "driver": self.driver, "labels": dict(self.labels), "options": dict(self.options)}


def volume_of(inspected: Mapping[str, Any]) -> Volume:
    """A Volume from Docker's listing or inspect document."""
    return Volume(
        inspected["Name"],
        inspected.get("Driver") or "local",
        dict(inspected.get("Labels") or {}),
        dict(inspected.get("Options") or {}),
    )


def stack_volumes(listed: Iterable[Mapping[str, Any]]) -> list[Volume]:
    """The project's volumes that hold something: every one with a kind label (hub data, certificates, shared,
    users', group folders), sorted by name."""
    return sorted((volume_of(v) for v in listed if (v.get("Labels") or {}).get(VOLUME_LABEL)), key=lambda v: v.name)


def manifest(
    project: str,
    engine: str,
    version: str,
    commit: str,
    volumes: list[Volume],
    database: str,
    node: Mapping[str, str] | None = None,
) -> str:
    """/backup/manifest/stack.json: what a restore needs before it reads any file; on the swarm engine, also the node
    the volumes are on (id, hostname)."""
    return json.dumps(
        {
            "format": MANIFEST_FORMAT,
            "project": project,
            "engine": engine,
            "hubforge": {"version": version, "commit": commit},
            "database": database,
            "volumes": [v.as_dict() for v in volumes],
            **({"node": dict(node)} if node else {}),
        },
        indent=1,
        sort_keys=True,
    )


# -- restic's command lines --------------------------------------------------------------------------------------
def database_copy_name(token: str) -> str:
    return DATABASE_COPY.replace("*", token)


def tags(project: str, engine: str, version: str, commit: str, extra: tuple[str, ...] = ()) -> list[str]:
    """Each snapshot's tags: whose it is and what made it; `--list` and a restore pick a project's by the first two."""
    return (
        ["hubforge", f"project={project}", f"engine={engine}", f"version={version}"]
        + ([f"commit={commit[:12]}"] if commit else [])
        + list(extra)
    )


def backup_argv(project: str, snapshot_tags: list[str], excludes: list[str], host: str | None = None) -> list[str]:
    """`restic backup` of the whole tree. One path and one host name for every snapshot of a project, whatever the
    machine: restic then takes the last snapshot as the parent, and reads again only files whose size, times or
    inode changed (a second backup costs time in proportion to the changes). On the swarm engine each node other than
    the manager has a host name of its own (node_host), so that its parent is its own last snapshot."""
    argv = ["backup", ROOT, "--json", "--host", host or project]
    for tag in snapshot_tags:
        argv += ["--tag", tag]
    for pattern in excludes:
        argv += ["--exclude", pattern]
    return argv


def node_host(project: str, hostname: str) -> str:
    """restic's --host of a swarm worker's snapshots: the project's, and the node's hostname."""
    return f"{project}@{hostname}"


def run_tags(run: str, node_id: str, hostname: str) -> list[str]:
    """The tags that tie a snapshot to one `invoke backup` of a swarm stack (`run`) and to the node it was taken on."""
    return [f"run={run}", f"node={hostname}", f"node-id={node_id}"]


def backup_excludes(volumes: list[Volume], online_copy: bool) -> list[str]:
    """What the tree holds but a snapshot must not: the files `up` renders, the database's live files while the hub
    writes them (the online copy stands in their place), and the copy's own name."""
    excludes = [f"{SETTINGS}/{name}" for name in RENDERED]
    for volume in volumes:
        if volume.kind == HUB_DATA_KIND:
            excludes.append(f"{volume.path}/{DATABASE_COPY}")
            if online_copy:
                excludes += [f"{volume.path}/{DATABASE}-wal", f"{volume.path}/{DATABASE}-shm"]
    return excludes


def forget_argv(project: str, daily: int, weekly: int, monthly: int) -> list[str] | None:
    """`restic forget` of this project's snapshots beyond the retention (BACKUP_KEEP_*), or None when every rule is 0
    (keep all). Only the project's own: its tag and host; one group, whatever the version or engine tags say. Prune
    runs apart (prune_argv), and only when something was forgotten: it rewrites packs and locks the repository."""
    rules = [(f"--keep-{name}", count) for name, count in (("daily", daily), ("weekly", weekly), ("monthly", monthly))]
    if not any(count for _, count in rules):
        return None
    argv = ["forget", "--json", "--tag", f"project={project}", "--host", project, "--group-by", "host,paths"]
    argv += ["--keep-tag", UPGRADE_TAG]  # an upgrade's way back stays until it is forgotten by hand
    for option, count in rules:
        argv += [option, str(count)] if count else []
    return argv


PRUNE_ARGV = ["prune"]


def forgotten(output: str) -> tuple[int, int]:
    """(snapshots kept, snapshots forgotten) from `restic forget --json`."""
    try:
        groups = json.loads(output.strip().splitlines()[-1] if output.strip() else "[]")
    except ValueError:
        return 0, 0
    groups = groups if isinstance(groups, list) else []
    return (
        sum(len(g.get("keep") or []) for g in groups if isinstance(g, dict)),
        sum(len(g.get("remove") or []) for g in groups if isinstance(g, dict)),
    )


def list_argv(project: str) -> list[str]:
    return ["snapshots", "--json", "--tag", f"project={project}"]


def restore_argv(snapshot_id: str, includes: list[str] | None) -> list[str]:
    """`restic restore` into the same tree (target /), every part (includes None: all but the manifest) or some."""
    argv = ["restore", snapshot_id, "--target", "/"]
    if includes is None:
        return argv + ["--exclude", MANIFEST]
    for path in includes:
        argv += ["--include", path]
    return argv


def dump_argv(snapshot_id: str) -> list[str]:
    return ["dump", snapshot_id, f"{MANIFEST}/{MANIFEST_FILE}"]


def environment(repo: Repository, passed: Mapping[str, str]) -> dict[str, str]:
    """The backup container's environment: the repository, the password's file, the cache, and restic's own
    credentials for a remote repository (only those REMOTE_ENVIRONMENT names)."""
    env = {
        "RESTIC_REPOSITORY": repo.restic_location,
        "RESTIC_PASSWORD_FILE": PASSWORD_MOUNT,
        "RESTIC_CACHE_DIR": CACHE_MOUNT,
        "RESTIC_PROGRESS_FPS": "2",  # restic shows no progress when its output is not a terminal, unless asked
    }
    if not repo.local:
        env.update({k: v for k, v in passed.items() if k in REMOTE_ENVIRONMENT and v})
    return env


# -- what restic answers ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Progress:
    percent: float
    files_done: int
    total_files: int
    bytes_done: int
    total_bytes: int
    seconds: float


def human_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


def parse_backup_line(line: str) -> Progress | dict[str, Any] | None:
    """One line of `restic backup --json`: a Progress (status), the summary (a dict), or None (anything else)."""
    try:
        message = json.loads(line)
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    if message.get("message_type") == "status":
        return Progress(
            float(message.get("percent_done") or 0.0),
            int(message.get("files_done") or 0),
            int(message.get("total_files") or 0),
            int(message.get("bytes_done") or 0),
            int(message.get("total_bytes") or 0),
            float(message.get("seconds_elapsed") or 0.0),
        )
    if message.get("message_type") == "summary":
        return message
    return None


def backup_summary(output: str) -> dict[str, Any] | None:
    """The summary that `restic backup --json` prints last, or None when it printed none."""
    for line in reversed(output.splitlines()):
        parsed = parse_backup_line(line)
        if isinstance(parsed, dict):
            return parsed
    return None


def progress_line(progress: Progress) -> str:
    return (
        f"backing up: {progress.percent * 100:.0f}% ({human_bytes(progress.bytes_done)} of "
        f"{human_bytes(progress.total_bytes)}, {progress.files_done} of {progress.total_files} files, "
        f"{progress.seconds:.0f}s)"
    )


def summary_line(summary: Mapping[str, Any]) -> str:
    return (
        f"snapshot {summary.get('snapshot_id', '?')[:8]}: {summary.get('files_new', 0)} new, "
        f"{summary.get('files_changed', 0)} changed, {summary.get('files_unmodified', 0)} unchanged files; "
        f"{human_bytes(summary.get('data_added', 0))} added to the repository in "
        f"{float(summary.get('total_duration', 0.0)):.1f}s"
    )


def restic_problem(stderr: str, repo: Repository) -> str:
    """restic's failure as one line that says what to do next."""
    text = stderr.strip()
    where = repo.shown
    if "wrong password" in text or "no key found" in text:
        return (
            f"the password in {repo.password_file} does not open the repository at {where}: use the file that was "
            "kept with it (BACKUP_PASSWORD_FILE)"
        )
    if "Is there a repository at the following location" in text or "repository does not exist" in text:
        return f"there is no backup repository at {where} (BACKUP_REPOSITORY); make one with `invoke backup`"
    if "unable to create lock" in text or "repository is already locked" in text:
        return f"the repository at {where} is locked by another restic; wait for it, or run `restic unlock` there"
    last = [line for line in text.splitlines() if line.strip()][-1:] or ["(no output)"]
    return f"restic failed: {last[0][:300]}"
