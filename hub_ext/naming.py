"""The one place that turns a hub username into Docker container and volume names."""

from __future__ import annotations

import string
from dataclasses import dataclass

from escapism import escape

# DockerSpawner's own escaping (dockerspawner 12+): DNS-label safe, '-' is the escape character,
# so '-' itself becomes '-2d' and no two usernames collide. `first.last` -> `first-2elast`.
SAFE_CHARS = frozenset(string.ascii_lowercase + string.digits)
VOLUME_KINDS = ("home", "workspace", "cache")
MOUNTS = {"home": "/home/lab", "workspace": "/home/lab/workspace", "cache": "/home/lab/.cache"}
SHARED_MOUNT = "/mnt/shared"


def escape_username(name: str) -> str:
    """Escape exactly as DockerSpawner does; DockerSpawner.escape is set to this function."""
    return escape(name, SAFE_CHARS, escape_char="-").lower()


@dataclass(frozen=True)
class UserNames:
    """Names of one user's lab container and volumes."""

    container: str
    volumes: dict[str, str]  # kind -> volume name

    def mounts(self) -> dict[str, str]:
        """volume name -> mount point inside the lab."""
        return {self.volumes[kind]: MOUNTS[kind] for kind in VOLUME_KINDS}


def user_names(prefix: str, username: str) -> UserNames:
    escaped = escape_username(username)
    return UserNames(
        container=f"{prefix}-{escaped}",
        volumes={kind: f"{prefix}-{escaped}_{kind}" for kind in VOLUME_KINDS},
    )
