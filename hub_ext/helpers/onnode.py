"""A one-shot helper service on one swarm node: an image of the stack's registry (the hub's), run once as root with
that node's Docker socket, its answer line read back from the service's logs. The spec and the reading of its end
are here, shared by the hub (hub_ext.spawn.swarm, async, for volume resets and sizes) and by `invoke` on the manager
(hubforge.docker_io, for backups and restores of the volumes on workers)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from docker.types import ContainerSpec, DriverConfig, Mount, Placement, Resources, RestartPolicy, TaskTemplate

from hub_ext.helpers.volumes import parse_answer
from hub_ext.naming import PROJECT_LABEL, ROLE_LABEL

FINISHED = ("complete", "failed", "rejected", "shutdown", "orphaned")  # a task that will not run again
HELPER_ROLE = "helper"
HELPER_MEMORY = 128 * 2**20
SOCKET = "/var/run/docker.sock"


def helper_labels(project: str) -> dict[str, str]:
    return {PROJECT_LABEL: project, ROLE_LABEL: HELPER_ROLE}


def helper_name(prefix: str) -> str:
    """A service name of its own: two helpers at the same moment must not collide."""
    return f"{prefix}-helper-{uuid.uuid4().hex[:12]}"


def helper_template(
    image: str,
    command: list[str],
    project: str,
    node: str,
    logs: DriverConfig,
    mounts: Sequence[Mount] = (),
    secrets: Sequence[Any] = (),
    environment: Mapping[str, str] | None = None,
) -> TaskTemplate:
    """The helper's task: `command` in `image` as root on a read-only root, on node `node` (its id) only, with that
    node's Docker socket (and `mounts`, `secrets`), never restarted, its log rotated like every other."""
    spec = ContainerSpec(
        image,
        command=command,
        user="0:0",
        read_only=True,
        labels=helper_labels(project),
        mounts=[Mount(target=SOCKET, source=SOCKET, type="bind"), *mounts],
        env=[f"{k}={v}" for k, v in {"PYTHONDONTWRITEBYTECODE": "1", **(environment or {})}.items()],
        secrets=list(secrets) or None,
    )
    return TaskTemplate(
        spec,
        restart_policy=RestartPolicy(condition="none"),
        placement=Placement(constraints=[f"node.id == {node}"]),
        resources=Resources(mem_limit=HELPER_MEMORY),
        log_driver=logs,
    )


def task_error(task: dict | None) -> str:
    status = (task or {}).get("Status") or {}
    return status.get("Err") or status.get("Message") or status.get("State") or "no task"


def task_state(tasks: list[dict]) -> str:
    """The state of a one-replica service's task ("" before Swarm made one)."""
    return ((tasks[0] if tasks else {}).get("Status") or {}).get("State", "")


def helper_answer(logs: str, node: str, tasks: list[dict]) -> list[dict[str, Any]]:
    """The helper's answer from its service's logs; a RuntimeError with the task's reason when it gave none."""
    answer = parse_answer(logs)
    if answer is None:
        raise RuntimeError(
            f"the helper on node {node[:12]} gave no answer ({task_state(tasks)}: "
            f"{task_error(tasks[0] if tasks else None)})"
        )
    return answer
