"""Backups and restores of a swarm stack: the manager's part as on the compose engine (the hub's database, the
settings, the volumes on the manager), and each other node's volumes by a one-shot helper service on that node
(hub_ext.backup.node), into one repository every node reaches. The snapshots of one `invoke backup` share a run tag;
a restore takes a run, or any of its snapshots."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hub_ext.backup import node as node_helper
from hub_ext.naming import USER_LABEL

from ..deploy.swarm import AUTH_DIR, node_summary, registry_credentials
from ..errors import HubforgeError
from . import plan
from .plan import Run, Snapshot, Volume
from .runner import Backups

log = logging.getLogger(__name__)


@dataclass
class NodeResult:
    """What one node's part of a backup gave: its name, and restic's summary (None: it holds no volumes)."""

    name: str
    summary: dict[str, Any] | None


class SwarmBackups(Backups):
    run_id: str = ""

    # -- the swarm ------------------------------------------------------------------------------------------------
    def manager_node(self) -> dict[str, str]:
        info = self.docker.client.info()
        return {"id": self.docker.swarm_node_id(), "hostname": info.get("Name", "")}

    def other_nodes(self) -> list[dict[str, Any]]:
        """Every node of the swarm but this manager, as `invoke status` summarises them."""
        here = self.docker.swarm_node_id()
        return [n for n in (node_summary(n) for n in self.docker.nodes()) if n["id"] != here]

    def node_name(self, node: dict[str, Any]) -> str:
        return f"{node['hostname']} ({node['id'][:12]})"

    def job_extras(self) -> dict[str, Any]:
        if not self.run_id:
            return {}
        node = self.manager_node()
        return {"extra_tags": tuple(plan.run_tags(self.run_id, node["id"], node["hostname"])), "node": node}

    # -- the helpers on other nodes -------------------------------------------------------------------------------
    def pinned(self, ref: str, what: str) -> str:
        pinned = self.stack.pinned(ref)
        if pinned is None:
            raise HubforgeError(
                f"{what} {ref} is not in the stack's registry, so no node can run it: run `invoke up --engine swarm` "
                "again on the manager (it pushes it), then try again"
            )
        return pinned

    def hub_image(self) -> str:
        try:
            ref = json.loads(self.stack.state_file.read_text())["images"]["hub"]
        except (OSError, ValueError, KeyError):
            raise HubforgeError(
                f"no record of stack {self.project}'s images ({self.stack.state_file}): run `invoke up --engine swarm` "
                "first"
            ) from None
        return self.pinned(ref, "the hub's image")

    def registry_auth(self) -> dict[str, str]:
        """The stack registry's login, given to this client (docker-py hands it to Swarm with each helper). With the
        stack down (a whole restore) the registry does not answer: the nodes then run the images they hold."""
        auth = registry_credentials(self.stack.options.run_dir / AUTH_DIR)
        try:
            self.docker.login(self.stack.registry, auth["username"], auth["password"])
        except HubforgeError as exc:
            log.info("no login to the stack's registry (%s): the nodes use the images they hold", exc)
        return auth

    def on_node(self, node: dict[str, Any], command: list[str], secret: bool) -> list[dict[str, Any]]:
        """A helper's answer from `node`; a refusal names the node and the helper's reason."""
        auth = self.registry_auth()
        document = None
        if secret:
            document = node_helper.secret_document(
                self.repo.location, self.repo.password_file.read_text().strip(), self.passed, auth
            )
        answer = self.docker.run_on_node(
            node["id"],
            self.hub_image(),
            command,
            self.project,
            (node_helper.SECRET_FILE, document) if document is not None else None,
        )
        failed = [r for r in answer if r.get("result") == "failed"]
        if failed:
            raise HubforgeError(f"on node {self.node_name(node)}: {failed[0].get('reason', 'failed')}")
        return answer

    # -- backup ---------------------------------------------------------------------------------------------------
    def holders(self, nodes: list[dict[str, Any]]) -> dict[str, int]:
        """Node name -> how many volumes of the project it holds, for each of `nodes` that holds any."""
        counts = {self.node_name(n): len(self.on_node(n, node_helper.list_command(self.project), False)) for n in nodes}
        return {name: count for name, count in counts.items() if count}

    def backup_run(self, version: str, commit: str, staging, status: Callable[[str], None]) -> tuple[str, list]:
        """One run: the manager's snapshot, then one on each other ready node that holds volumes of the project.
        A local repository is refused when another node holds any (no other node reaches it). Returns the run's id
        and each node's result; a node that is not ready is said, and left out."""
        self.check_stack()
        nodes = self.other_nodes()
        for node in nodes:
            if node["state"] != "ready":
                self.say(
                    f"[yellow]note[/]: node {self.node_name(node)} is {node['state']}: its volumes are not in this "
                    "backup"
                )
        ready = [n for n in nodes if n["state"] == "ready"]
        if self.repo.local and ready:
            status("looking for volumes on the other nodes")
            refusal = plan.local_repository_refusal(self.repo, self.holders(ready))
            if refusal:
                raise HubforgeError(refusal)
            ready = []  # none holds any: the manager's snapshot is the whole of it
        self.ensure_repository()
        image = self.pinned(self.image, "the backup image") if ready else ""
        self.run_id = secrets.token_hex(4)
        results = [NodeResult("manager", self.job.snapshot(version, commit, staging, str(staging), status))]
        for node in ready:
            status(f"backing up the volumes on node {self.node_name(node)}")
            command = node_helper.backup_command(self.project, image, self.run_id, version, commit)
            answer = self.on_node(node, command, True)[0]
            summary = None
            if answer.get("result") == "backed up":
                summary = {**answer.get("summary", {}), "volumes": answer.get("volumes", 0)}
            results.append(NodeResult(self.node_name(node), summary))
        return self.run_id, results

    # -- reading the repository -----------------------------------------------------------------------------------
    def runs(self) -> list[Run]:
        return plan.group_runs(self.snapshots())

    def node_of(self, document: dict[str, Any]) -> dict[str, Any] | None:
        """The node a worker's snapshot was taken on, as it is in the swarm now; None when it is not in it."""
        recorded = document.get("node") or {}
        return next((n for n in self.other_nodes() if n["id"] == recorded.get("id")), None)

    def absent(self, document: dict[str, Any], node: dict[str, Any] | None) -> str | None:
        """Why a worker's snapshot cannot be put back now (its node is gone or not ready), or None."""
        recorded = document.get("node") or {}
        name = f"{recorded.get('hostname', '?')} ({str(recorded.get('id', '?'))[:12]})"
        if node is None:
            return f"node {name} is not in the swarm"
        if node["state"] != "ready":
            return f"node {name} is {node['state']}"
        return None

    def restore_on_node(self, snapshot: Snapshot, node: dict[str, Any], volumes: list[Volume]) -> None:
        image = self.pinned(self.image, "the backup image")
        command = node_helper.restore_command(self.project, image, snapshot.id, [v.name for v in volumes])
        self.on_node(node, command, True)

    # -- restore --------------------------------------------------------------------------------------------------
    def restore_stack(self, wanted: str, force: bool, status: Callable[[str], None]) -> tuple[Run, int]:
        """The manager's part (its volumes, the settings) as on the compose engine; then each other node's volumes on
        that node, when it is in the swarm and ready (else one line says it was skipped, and why)."""
        run = plan.pick_run(self.runs(), wanted, self.project)
        count = self.restore_here(plan.manager_snapshot(run), force, status)
        for snapshot in run.workers:
            document = self.manifest(snapshot)
            node = self.node_of(document)
            problem = self.absent(document, node)
            if problem:
                self.say(
                    f"[yellow]skipped[/]: {problem}: its {len(document['volumes'])} volumes were not restored "
                    f"(`invoke restore {run.id} --user NAME` once it is back)"
                )
                continue
            status(f"restoring {len(document['volumes'])} volumes on node {self.node_name(node)}")
            self.restore_on_node(snapshot, node, document["volumes"])
            count += len(document["volumes"])
        return run, count

    def restore_user(
        self, wanted: str, user: str, kind: str | None, status: Callable[[str], None]
    ) -> tuple[Run, list[Volume]]:
        """One user's volumes, on the node whose snapshot holds them, while everyone else keeps working. A node that
        is gone or not ready is refused before anything is stopped."""
        run = plan.pick_run(self.runs(), wanted, self.project)
        documents = [(snapshot, self.manifest(snapshot)) for snapshot in run.snapshots]
        chosen = plan.user_volumes([v for _, d in documents for v in d["volumes"]], user, kind)
        names = {v.name for v in chosen}
        parts = [(s, d, [v for v in d["volumes"] if v.name in names]) for s, d in documents]
        parts = [(s, d, volumes) for s, d, volumes in parts if volumes]
        nodes = {}
        for snapshot, document, _ in parts:
            if snapshot is not run.manager:
                nodes[snapshot.id] = self.node_of(document)
                problem = self.absent(document, nodes[snapshot.id])
                if problem:
                    raise HubforgeError(
                        f"the volumes of {user} are on {problem}: bring it back, then restore again (nothing was "
                        "restored)"
                    )
        self.stop_lab(user, status)
        for snapshot, _, volumes in parts:
            status(f"making {len(volumes)} volumes of {user} again")
            if snapshot is run.manager:
                self.recreate(volumes)
                self.put_back(snapshot, volumes, False, status)
            else:
                self.restore_on_node(snapshot, nodes[snapshot.id], volumes)
        return run, chosen

    def lab_of(self, user: str) -> list[dict]:
        """The user's lab service (on whichever node it runs)."""
        services = self.stack.lab_services()
        return [{"Id": s["ID"]} for s in services if (s["Spec"].get("Labels") or {}).get(USER_LABEL) == user]

    def remove_lab(self, lab: dict) -> None:
        self.docker.remove_service(lab["Id"])
