"""Releases: versioned tags computed from data, safety checks, pushes with digest checks, provenance."""

from __future__ import annotations

import json
import logging
import platform
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__, proc
from ..errors import HubforgeError
from ..imagebuild.builder import Step
from ..imagebuild.keys import digest_bytes
from ..imagebuild.targets import SOURCE_DATE_EPOCH

log = logging.getLogger(__name__)

DOCKER_HUB = "docker.io"
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$")
RELEASED = ("hub", "proxy", "lab", "gpu-probe")  # plus every built lab flavour


@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    pre: str | None

    @property
    def stable(self) -> bool:
        return self.pre is None

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}" + (f"-{self.pre}" if self.pre else "")


def parse_version(text: str) -> Version:
    match = _SEMVER.match(text.strip().removeprefix("v"))
    if not match:
        raise HubforgeError(f"--version {text!r} is not a semantic version; use X.Y.Z or X.Y.Z-rc.1")
    major, minor, patch, pre = match.groups()
    return Version(int(major), int(minor), int(patch), pre)


def tags_for(version: Version, git12: str, flavor: str | None = None) -> list[str]:
    """X.Y.Z, X.Y, X and latest for stable versions; X.Y.Z-pre only for pre-releases; always sha-<git12>.

    A lab flavour adds its name as a suffix: 1.2.3-datascience, latest-datascience.
    """
    tags = [str(version)]
    if version.stable:
        tags += [f"{version.major}.{version.minor}", f"{version.major}", "latest"]
    tags.append(f"sha-{git12}")
    return [f"{tag}-{flavor}" for tag in tags] if flavor else tags


def repository(registry: str, namespace: str, name: str) -> str:
    """Where an image goes: `namespace/name` on Docker Hub, `registry/namespace/name` elsewhere."""
    if not re.fullmatch(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*", namespace):
        raise HubforgeError(f"--namespace {namespace!r} is not valid; use lower-case letters, digits, '.', '_' and '-'")
    if registry in ("", DOCKER_HUB, "index.docker.io"):
        return f"{namespace}/{name}"
    return f"{registry.rstrip('/')}/{namespace}/{name}"


@dataclass(frozen=True)
class Push:
    target: str  # hub, lab, lab-datascience, gpu-probe
    source: str  # local image ref (by key)
    repository: str
    tags: tuple[str, ...]  # version tags, then the key tag (remote cache): the full sha256 key

    @property
    def described_by(self) -> tuple[str, ...]:
        """The tags whose one digest the SBOM and provenance describe: the version tags, or, for an image pushed
        only under its key tag (the base; the swarm's registry), that tag."""
        return self.tags[:-1] or self.tags


def plan(steps: list[Step], registry: str, namespace: str, version: Version, git12: str) -> list[Push]:
    """Every tag to push. Released images get version tags plus their key tag; the base gets only its
    key tag, so that `invoke build --cache-from` elsewhere can skip the whole graph. A key tag in a registry is
    the full sha256 key (the local tag's 80 bits are too few for an address others can push to)."""
    pushes = []
    for step in steps:
        target = step.target
        name = target.repository.split("/", 1)[1]
        if target.name in RELEASED or target.name.startswith("lab-"):
            flavor = None if target.flavor == "default" else target.flavor
            tags = tuple(tags_for(version, git12, flavor)) + (step.remote_key,)
        else:
            tags = (step.remote_key,)
        pushes.append(Push(target.name, step.ref, repository(registry, namespace, name), tags))
    return pushes


# -- safety --------------------------------------------------------------------------------------------------
def git(root: Path, *args: str) -> str:
    return proc.run(["git", "-C", str(root), *args], what=f"git {' '.join(args)}").stdout.strip()


def check_tree(root: Path, version: Version, allow_dirty: bool) -> str:
    """The full git sha of HEAD; refuse a dirty tree or an untagged HEAD unless allowed."""
    sha = git(root, "rev-parse", "HEAD")
    if allow_dirty:
        return sha
    dirty = git(root, "status", "--porcelain", "--untracked-files=no")
    if dirty:
        raise HubforgeError(
            f"the git tree has uncommitted changes ({len(dirty.splitlines())} files); commit them or pass --allow-dirty"
        )
    tags = set(git(root, "tag", "--points-at", "HEAD").split())
    if not tags & {str(version), f"v{version}"}:
        raise HubforgeError(f"HEAD is not tagged v{version}; run `git tag v{version}` or pass --allow-dirty")
    return sha


# -- provenance ----------------------------------------------------------------------------------------------
def provenance(
    step: Step,
    base: Step,
    version: Version,
    git_sha: str,
    root: Path,
    tools: Mapping[str, str],
    built: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What was released and what a rebuild needs to give the same bytes. `built`: the image of the key as
    `invoke build` made it (its id and layer digests), which a rebuild at `git.sha` gives again."""
    target = step.target
    locks = {
        path: digest_bytes((root / path).read_bytes())
        for path in (target.python_lock, target.apt_lock, target.build_apt_lock)
        if path
    }
    flavor = "" if target.flavor == "default" else f" --flavor {target.flavor}"
    family = target.name.split("-")[0] if target.name.startswith("lab-") else target.name
    base_flag = base.manifest.build_args.get("mode", "")
    return {
        "image": target.name,
        "version": str(version),
        "key": step.key,
        "manifest": step.manifest.to_json(),
        "git": {"sha": git_sha},
        "base": {"key": base.key, "source": base.manifest.build_args},
        "locks": locks,
        "tools": dict(tools),
        "built": dict(built or {}),
        "rebuild": {
            "source_date_epoch": SOURCE_DATE_EPOCH,
            "steps": [
                f"git checkout {git_sha}",
                f"invoke build --target {family}{flavor} --base {base_flag} --no-cache",
                f"docker image inspect {target.repository}:{step.key} --format '{{{{.Id}}}} "
                f"{{{{json .RootFS.Layers}}}}'",
            ],
            "expect": (
                "the image id and layer digests under `built`; the released image has the same layers, and its "
                "config adds only the version and revision labels"
            ),
            "note": (
                "a bootstrapped base gives the same bytes from the same state of its Debian mirror; a pulled base "
                "is pinned by digest"
            ),
        },
    }


def tool_versions(docker_version: str) -> dict[str, str]:
    return {"hubforge": __version__, "python": platform.python_version(), "docker": docker_version}


def cache_index_path(dist: Path, version: Version) -> Path:
    """Where a release writes its remote cache index (hubforge.imagebuild.remote_cache), beside its provenance."""
    return dist / f"cache-index-{version}.json"


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    return path


Say = Callable[[str], None]
