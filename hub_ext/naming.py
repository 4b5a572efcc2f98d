"""The names hubforge gives things, shared by the host (hubforge) and the hub: a username's Docker container and
volume names, the labels on everything the stack makes, and the built-in groups."""

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
GROUPS_MOUNT = "/mnt/groups"  # a group's own folder is /mnt/groups/<group>, for its members only (group policies)
LAB_UID = 1000  # the lab image's user, `lab`: a new group folder is made its, so members can write it
# The built-in groups: their members' labs get the host's Docker socket, or run privileged (hub_ext.labs.runtime).
DOCKER_SOCK_GROUP = "docker-sock"
DOCKER_PRIVILEGED_GROUP = "docker-privileged"
BUILTIN_GROUPS = (DOCKER_SOCK_GROUP, DOCKER_PRIVILEGED_GROUP)


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


# The account `invoke upgrade`'s health gate starts a lab for, then deletes (hub_ext.hub.admincli canary)
CANARY_USER = "hubforge-canary"

PROJECT_LABEL = "hubforge.project"
ROLE_LABEL = "hubforge.role"  # what a labelled container or network is for: hub, netguard, lab-network...
USER_LABEL = "hubforge.user"  # the user a lab, its service or its volume belongs to
VOLUME_LABEL = "hubforge.volume"  # what a volume is: home, workspace, cache, shared, hub-data...
GROUP_LABEL = "hubforge.group"  # the group a group folder's volume belongs to
QUOTA_LABEL = "hubforge.quota"  # the size in bytes a quota'd volume was made with (hub_ext.helpers.quota)
GPUS_LABEL = "hubforge.gpus"  # the GPUs a lab holds, comma-separated indexes, so no other lab is handed them
ACCOUNT_LABEL = "hubforge.account"  # which hub user a user's volume was made for: account_id() of that user


def account_id(created) -> str:
    """One hub user among everyone who ever held the name: the time its row was made (JupyterHub's `created`).

    A user's volumes carry it, so a volume left by a deleted user is never mounted by the next owner of the name."""
    return created.strftime("%Y%m%dT%H%M%S%fZ") if created is not None else ""


def stale_owner(volume: dict | None, account: str) -> str | None:
    """The earlier account a user's volume was made for, when it is not `account`; None when it may be mounted.
    A volume without the label predates it, and is the user's."""
    made_for = ((volume or {}).get("Labels") or {}).get(ACCOUNT_LABEL)
    return made_for if made_for and account and made_for != account else None


def foreign_owner(volume: dict | None, project: str) -> str | None:
    """The other project that owns `volume` (Docker's inspect or listing entry), or None when it is ours.

    Each project owns its volumes: a hub never mounts, lists or deletes a volume labelled with another
    project, even when the names collide (two projects configured with one volume prefix). A volume
    without the label predates labelling and is treated as ours.
    """
    owner = ((volume or {}).get("Labels") or {}).get(PROJECT_LABEL)
    return owner if owner and owner != project else None


def default_volume_prefix(project: str) -> str:
    """`jupyterlab` for the default project (the names every existing stack already has), else
    `<project>-jupyterlab`: a second project's `alice` never gets the first one's volumes."""
    return "jupyterlab" if project == "hubforge" else f"{project}-jupyterlab"


def group_folder_volume(prefix: str, group: str) -> str:
    """A group's folder: `<prefix>_group_<escaped group>`. A user's volume is `<prefix>-<escaped user>_<kind>`, so
    the two never collide."""
    return f"{prefix}_group_{escape_username(group)}"


def lab_network_name(stack_network: str, username: str) -> str:
    """The lab's own network, shared with the hub only: `<stack network>-<escaped user>`.

    It starts with the stack network's name on purpose: Docker gives a container on several networks
    the default route of the network whose name sorts first, so the hub keeps its own network's route
    however many lab networks it joins.
    """
    return f"{stack_network}-{escape_username(username)}"
