"""The backup's part on one swarm node other than the manager: `python3 -m hub_ext.backup.node backup|list|restore`,
run by `invoke backup` and `invoke restore` as a one-shot helper service placed on that node (hub_ext.helpers.onnode),
with the node's Docker socket. It finds the project's volumes on its node by their labels and runs restic there, in
a one-shot container of the backup image (pulled from the stack's registry), as the manager does for its own. Its
answer is one line (hub_ext.helpers.volumes.RESULT_PREFIX, JSON).

The repository, its password, restic's credentials and the registry's come in a swarm secret (SECRET, JSON), never
on the command line or in the service's environment, where `docker service inspect` shows them."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hub_ext.helpers.volumes import RESULT_PREFIX
from hub_ext.naming import PROJECT_LABEL

from . import plan
from .gateway import HubDocker, reason, sdk
from .job import BACKUP_ROLE, BackupError, ResticJob

log = logging.getLogger("hubforge-backup-node")
SECRET = "/run/secrets/hubforge-backup"  # where the helper finds its swarm secret
SECRET_FILE = "hubforge-backup"
CACHE_VOLUME = "backup-cache"  # <project>_backup-cache on each node: restic's cache there, kept between runs
RESTORE_WAIT = 60.0  # seconds a restore waits for a lab's container that Swarm is still stopping


def secret_document(
    repository: str, password: str, environment: Mapping[str, str], registry: Mapping[str, str]
) -> bytes:
    """The helper's swarm secret: the repository (a URL may hold credentials), its password, restic's credential
    variables and the stack registry's login (to pull the backup image on the node)."""
    return json.dumps(
        {
            "repository": repository,
            "password": password,
            "environment": {k: v for k, v in environment.items() if k in plan.REMOTE_ENVIRONMENT and v},
            "registry": {"username": registry["username"], "password": registry["password"]},
        }
    ).encode()


def backup_command(project: str, image: str, run: str, version: str, commit: str) -> list[str]:
    return [
        "python3",
        "-m",
        "hub_ext.backup.node",
        "backup",
        "--project",
        project,
        "--image",
        image,
        "--run",
        run,
        "--version",
        version,
        "--commit",
        commit,
    ]


def list_command(project: str) -> list[str]:
    return ["python3", "-m", "hub_ext.backup.node", "list", "--project", project]


def restore_command(project: str, image: str, snapshot: str, volumes: list[str]) -> list[str]:
    return [
        "python3",
        "-m",
        "hub_ext.backup.node",
        "restore",
        "--project",
        project,
        "--image",
        image,
        "--snapshot",
        snapshot,
        *volumes,
    ]


def this_node(docker: HubDocker) -> dict[str, str]:
    info = docker.client.info()
    return {"id": (info.get("Swarm") or {}).get("NodeID", ""), "hostname": info.get("Name", "")}


def pulled(docker: HubDocker, image: str, registry: Mapping[str, str]) -> str:
    """The backup image on this node: pulled from the stack's registry by its digest, unless it is here already (a
    restore after `invoke down`, with no registry, still runs from the copy a backup pulled)."""
    try:
        docker.client.api.inspect_image(image)
        return image
    except sdk().errors.NotFound:
        pass
    said = ""
    try:  # the daemon reports a failed pull in its stream, which the call does not raise for: the image is looked for
        said = docker.client.api.pull(
            image, auth_config={"username": registry["username"], "password": registry["password"]}
        )
        docker.client.api.inspect_image(image)
    except sdk().errors.APIError as exc:
        last = [line for line in str(said).splitlines() if line.strip()][-1:] or [reason(exc)]
        raise BackupError(f"the node could not pull the backup image {image}: {last[0][:300]}") from None
    return image


