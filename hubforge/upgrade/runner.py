"""`invoke upgrade` and `invoke rollback` of a compose stack: the new images got and checked, a backup, the database
migrated, the hub recreated while labs run on, a health gate, and the way back when the gate fails."""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from hub_ext.backup.job import BACKUP_ROLE
from hub_ext.backup.plan import UPGRADE_TAG
from hub_ext.naming import CANARY_USER, PROJECT_LABEL, ROLE_LABEL, USER_LABEL

from ..backup.plan import HUB_DATA_KIND, stack_volumes
from ..backup.runner import Backups
from ..deploy.engine import Stack
from ..errors import HubforgeError
from . import plan
from .plan import GateFailed, ImageSet, Record

log = logging.getLogger(__name__)
Status = Callable[[str], None]


@dataclass
class Upgrade:
    """One stack's upgrades: its stack (engine, run folder, Docker gateway) and its backups."""

    stack: Stack
    backups: Backups
    say: Callable[[str], None]
    metrics_token: str
    gate_timeout: float = plan.GATE_TIMEOUT

    @property
    def docker(self):
        return self.stack.docker

    @property
    def run_dir(self) -> Path:
        return self.stack.options.run_dir

    # -- what runs ------------------------------------------------------------------------------------------------
    def running_hub(self) -> dict:
        hub = self.stack.hub_container()
        if not hub or hub.get("State") != "running":
            raise HubforgeError(
                f"stack {self.stack.options.project} is not running: start it with `invoke up` (an upgrade moves a "
                "running stack; a stopped one takes the new images at its next `invoke up`)"
            )
        return hub

    # -- the new images -------------------------------------------------------------------------------------------
    def fetch(self, release: plan.Release, current: ImageSet, key: Any, registry: Any, status: Status) -> ImageSet:
        """Each image of `release` the stack needs, pulled by the digest its tag resolves to (checked against the
        signed provenance when a key is given) and checked to be that digest once pulled."""
        digests = {}
        for name, reference in release.wanted(current.lab_images).items():
            status(f"resolving {reference}")
            try:
                if key is not None:
                    from ..release import attest

                    digest = attest.verify_image(registry, reference, key).digest
                else:
                    digest = self.docker.remote_digest(reference)
            except HubforgeError as exc:
                if not name.startswith("lab:"):
                    raise
                raise HubforgeError(
                    f"release {release.version} has no {reference} for the lab flavour {name[4:]} this stack offers "
                    f"({str(exc).splitlines()[0]}); nothing was changed"
                ) from None
            exact = plan.pinned(reference, digest)
            status(f"pulling {exact}")
            self.docker.pull(exact)
            held = (self.docker.image(exact) or {}).get("RepoDigests") or []
            if exact not in held:
                raise HubforgeError(f"{exact} was pulled but Docker holds it as {held or 'no digest'}; nothing changed")
            digests[name] = digest
        return plan.release_set(current, release, digests)

    def schema_head(self, hub_image: str) -> str:
        """The database revision the new hub image expects; a hub image that cannot say is refused here, before
        anything stops."""
        code, out = self.docker.run_once(
            hub_image,
            ["python3", "-c", plan.HEAD_SCRIPT],
            {"network_mode": "none", "read_only": True, "cap_drop": ["ALL"]},
            {PROJECT_LABEL: self.stack.options.project, ROLE_LABEL: "upgrade"},
            timeout=120,
        )
        if code != 0:
            raise HubforgeError(
                f"the new hub image {hub_image} cannot run ({out.strip()[-300:] or code}); nothing was changed"
            )
        return out.strip().splitlines()[-1]

    def schema_now(self, hub: dict) -> str:
        code, out = self.docker.exec_output(hub["Id"], ["python3", "-c", plan.REVISION_SCRIPT])
        if code != 0:
            raise HubforgeError(f"the hub could not read its database's revision: {out.strip()[-300:]}")
        return out.strip().splitlines()[-1]

    def migrate(self, hub_image: str, status: Status) -> None:
        """`jupyterhub upgrade-db` with the new hub image on the data volume, the hub's container gone."""
        status("migrating the hub's database (jupyterhub upgrade-db)")
        volumes = stack_volumes(self.docker.volumes({PROJECT_LABEL: self.stack.options.project}))
        data = next((v.name for v in volumes if v.kind == HUB_DATA_KIND), None)
        if data is None:
            raise GateFailed("the hub's data volume was not found")
        code, out = self.docker.run_once(
            hub_image,
            plan.UPGRADE_DB_ARGV,
            {"network_mode": "none", "cap_drop": ["ALL"], "binds": [f"{data}:{plan.HUB_DATA}:rw"]},
            {PROJECT_LABEL: self.stack.options.project, ROLE_LABEL: "upgrade"},
            user="1000:1000",
            timeout=600,
        )
        if code != 0:
            raise GateFailed(f"jupyterhub upgrade-db failed: {out.strip()[-300:] or code}")

    # -- switching ------------------------------------------------------------------------------------------------
    def switch(self, target: ImageSet, status: Status) -> dict[str, Any]:
        """Render the stack with `target`'s images and let the engine recreate what changed (the hub, and the
        services of its image); labs are no service of it and run on. Returns the stack's record as rendered
        (stack.json); the hub of `target` may not run yet (Swarm makes it some time after `stack deploy` returns)."""
        state = self.stack.prepare(target.images, target.lab_images)
        self.stack.start(state)
        self.stack.distribute(target.images, target.lab_images, status)  # swarm: into the registry every node pulls
        return state

    # -- the gate -------------------------------------------------------------------------------------------------
    def gate(self, state: Mapping[str, Any], status: Status) -> dict[str, float]:
        """The hub of the stack as `switch` rendered it (`state`, its stack.json) runs its image and is healthy, its
        metrics answer, and a canary lab starts and answers through the proxy. Raises GateFailed naming the step;
        returns each step's seconds."""
        timings = {}
        started = time.monotonic()
        try:
            self.stack.wait_healthy(status, timeout=self.gate_timeout, image=state["images"]["hub"])
        except HubforgeError as exc:
            raise GateFailed(f"the new hub did not become healthy: {str(exc).splitlines()[0]}") from None
        timings["healthy"] = time.monotonic() - started
        status("health gate: the hub's metrics")
        self.check_metrics(plan.metrics_url(state))
        timings["metrics"] = time.monotonic() - started
        status("health gate: a canary lab starts and answers")
        self.clear_canary()
        hub = self.stack.hub_container()
        code, out = self.docker.exec_output(hub["Id"], ["python3", "-m", "hub_ext.hub.admincli", "canary"])
        try:
            result = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise GateFailed(f"the canary did not run: {out.strip()[-300:]}") from None
        if code != 0 or not result.get("ok"):
            raise GateFailed(f"canary lab, step {result.get('step', '?')}: {result.get('reason', out.strip()[-200:])}")
        if result.get("skipped"):
            self.say(f"[yellow]note[/]: the canary was skipped: {result['skipped']}")
        timings["canary"] = time.monotonic() - started
        return timings

    def check_metrics(self, url: str) -> None:
        session = requests.Session()
        session.trust_env = False  # the hub's own address on this machine: never through a proxy
        headers = {"Authorization": f"token {self.metrics_token}"} if self.metrics_token else {}
        try:
            with warnings.catch_warnings():  # the stack's own certificate (self-signed unless one was supplied)
                warnings.simplefilter("ignore")
                answer = session.get(url, headers=headers, timeout=20, verify=False)
        except requests.RequestException as exc:
            raise GateFailed(f"the hub's metrics did not answer: {type(exc).__name__}") from None
        if answer.status_code != 200 or "jupyterhub_" not in answer.text:
            raise GateFailed(f"the hub's metrics answered {answer.status_code}")

    # -- the whole of it ------------------------------------------------------------------------------------------
    def upgrade(self, current: ImageSet, target: ImageSet, status: Status) -> tuple[Record, dict[str, float]]:
        """Back up, migrate, switch, gate; when anything after the backup fails, roll back by itself and raise what
        failed (and, if the rollback failed too, that)."""
        hub = self.running_hub()
        status("checking the new hub image")
        head = self.schema_head(target.images["hub"])
        revision = self.schema_now(hub)
        from .. import __version__

        with tempfile.TemporaryDirectory(prefix="hubforge-upgrade-") as staging:
            summary = self.backups.backup(__version__, "", Path(staging), status, (UPGRADE_TAG,))
        record = Record(current, target, summary.get("snapshot_id", ""))
        record.save(self.run_dir)
        self.say(f"  backed up: snapshot {record.snapshot[:8]} (the way back)")
        timings: dict[str, float] = {}
        try:
            started = time.monotonic()
            if plan.needs_migration(revision, head):
                status("stopping the hub for its database's migration")
                with self.backups_paused(status):  # no backup reads the database halfway through its migration
                    self.stack.remove_hub()
                    self.migrate(target.images["hub"], status)
                record.migrated = True
                record.save(self.run_dir)
            status("recreating the hub with the new images (labs keep running)")
            self.wait_for_backups(status)  # the backup service runs the hub's image: it is recreated too
            state = self.switch(target, status)
            timings = {f"gate.{k}": v for k, v in self.gate(state, status).items()}
            timings["switch"] = time.monotonic() - started
        except Exception as exc:  # noqa: BLE001 -- whatever failed (Docker's errors too), the way back is the same
            reason = one_line(exc)
            self.say(f"[red]✗[/] the upgrade to {target.version} failed: {reason}; rolling back")
            try:
                restored = self.rollback(record, reason, status)
            except Exception as again:  # noqa: BLE001
                raise HubforgeError(
                    f"upgrade to {target.version} failed ({reason}), and its rollback failed too ({one_line(again)}): "
                    "fix that and run `invoke rollback`"
                ) from None
            database = f"the hub's database of snapshot {record.snapshot[:8]}" if restored else "its database as is"
            raise HubforgeError(
                f"upgrade to {target.version} failed ({reason}); rolled back to {current.version}, with {database}: "
                "`invoke logs hub` shows the failed start"
            ) from None
        record.state = "done"
        record.save(self.run_dir)
        return record, timings

    def wait_for_backups(self, status: Status) -> None:
        """Until no backup of the project runs (a scheduled one, or another `invoke backup`): its restic container
        holds the hub's data volume, which a rollback replaces and a migration rewrites."""
        deadline = time.monotonic() + BACKUP_WAIT
        labels = {PROJECT_LABEL: self.stack.options.project, **BACKUP_ROLE}
        while self.docker.containers(labels, all=False):
            if time.monotonic() > deadline:
                raise HubforgeError(f"a backup of the project still runs after {BACKUP_WAIT} s; try again once it ends")
            status("waiting for the backup under way to finish")
            time.sleep(1)

    @contextlib.contextmanager
    def backups_paused(self, status: Status) -> Iterator[None]:
        """No backup runs inside the block: one under way ends first (stopping it could leave restic's lock), then the
        backup service is frozen so that it starts none, and thawed after."""
        self.wait_for_backups(status)
        self.stack.pause_backups()
        try:
            self.wait_for_backups(status)  # one that started in between
            yield
        finally:
            self.stack.resume_backups()

    def clear_canary(self) -> None:
        """What a canary cut short left on this host (its lab, its volumes): the next canary would find volumes made
        for an account that no longer exists, and the spawner refuses those."""
        labels = {PROJECT_LABEL: self.stack.options.project, USER_LABEL: CANARY_USER}
        for container in self.docker.containers(labels):
            self.docker.remove_container(container["Id"])
        for volume in self.docker.volumes(labels):
            self.docker.remove_volume(volume["Name"])

    def rollback(self, record: Record, reason: str, status: Status) -> bool:
        """Back to `record.before`: the hub's container gone, its data volume from the upgrade's snapshot, the previous
        images, a healthy hub. Labs run on throughout. Returns whether the database was restored."""
        status(f"rolling back: finding snapshot {record.snapshot[:8]}")
        snapshot, volumes = self.backups.hub_data_of(record.snapshot)  # before anything stops
        restored = True
        with self.backups_paused(status):
            status("rolling back: stopping the new hub")
            self.stack.remove_hub()
            try:
                self.backups.recreate(volumes)  # checks that nothing uses them before it removes any
            except HubforgeError as exc:
                if record.migrated:  # the previous JupyterHub refuses a database of a newer schema
                    raise HubforgeError(
                        f"the hub's database could not be replaced ({one_line(exc)}); the previous hub cannot start "
                        "on the migrated one, so the stack has no hub now"
                    ) from None
                # the schema did not move: the previous hub starts on the database as the new one left it
                self.say(f"[yellow]the hub's database was not restored[/] ({one_line(exc)}); it is kept as is")
                restored = False
            if restored:
                status(f"rolling back: the hub's database from snapshot {snapshot.short_id}")
                try:
                    self.backups.put_back(snapshot, volumes, False, status)
                except HubforgeError as exc:
                    raise HubforgeError(
                        f"restoring the hub's database from snapshot {snapshot.short_id} failed ({one_line(exc)}); its "
                        "data volume is incomplete, so the stack has no hub now"
                    ) from None
        status(f"rolling back: the images of {record.before.version}")
        self.switch(record.before, status)
        self.stack.wait_healthy(status, timeout=self.gate_timeout, image=record.before.images["hub"])
        self.clear_canary()
        record.state = "rolled back"
        record.reason = reason
        record.save(self.run_dir)
        return restored


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


BACKUP_WAIT = 1800  # seconds a rollback waits for a backup under way, which reads the volume it replaces


def upgrade_summary(record: Record, timings: Mapping[str, float]) -> str:
    gate = ", ".join(f"{k.removeprefix('gate.')} {v:.1f}s" for k, v in timings.items() if k.startswith("gate."))
    return (
        f"{record.before.version} -> {record.after.version}; snapshot {record.snapshot[:8]}"
        + ("; database migrated" if record.migrated else "; database schema unchanged")
        + (f"; gate passed ({gate})" if gate else "")
    )
