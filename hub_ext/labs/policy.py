"""Group policies, as data (issue 28, part 1): what a group's members get, read from the group's JupyterHub
`properties` (so the REST API reads and writes them), checked field by field, and merged for a user in several
groups.

A policy lives at `properties["hubforge"]` of a group. Every field is optional: a field a group does not set takes
the default policy's value. For a user in several groups, each value is the most generous any of them gives:

- memory, CPUs, processes, GPUs, the idle-cull timeout, the longest session and the storage quotas: the largest,
  where "unlimited" (`0` for a timeout or a session, `"all"` GPUs) beats any number;
- images: every image any group allows; the default image: that of the first group, by name, that sets one;
- environment: every group's variables, a later group (by name) winning a clash;
- group folders: each group that has one mounts it, read-write when that group says so;
- Docker rights (`docker_sock`, `docker_privileged`): granted when any group grants them.

The built-in groups are policies too: `docker-sock` grants the socket and `docker-privileged` runs the lab
privileged, unless an admin gave them a policy of their own.

Nothing here applies a policy: the spawners turn the merged Policy into container settings or service resources.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from hub_ext.naming import DOCKER_PRIVILEGED_GROUP, DOCKER_SOCK_GROUP, GROUPS_MOUNT
from hub_ext.settings.hub import parse_memory
from hub_ext.settings.parse import ConfigError

PROPERTY = "hubforge"  # the key of a group's JupyterHub properties that holds its policy
FOLDER_MODES = ("rw", "ro")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # a lab image's name in HUBFORGE_LAB_IMAGES (default, datascience)
_FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


class PolicyError(ConfigError):
    """A bad policy value: one line naming the group and the field."""


@dataclass(frozen=True)
class Policy:
    """One group's policy, or the merged one of a user. None: not set here (the default policy's value applies)."""

    mem_limit: str | None = None  # Docker syntax: 512M, 16G
    cpu_limit: float | None = None
    pids_limit: int | None = None
    gpus: int | str | None = None  # 0 (none), a count, or "all"
    images: tuple[str, ...] = ()  # lab images a member may pick (names in HUBFORGE_LAB_IMAGES); empty: not set
    default_image: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    folder: str | None = None  # this group's folder at /mnt/groups/<group>: "rw", "ro", or None (no folder)
    idle_timeout: int | None = None  # seconds; 0: never culled
    max_session: int | None = None  # seconds; 0: no limit
    home_quota: str | None = None  # Docker syntax sizes; None: no quota
    workspace_quota: str | None = None
    docker_sock: bool = False
    docker_privileged: bool = False


@dataclass(frozen=True)
class Effective:
    """What a user gets: the merged Policy, and the group folders they mount (group -> "rw" | "ro")."""

    policy: Policy
    folders: Mapping[str, str]
    groups: tuple[str, ...]  # the groups whose policies were merged, sorted


def size_bytes(value: str) -> int:
    """A Docker size (512M, 1.5G, 1073741824) in bytes, for comparing two of them."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", value.upper().rstrip("B"))
    if not match:
        raise ValueError(value)
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def _fail(group: str, name: str, raw: Any, hint: str) -> PolicyError:
    return PolicyError(f"policy of group {group!r}: {name}={raw!r} {hint}")