def job_for(docker: HubDocker, args: argparse.Namespace, secret: Mapping[str, Any], run: str = "") -> ResticJob:
    """restic on this node: the password put into its container (no host file of it here), the cache in a volume of
    the node, the node's own restic host and tags."""
    node = this_node(docker)
    cache = f"{args.project}_{CACHE_VOLUME}"
    if docker.volume(cache) is None:
        docker.create_volume(cache, "local", {}, {PROJECT_LABEL: args.project, **BACKUP_ROLE})
    return ResticJob(
        docker,
        args.project,
        "swarm",
        pulled(docker, args.image, secret["registry"]),
        plan.Repository(secret["repository"], Path(plan.PASSWORD_MOUNT), False),
        cache,
        "",  # the run folder is the manager's: not in a node's snapshot
        secret.get("environment") or {},
        lambda: None,  # no hub here
        password=secret["password"].encode(),
        host=plan.node_host(args.project, node["hostname"]),
        extra_tags=tuple(plan.run_tags(run, node["id"], node["hostname"])) if run else (),
        node=node,
    )


def backup(docker: HubDocker, args: argparse.Namespace, secret: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A snapshot of the project's volumes on this node; none (result "empty") when it holds none."""
    node = this_node(docker)
    volumes = plan.stack_volumes(docker.volumes({PROJECT_LABEL: args.project}))
    if not volumes:
        return [{"result": "empty", "node": node}]
    summary = job_for(docker, args, secret, args.run).snapshot(args.version, args.commit, None, "", log.info)
    kept = ("snapshot_id", "files_new", "files_changed", "files_unmodified", "data_added", "total_bytes_processed")
    return [
        {"result": "backed up", "node": node, "summary": {k: summary.get(k) for k in kept}, "volumes": len(volumes)}
    ]


def listing(docker: HubDocker, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The project's volumes on this node (what a backup would hold)."""
    node = this_node(docker)
    return [{"volume": v.name, "node": node} for v in plan.stack_volumes(docker.volumes({PROJECT_LABEL: args.project}))]


def restore(docker: HubDocker, args: argparse.Namespace, secret: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The named volumes of a snapshot of this node made again and filled from it."""
    job = job_for(docker, args, secret)
    document = json.loads(job.restic(plan.dump_argv(args.snapshot)))
    volumes = [plan.volume_of({"Name": v["name"], **_inspect_form(v)}) for v in document.get("volumes", [])]
    chosen = [v for v in volumes if v.name in set(args.volumes)]
    missing = sorted(set(args.volumes) - {v.name for v in chosen})
    if missing:
        raise BackupError(f"snapshot {args.snapshot[:8]} holds no volume {', '.join(missing)} of this node")
    job.recreate(chosen, wait=RESTORE_WAIT)
    job.put_back(args.snapshot, chosen, None)
    return [{"volume": v.name, "result": "restored"} for v in chosen]


def _inspect_form(volume: Mapping[str, Any]) -> dict[str, Any]:
    return {"Driver": volume.get("driver"), "Labels": volume.get("labels"), "Options": volume.get("options")}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(prog="python3 -m hub_ext.backup.node", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    made = commands.add_parser("backup", help="a snapshot of the project's volumes on this node")
    for option in ("--project", "--image", "--run", "--version"):
        made.add_argument(option, required=True)
    made.add_argument("--commit", default="")
    listed = commands.add_parser("list", help="the project's volumes on this node")
    listed.add_argument("--project", required=True)
    put = commands.add_parser("restore", help="volumes of this node made again from a snapshot")
    for option in ("--project", "--image", "--snapshot"):
        put.add_argument(option, required=True)
    put.add_argument("volumes", nargs="+")
    args = parser.parse_args(argv)
    docker = HubDocker()
    try:
        if args.command == "list":
            results = listing(docker, args)
        else:
            secret = json.loads(Path(SECRET).read_text())
            results = backup(docker, args, secret) if args.command == "backup" else restore(docker, args, secret)
    except (BackupError, OSError, ValueError, KeyError) as exc:
        print(RESULT_PREFIX + json.dumps([{"result": "failed", "reason": str(exc)}]), flush=True)
        return 1
    print(RESULT_PREFIX + json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
