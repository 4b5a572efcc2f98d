"""Measuring and removing a user's volumes: one rule each, run by the hub on its own node and, on Swarm, by a
one-shot helper service on the node that holds them (`python3 -m hub_ext.helpers.volumes sizes|remove ...`, which prints
one JSON line). `own` hands a new group folder to the lab's user, in a one-shot root helper of either engine.

A volume of another project is never removed, even when the names collide (naming.foreign_owner).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from hub_ext.naming import foreign_owner

RESULT_PREFIX = "hubforge-volumes: "  # the helper's answer line in its service's logs


FOLDER = "/folder"  # where a one-shot helper mounts the volume it works on


def own_command(uid: int) -> list[str]:
    """The helper's command that makes the volume mounted at FOLDER the lab user's (`uid`): once, as root, on a new
    group folder; files made in it later keep its group (setgid)."""
    return ["python3", "-m", "hub_ext.helpers.volumes", "own", "--uid", str(uid), FOLDER]


def own(path: str, uid: int) -> list[dict[str, Any]]:
    os.chown(path, uid, uid)
    os.chmod(path, 0o2775)
    return [{"result": "owned"}]


Gateway = Callable[..., Awaitable[Any]]  # DockerSpawner.docker: (APIClient method name, *args) -> its result


async def remove_volume(docker: Gateway, name: str, project: str) -> dict[str, Any]:
    """Delete one volume through the Docker gateway of this node; a result, never an exception."""
    try:
        owner = foreign_owner(await docker("inspect_volume", name), project)
        if owner:
            return {"volume": name, "result": "failed", "reason": f"it belongs to the hubforge project {owner!r}"}
        await docker("remove_volume", name)
        return {"volume": name, "result": "removed"}
    except Exception as exc:  # noqa: BLE001 -- docker.errors.NotFound / APIError
        if getattr(getattr(exc, "response", None), "status_code", None) == 404:
            return {"volume": name, "result": "not found"}
        return {"volume": name, "result": "failed", "reason": str(getattr(exc, "explanation", None) or exc)}


def measure(
    found: list[dict[str, Any]], usage: dict[str, Any], wanted: list[str], project: str
) -> dict[str, int | None]:
    """Which of `wanted` exist and are this project's (from a volume listing), with their sizes in bytes from a
    `docker system df` answer (None: not measured yet, e.g. a volume made since the measurement)."""
    existing = {v["Name"] for v in found if not foreign_owner(v, project)} & set(wanted)
    measured = {}
    for volume in usage.get("Volumes") or []:
        size = (volume.get("UsageData") or {}).get("Size", -1)
        measured[volume["Name"]] = size if size >= 0 else None
    return {name: measured.get(name) for name in sorted(existing)}


def parse_answer(logs: str) -> list[dict[str, Any]] | None:
    """The helper's results from its logs, or None when it printed none (it failed before answering)."""
    for line in reversed(logs.splitlines()):
        _, marker, payload = line.partition(RESULT_PREFIX)
        if marker:
            try:
                results = json.loads(payload)
            except ValueError:
                return None
            return results if isinstance(results, list) else None
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m hub_ext.helpers.volumes", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    remove = commands.add_parser("remove", help="remove the named volumes of one project on this node")
    remove.add_argument("--project", required=True)
    remove.add_argument(
        "--wait",
        type=float,
        default=30.0,
        help="seconds to wait for a volume in use by a stopping container (the lab's service was just removed)",
    )
    remove.add_argument("names", nargs="+")
    sizes = commands.add_parser(
        "sizes", help="which of the named volumes of one project exist on this node, with their sizes"
    )
    sizes.add_argument("--project", required=True)
    sizes.add_argument("names", nargs="+")
    owned = commands.add_parser("own", help="make a folder the lab user's (a new group folder), setgid")
    owned.add_argument("--uid", type=int, required=True)
    owned.add_argument("path")
    args = parser.parse_args(argv)
    if args.command == "own":
        print(RESULT_PREFIX + json.dumps(own(args.path, args.uid)), flush=True)
        return 0

    import docker  # the helper's own node: its socket is mounted at the default path

    api = docker.APIClient(timeout=60)
    if args.command == "sizes":
        found = (api.volumes(filters={"name": args.names}) or {}).get("Volumes") or []
        measured = measure(found, api.df(), args.names, args.project)
        print(
            RESULT_PREFIX + json.dumps([{"volume": name, "size": size} for name, size in measured.items()]), flush=True
        )
        return 0

    async def gateway(method: str, *call_args: Any) -> Any:
        return getattr(api, method)(*call_args)

    async def remove_when_free(name: str) -> dict[str, Any]:
        deadline = time.monotonic() + args.wait
        while True:
            result = await remove_volume(gateway, name, args.project)
            if "in use" not in result.get("reason", "") or time.monotonic() > deadline:
                return result
            await asyncio.sleep(0.5)

    async def remove_all() -> list[dict[str, Any]]:
        return [await remove_when_free(name) for name in args.names]

    results = asyncio.run(remove_all())
    print(RESULT_PREFIX + json.dumps(results), flush=True)
    return 0 if all(r["result"] != "failed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