def _whole(group: str, name: str, raw: Any, minimum: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < minimum:
        raise _fail(group, name, raw, f"is not a whole number >= {minimum}")
    return raw


def _size(group: str, name: str, raw: Any) -> str:
    try:
        if not isinstance(raw, (str, int)) or isinstance(raw, bool):
            raise ConfigError("")
        return parse_memory(name, str(raw))
    except ConfigError:
        raise _fail(group, name, raw, "is not a size; use e.g. 512M, 4G or a byte count") from None


def parse_policy(group: str, properties: Mapping[str, Any] | None) -> Policy:
    """The policy in a group's properties, checked; a group without one gets its built-in meaning (or none).
    Raises PolicyError with one line naming the group and the field; unknown fields are refused too, so that a
    typo (`mem_limt`) is not silently ignored."""
    raw = (properties or {}).get(PROPERTY)
    if raw is None:
        return builtin_policy(group)
    if not isinstance(raw, Mapping):
        raise PolicyError(f"policy of group {group!r}: properties[{PROPERTY!r}] is not an object of policy fields")
    known = {f.name for f in fields(Policy)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise PolicyError(
            f"policy of group {group!r}: {unknown[0]!r} is not a policy field; use {', '.join(sorted(known))}"
        )
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if value is None:
            continue
        if name in ("mem_limit", "home_quota", "workspace_quota"):
            values[name] = _size(group, name, value)
        elif name == "cpu_limit":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise _fail(group, name, value, "is not a number of CPUs greater than 0")
            values[name] = float(value)
        elif name == "pids_limit":
            values[name] = _whole(group, name, value, 16)
        elif name == "gpus":
            if value != "all":
                _whole(group, name, value, 0)
            values[name] = value
        elif name in ("idle_timeout", "max_session"):
            values[name] = _whole(group, name, value, 0)
        elif name == "images":
            if not isinstance(value, list) or not all(isinstance(i, str) and _IMAGE.match(i) for i in value):
                raise _fail(group, name, value, 'is not a list of lab image names (e.g. ["default", "datascience"])')
            values[name] = tuple(value)
        elif name == "default_image":
            if not isinstance(value, str) or not _IMAGE.match(value):
                raise _fail(group, name, value, 'is not a lab image name (e.g. "datascience")')
            values[name] = value
        elif name == "environment":
            if not isinstance(value, Mapping) or not all(
                isinstance(k, str) and _ENV_NAME.match(k) and isinstance(v, str) for k, v in value.items()
            ):
                raise _fail(group, name, value, 'is not an object of NAME: "value" strings')
            values[name] = dict(value)
        elif name == "folder":
            if value not in FOLDER_MODES:
                raise _fail(group, name, value, 'is not valid; use "rw", "ro" or null (no folder)')
            if not _FOLDER_NAME.match(group):
                raise _fail(
                    group,
                    name,
                    value,
                    f"cannot be given: the folder would be {GROUPS_MOUNT}/{group}, and a "
                    "folder's name is letters, digits, '.', '_' and '-' (rename the group)",
                )
            values[name] = value
        elif name in ("docker_sock", "docker_privileged"):
            if not isinstance(value, bool):
                raise _fail(group, name, value, "is not true or false")
            values[name] = value
    policy = Policy(**values)
    if policy.default_image and policy.images and policy.default_image not in policy.images:
        raise PolicyError(
            f"policy of group {group!r}: default_image={policy.default_image!r} is not one of its images "
            f"{list(policy.images)}"
        )
    return policy


def builtin_policy(group: str) -> Policy:
    """What a group without a policy of its own means: the built-in groups' Docker rights, else nothing."""
    if group == DOCKER_SOCK_GROUP:
        return Policy(docker_sock=True)
    if group == DOCKER_PRIVILEGED_GROUP:
        return Policy(docker_privileged=True)
    return Policy()


def _largest(values: list[Any], unlimited: Any = None, key=lambda v: v) -> Any:
    if unlimited is not None and unlimited in values:
        return unlimited
    return max(values, key=key) if values else None


def merge(default: Policy, groups: Mapping[str, Policy]) -> Effective:
    """The policy of a user in `groups` (name -> policy): for each value the most generous of the groups that set
    it, else the default policy's (see the module's docstring for each rule)."""
    names = tuple(sorted(groups))
    ordered = [groups[name] for name in names]

    def set_values(attr: str) -> list[Any]:
        return [getattr(p, attr) for p in ordered if getattr(p, attr) is not None]

    def pick(attr: str, unlimited: Any = None, key=lambda v: v) -> Any:
        found = set_values(attr)
        return _largest(found, unlimited, key) if found else getattr(default, attr)

    images = tuple(sorted({image for p in ordered for image in p.images})) or default.images
    environment = dict(default.environment)
    for policy in ordered:
        environment.update(policy.environment)
    merged = replace(
        default,
        mem_limit=pick("mem_limit", key=size_bytes),
        cpu_limit=pick("cpu_limit"),
        pids_limit=pick("pids_limit"),
        gpus=pick("gpus", unlimited="all"),
        images=images,
        default_image=next((p.default_image for p in ordered if p.default_image), default.default_image),
        environment=environment,
        folder=None,
        idle_timeout=pick("idle_timeout", unlimited=0),
        max_session=pick("max_session", unlimited=0),
        home_quota=pick("home_quota", key=size_bytes),
        workspace_quota=pick("workspace_quota", key=size_bytes),
        docker_sock=default.docker_sock or any(p.docker_sock for p in ordered),
        docker_privileged=default.docker_privileged or any(p.docker_privileged for p in ordered),
    )
    folders = {name: groups[name].folder for name in names if groups[name].folder}
    return Effective(merged, folders, names)


def effective_policy(default: Policy, user_groups: Iterable[Any]) -> Effective:
    """The merged policy of a user from their JupyterHub groups (objects with `name` and `properties`)."""
    return merge(default, {group.name: parse_policy(group.name, group.properties) for group in user_groups})
