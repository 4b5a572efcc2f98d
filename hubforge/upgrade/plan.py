"""What an upgrade is, as data: the images a stack moves between, the released references it pulls, the record it
leaves for `invoke rollback`, the database's schema question, and the gate's steps. No Docker here."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HubforgeError
from ..release import plan as rel

RECORD_FILE = "upgrade.json"  # in the run folder: the last upgrade, what `invoke rollback` undoes
GATE_TIMEOUT = 180  # seconds for the new hub to become healthy
HUB_DATA = "/srv/jupyterhub/data"
DATABASE_URL = f"sqlite:///{HUB_DATA}/jupyterhub.sqlite"

# Run in a container of the NEW hub image, with no network: the schema revision its JupyterHub expects (alembic's
# head). A hub image that cannot run this is refused before anything stops.
HEAD_SCRIPT = (
    "import os, jupyterhub\n"
    "from alembic.script import ScriptDirectory\n"
    "print(ScriptDirectory(os.path.join(os.path.dirname(jupyterhub.__file__), 'alembic')).get_current_head())\n"
)
# Run in the RUNNING hub: the revision its database is at (read-only).
REVISION_SCRIPT = (
    "import sqlite3\n"
    f"db = sqlite3.connect('file:{HUB_DATA}/jupyterhub.sqlite?mode=ro', uri=True)\n"
    "print(db.execute('SELECT version_num FROM alembic_version').fetchone()[0])\n"
)
UPGRADE_DB_ARGV = ["jupyterhub", "upgrade-db", f"--JupyterHub.db_url={DATABASE_URL}"]


@dataclass(frozen=True)
class ImageSet:
    """Everything a stack runs: its images by target (hub, gpu-probe, registry, backup...), its lab images by name,
    and what they are a version of (a release X.Y.Z, or `checkout <commit>`)."""

    images: dict[str, str]
    lab_images: dict[str, str]
    version: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageSet:
        return cls(dict(data["images"]), dict(data["lab_images"]), str(data.get("version", "?")))

    def changes(self, target: ImageSet) -> list[str]:
        """`name: old -> new` for every image that differs (lab images as lab:<name>)."""
        lines = []
        for prefix, before, after in (("", self.images, target.images), ("lab:", self.lab_images, target.lab_images)):
            for name in sorted(set(before) | set(after)):
                if before.get(name) != after.get(name):
                    lines.append(f"{prefix}{name}: {before.get(name, '(none)')} -> {after.get(name, '(none)')}")
        return lines


def running_set(state: Mapping[str, Any], record: Mapping[str, Any] | None) -> ImageSet:
    """What the stack runs now, from its stack.json; its version from the last upgrade's record, if that ran it."""
    images, lab_images = dict(state.get("images") or {}), dict(state.get("lab_images") or {})
    version = "the images of its last `invoke up`"
    if record and record.get("state") == "done" and record["to"]["images"].get("hub") == images.get("hub"):
        version = record["to"]["version"]
    elif record and record.get("state") == "rolled back" and record["from"]["images"].get("hub") == images.get("hub"):
        version = record["from"]["version"]
    return ImageSet(images, lab_images, version)


@dataclass(frozen=True)
class Release:
    """A released version in a registry, as `invoke release --push` put it there."""

    registry: str
    namespace: str
    version: rel.Version

    def reference(self, name: str, flavor: str | None = None) -> str:
        """The version tag of one released image: hub, lab, gpu-probe, or a flavour (lab:X.Y.Z-<flavor>)."""
        tag = rel.tags_for(self.version, "", flavor)[0]
        return f"{rel.repository(self.registry, self.namespace, name)}:{tag}"

    def wanted(self, lab_images: Mapping[str, str]) -> dict[str, str]:
        """Every reference the stack needs from the release: the released images, and each lab flavour the stack
        offers now (keyed lab:<name>)."""
        wanted = {name: self.reference(name) for name in rel.RELEASED}
        for name in lab_images:
            if name != "default":
                wanted[f"lab:{name}"] = self.reference("lab", name)
        return wanted


def metrics_url(state: Mapping[str, Any]) -> str:
    """The hub's metrics, where scripts on this machine reach it: beside its API (stack.json's api_url)."""
    return state["api_url"].removesuffix("api/") + "metrics"


def pinned(reference: str, digest: str) -> str:
    """`repository@digest` for `repository:tag`: what the stack runs, so that a tag moved later changes nothing."""
    repository = reference.rsplit("@", 1)[0]
    last = repository.rsplit("/", 1)
    if ":" in last[-1]:
        repository = repository[: repository.rfind(":")]
    return f"{repository}@{digest}"


def release_set(current: ImageSet, release: Release, digests: Mapping[str, str]) -> ImageSet:
    """The image set of a release: its hub, lab (and flavours) and gpu-probe pinned by digest; the images no release
    carries (the swarm's registry, the backup tool) stay those of the stack."""
    wanted = release.wanted(current.lab_images)
    pins = {key: pinned(reference, digests[key]) for key, reference in wanted.items()}
    images = {**current.images, **{name: pins[name] for name in rel.RELEASED}}
    lab_images = {"default": pins["lab"], **{key[4:]: ref for key, ref in pins.items() if key.startswith("lab:")}}
    return ImageSet(images, lab_images, str(release.version))


@dataclass
class Record:
    """The last upgrade of a stack (upgrade.json): from what, to what, the snapshot taken just before, and how it
    ended. `invoke rollback` goes back to `from` with the database of `snapshot`."""

    before: ImageSet
    after: ImageSet
    snapshot: str
    state: str = "upgrading"  # upgrading | done | rolled back
    reason: str = ""  # why it was rolled back
    started: float = field(default_factory=time.time)
    migrated: bool = False  # whether `jupyterhub upgrade-db` changed the schema

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.before.to_json(),
            "to": self.after.to_json(),
            "snapshot": self.snapshot,
            "state": self.state,
            "reason": self.reason,
            "started": self.started,
            "migrated": self.migrated,
        }

    def save(self, run_dir: Path) -> None:
        (run_dir / RECORD_FILE).write_text(json.dumps(self.to_json(), indent=1))


def load_record(run_dir: Path) -> Record | None:
    path = run_dir / RECORD_FILE
    try:
        data = json.loads(path.read_text())
        return Record(
            ImageSet.from_json(data["from"]),
            ImageSet.from_json(data["to"]),
            str(data["snapshot"]),
            str(data.get("state", "upgrading")),
            str(data.get("reason", "")),
            float(data.get("started", 0)),
            bool(data.get("migrated", False)),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HubforgeError(f"{path} is not an upgrade record ({exc}); it was edited or cut short") from None


def raw_record(run_dir: Path) -> dict[str, Any] | None:
    """upgrade.json as it is, for running_set (None when there is none or it cannot be read)."""
    try:
        return json.loads((run_dir / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None


def needs_migration(current: str, head: str) -> bool:
    """Whether `jupyterhub upgrade-db` must run: the database is not at the new image's schema head. A database newer
    than the image (a downgrade) is refused by JupyterHub itself at start; the gate then rolls back."""
    return current.strip() != head.strip()


class GateFailed(HubforgeError):
    """One step of the health gate failed: the upgrade is rolled back, and this says why."""
