"""Labs as Swarm services: DockerSpawner's SwarmSpawner, given the same per-user decisions (hub_ext.labs.runtime)
that the compose engine's containers get, translated into a service spec.

What a container has and a service has not is said here, once: privileged mode (the docker-privileged
group is refused with one line), CPU weight and no-new-privileges. Everything else carries over.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import time
from typing import Any

from docker.errors import APIError
from docker.types import (
    DriverConfig,
    Healthcheck,
    Mount,
    Placement,
    Resources,
    RestartPolicy,
)
from dockerspawner import SwarmSpawner
from traitlets import Dict, Integer, Unicode

from hub_ext.helpers.onnode import (
    FINISHED,
    helper_answer,
    helper_labels,
    helper_name,
    helper_template,
    task_error,
    task_state,
)
from hub_ext.helpers.volumes import FOLDER, own_command
from hub_ext.labs.gpu import NVIDIA_CAPABILITIES
from hub_ext.labs.networks import hub_address, overlay_spec, proxy_address
from hub_ext.labs.runtime import LOG_DRIVER, default_log_options
from hub_ext.naming import (
    DOCKER_PRIVILEGED_GROUP,
    LAB_UID,
    PROJECT_LABEL,
    USER_LABEL,
)
from hub_ext.settings.hub import default_of
from hub_ext.spawn.spawner import SIZES_TTL_S, HubforgeSpawner, not_found

GPU_RESOURCE = "NVIDIA-GPU"  # the nodes' generic resource (dockerd's node-generic-resources), as NVIDIA documents it
WAITING = {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready"}
STARTED = {
    "starting",
    "running",
}  # the container runs ("starting" until its health check passes): the spawner's own readiness check follows
ANCHOR_SECONDS = 30
IMAGE_MAP = (
    "/srv/jupyterhub/registry/images.json"  # written by `invoke up` after it pushed the images (hubforge.deploy.swarm)
)
REGISTRY_AUTH = (
    "/run/secrets/registry_auth"  # the registry's credentials, a swarm secret of the hub (stack/compose.yml.j2)
)
HELPER_TIMEOUT = 120
NODE_CHECK_SECONDS = 2.0
_REMOTE_SIZES: dict[
    tuple[str, tuple[str, ...]], tuple[float, asyncio.Task]
] = {}  # (node, names) -> (when, measurement)
_LOGGED_IN: set[tuple[int, str]] = set()  # (id of the Docker client, registry) that the client holds credentials for


_FOLDERS_PREPARED: set[tuple[str, str]] = set()  # (node, or "shared", group folder volume) made and owned
# path -> ((inode, size, mtime), its mapping): images.json read again only when `invoke up` replaced or changed it
_IMAGE_MAPS: dict[str, tuple[tuple[int, int, int], dict[str, str]]] = {}


class SwarmRefused(RuntimeError):
    """What Swarm cannot do for this user, said in one line on the spawn page."""


def service_mounts(
    volumes: dict[str, dict[str, str]],
    tmpfs: dict[str, str],
    labels: dict[str, dict[str, str]],
    driver: DriverConfig | None,
) -> list[Mount]:
    """Mounts of a lab service: named volumes (labelled, from `driver` when shared storage is on), host paths
    as binds (the Docker socket), and a tmpfs for each tmpfs path of the host config."""
    mounts = []
    for source, spec in volumes.items():
        read_only = spec.get("mode") == "ro"
        if source.startswith("/"):
            mounts.append(Mount(target=spec["bind"], source=source, type="bind", read_only=read_only))
        else:
            mounts.append(
                Mount(
                    target=spec["bind"],
                    source=source,
                    type="volume",
                    read_only=read_only,
                    labels=labels.get(source),
                    driver_config=driver,
                )
            )
    for target in tmpfs:
        mounts.append(Mount(target=target, source=None, type="tmpfs", tmpfs_mode=0o1777))
    return mounts


def container_spec_options(host_config: dict[str, Any], labels: dict[str, str]) -> dict[str, Any]:
    """ContainerSpec arguments for what the host config asks; refuses what a service cannot be."""
    if host_config.get("privileged"):
        raise SwarmRefused(
            f"the {DOCKER_PRIVILEGED_GROUP} group cannot work on the swarm engine (Swarm services are never "
            "privileged): an admin removes the user from it, or runs the compose engine"
        )
    options: dict[str, Any] = {"labels": dict(labels), "read_only": bool(host_config.get("read_only"))}
    if host_config.get("cap_drop"):
        options["cap_drop"] = list(host_config["cap_drop"])
    if host_config.get("group_add"):
        options["groups"] = list(host_config["group_add"])
    if host_config.get("sysctls"):
        options["sysctls"] = dict(host_config["sysctls"])
    return options


def service_resources(mem_limit: Any, cpu_limit: float | None, pids_limit: int, gpus: int) -> Resources:
    """Limits of a lab service; GPUs as the nodes' generic resource, so the scheduler places GPU labs on GPU nodes."""
    resources = Resources(
        mem_limit=mem_limit or None,
        cpu_limit=int(cpu_limit * 1e9) if cpu_limit else None,
        generic_resources={GPU_RESOURCE: gpus} if gpus else None,
    )
    resources.setdefault("Limits", {})["Pids"] = pids_limit  # docker-py's Resources has no argument for it (API 1.41)
    return resources


def node_gpus(node: dict) -> int:
    generic = ((node.get("Description") or {}).get("Resources") or {}).get("GenericResources") or []
    return sum(
        int((r.get("DiscreteResourceSpec") or {}).get("Value", 0))
        for r in generic
        if (r.get("DiscreteResourceSpec") or {}).get("Kind") == GPU_RESOURCE
    )


def image_map_of(path: str) -> dict[str, str]:
    """images.json at `path` ({} when it is missing or unreadable), read once for as long as the file stays the same:
    every home page asks it about each running lab's image. `invoke up` replaces the file whole (a new inode)."""
    try:
        info = os.stat(path)
    except OSError:
        return {}
    seen = (info.st_ino, info.st_size, info.st_mtime_ns)
    cached = _IMAGE_MAPS.get(path)
    if cached is not None and cached[0] == seen:
        return cached[1]
    try:
        with open(path, encoding="utf-8") as found:
            loaded = json.load(found)
    except (OSError, ValueError):
        return {}
    pinned = {k: v for k, v in loaded.items() if isinstance(v, str)} if isinstance(loaded, dict) else {}
    _IMAGE_MAPS[path] = (seen, pinned)
    return pinned


def least_loaded(nodes: list[dict], running: list[dict], gpus: int = 0) -> str:
    """The node a new lab's first task goes to: ready and active, with the GPUs asked for, and running the fewest
    tasks (Swarm's own spread, which counts every service's tasks). Ties go to the lowest id, so the choice is
    stable."""
    eligible = [
        n
        for n in nodes
        if (n.get("Status") or {}).get("State") == "ready"
        and (n.get("Spec") or {}).get("Availability") == "active"
        and node_gpus(n) >= gpus
    ]
    if not eligible:
        need = f" with {gpus} {GPU_RESOURCE}" if gpus else ""
        raise SwarmRefused(f"no node of the swarm is ready and active{need}: an admin checks `invoke status`")
    load: dict[str, int] = {}
    for task in running:
        load[task.get("NodeID", "")] = load.get(task.get("NodeID", ""), 0) + 1
    return min(eligible, key=lambda n: (load.get(n["ID"], 0), n["ID"]))["ID"]


class HubforgeSwarmSpawner(HubforgeSpawner, SwarmSpawner):
    """Each lab a one-replica service on its own attachable overlay network, shared with the hub only."""

    creates_volumes = False  # Docker makes them, labelled from the mounts, on the node the lab lands on
    network_prefix = 28  # an overlay also holds each node's load-balancer address, and the hub's fixed one
    network_options = {"driver": "overlay", "attachable": True, "scope": "swarm"}

    def ipam_pool(self, subnet) -> dict[str, str]:
        return overlay_spec(subnet)

    pending_timeout = Integer(
        60,
        config=True,
        help=(
            "Seconds a lab's task may stay pending (no node can take it: resources, GPUs, constraints) before the "
            "start fails with Swarm's reason."
        ),
    )
    stop_wait = Integer(30, config=True, help="Seconds a stop waits for the lab's container on this node to be gone.")
    proxy_service = Unicode(
        "",
        config=True,
        help="""The proxy's service (<project>_proxy), whose container on this node joins each lab's network beside
        the hub, at a fixed address (hub_ext.labs.networks.proxy_address). Empty: the proxy runs in the hub.""",
    )
    gpus_per_lab = Integer(
        1, min=1, config=True, help=f"How many {GPU_RESOURCE} generic resources a lab asks for when GPUs are on."
    )
    lab_gpus = Integer(0, help="The GPUs this start asks for (0 without the GPU mode).")
    node_id = Unicode(
        "", help="The node that holds this user's volumes (node-pinned storage), kept in the hub's database."
    )
    volume_driver = Unicode(
        default_of("LAB_VOLUME_DRIVER"),
        config=True,
        help="""Shared storage (LAB_VOLUME_DRIVER): the volume driver of every lab volume, so labs can run on any
        node (local with NFS options, or a plugin). Empty: node-pinned storage, each user's lab stays on the node
        with their volumes.""",
    )
    volume_driver_options = Dict(
        default_value=default_of("LAB_VOLUME_DRIVER_OPTS"),
        config=True,
        help="The driver's options (LAB_VOLUME_DRIVER_OPTS), e.g. type, o and device for NFS.",
    )
    image_map = Unicode(
        IMAGE_MAP, config=True, help="The JSON file mapping each built image to its digest in the stack's registry."
    )
    registry_auth = Unicode(
        REGISTRY_AUTH,
        config=True,
        help=(
            "The stack's registry credentials (JSON: username, password), given to Swarm with every service of its "
            "images."
        ),
    )

    # -- state: the pin outlives stops ------------------------------------------------------------------
    def load_state(self, state):
        super().load_state(state)
        self.node_id = state.get("node_id", "")

    def get_state(self):
        state = super().get_state()
        if self.node_id:
            state["node_id"] = self.node_id
        return state

    def clear_state(self):
        node = self.node_id
        super().clear_state()
        self.node_id = node  # where the volumes are does not change when the lab stops

    def forget_node(self) -> str:
        """An admin's decision for a user whose node is gone: the next start goes anywhere, with new volumes."""
        node, self.node_id = self.node_id, ""
        return node

    @property
    def pinned(self) -> bool:
        return not self.volume_driver

    # -- the spec ---------------------------------------------------------------------------------------
    @property
    def default_gpus(self) -> int | str | None:
        return self.gpus_per_lab

    async def hand_out_gpus(self, wanted: int | str | None) -> list[str] | str | None:
        """Swarm hands GPUs out itself: a lab's service asks for that many generic resources, and the scheduler
        places it on a node with them free and gives it those. "all" asks for gpus_per_lab (a service cannot ask for
        a node's every GPU). No device requests: a service has none."""
        if not self.gpu.enabled or wanted in (None, 0):
            self.lab_gpus = 0
        else:
            self.lab_gpus = self.gpus_per_lab if wanted == "all" else int(wanted)
        return None

    async def ensure_quota_volumes(self, wanted: dict[str, tuple[dict[str, str], int]]) -> set[str]:
        raise SwarmRefused(
            f"storage quotas are not available on the swarm engine yet ({', '.join(sorted(wanted))}): an admin "
            "removes home_quota and workspace_quota from the policy of this user's groups, or runs the compose engine"
        )

    async def ensure_group_folder(self, volume: str, group: str) -> None:
        """Made on the node the lab lands on, when its service is made (create_object): only then is the node known."""

    async def prepare_group_folders(self, node: str) -> None:
        """Each group folder this lab mounts, made on `node` (or, with shared storage, once for all nodes) and handed
        to the lab's user by a one-shot helper there; remembered, so a folder is prepared once per node."""
        driver = DriverConfig(self.volume_driver, self.volume_driver_options or None) if self.volume_driver else None
        for volume, group in sorted(getattr(self, "group_folders", {}).items()):
            key = ("shared" if driver else node, volume)
            if key in _FOLDERS_PREPARED:
                continue
            mount = Mount(
                target=FOLDER,
                source=volume,
                type="volume",
                labels=self.group_folder_labels(group),
                driver_config=driver,
            )
            answer = await self.on_node(node, own_command(LAB_UID), mounts=[mount])
            if not answer or answer[0].get("result") != "owned":
                raise SwarmRefused(f"the group folder of {group!r} could not be made on node {node[:12]}: {answer}")
            _FOLDERS_PREPARED.add(key)

    async def apply_runtime(self) -> None:
        await super().apply_runtime()
        host_config = self.extra_host_config
        labels = self.labels()
        # No image health check for labs on Swarm: a task's DNS name is given only once it is healthy, which with
        # the image's 10 s interval held every start up by 10 s. The spawner checks readiness itself, every 0.1 s.
        self.extra_container_spec = {
            **container_spec_options(host_config, labels),
            "healthcheck": Healthcheck(test=["NONE"]),
        }
        env = dict(self.environment)
        if self.lab_gpus:  # the node's runtime exposes the GPUs the scheduler assigned
            env["NVIDIA_DRIVER_CAPABILITIES"] = NVIDIA_CAPABILITIES
        self.environment = env
        resources = service_resources(self.mem_limit, self.cpu_limit, self.pids_limit, self.lab_gpus)
        self.extra_task_spec = {
            "resources": resources,
            "restart_policy": RestartPolicy(condition="any", delay=1_000_000_000),
            "placement": Placement(constraints=await self.placement()),
            "log_driver": self.task_logs(),
        }
        self.extra_endpoint_spec = {"mode": "dnsrr"}  # the lab's own address: no virtual IP to route through
        volume_labels = {volume: self.volume_labels(kind) for kind, volume in self.names.volumes.items()}
        volume_labels[self.shared_volume] = self.shared_volume_labels()
        for volume, group in getattr(self, "group_folders", {}).items():
            volume_labels[volume] = self.group_folder_labels(group)
        driver = DriverConfig(self.volume_driver, self.volume_driver_options or None) if self.volume_driver else None
        self._mounts = service_mounts(self.volumes, host_config.get("tmpfs") or {}, volume_labels, driver)

    @property
    def mounts(self):
        return getattr(self, "_mounts", [])

    def task_logs(self) -> DriverConfig:
        """The rotated json-file log of a lab's, or a helper's, task (LOG_MAX_SIZE, LOG_MAX_FILES)."""
        return DriverConfig(LOG_DRIVER, dict(self.log_options or default_log_options()))

    async def placement(self) -> list[str]:
        """Where the lab may run: the node with the user's volumes (once known), and only ready nodes."""
        if not self.pinned or not self.node_id:
            return []
        try:
            node = await self.docker("inspect_node", self.node_id)
        except Exception as exc:  # noqa: BLE001 -- docker.errors.NotFound: the node left the swarm
            if not_found(exc):
                raise SwarmRefused(
                    f"{self.user.name}'s files are on node {self.node_id[:12]}, which has left the swarm; an admin "
                    f"brings it back, or forgets it (DELETE /hub/api/hubforge/users/{self.user.name}/node: "
                    "new, empty volumes on another node)"
                ) from None
            raise
        state = (node.get("Status") or {}).get("State")
        name = (node.get("Description") or {}).get("Hostname", self.node_id[:12])
        if state != "ready" or (node.get("Spec") or {}).get("Availability") != "active":
            raise SwarmRefused(
                f"{self.user.name}'s files are on node {name}, which is {state} "
                f"({(node.get('Spec') or {}).get('Availability')}); try again when it is back, or an admin forgets it "
                f"(DELETE /hub/api/hubforge/users/{self.user.name}/node: new, empty volumes on another node)"
            )
        return [f"node.id == {self.node_id}"]

    def current_lab_images(self) -> set[str]:
        """The stack's lab images and what the nodes pull them as (the stack's registry, by digest), which is what a
        lab service runs."""
        images = HubforgeSpawner.current_lab_images(self)
        return images | {ref for ref in map(self.registry_ref, images) if ref}

    def registry_ref(self, image: str) -> str | None:
        """`image` as every node pulls it (the stack's registry, by digest), or None before `invoke up` pushed it."""
        return image_map_of(self.image_map).get(image)

    async def registry_login(self, ref: str) -> None:
        """Give the Docker client the registry's credentials, once: docker-py sends them (X-Registry-Auth) with every
        service it makes from that registry's images, and Swarm hands them to the node that pulls. The login itself
        asks the registry, through this node's daemon."""
        registry = ref.split("/", 1)[0]
        if (id(self.client), registry) in _LOGGED_IN:
            return
        try:
            with open(self.registry_auth, encoding="utf-8") as found:
                auth = json.load(found)
            await self.docker(
                "login", username=auth["username"], password=auth["password"], registry=registry, reauth=True
            )
        except (OSError, ValueError, KeyError, TypeError, APIError) as exc:  # a node other than this one will not pull
            self.log.warning(
                "no credentials for the stack's registry %s (%s): a lab on another node cannot pull", registry, exc
            )
            return
        _LOGGED_IN.add((id(self.client), registry))

    async def hub_node(self) -> str:
        if not getattr(self, "_hub_node", ""):
            self._hub_node = (await self.docker("info"))["Swarm"]["NodeID"]
        return self._hub_node

    async def create_object(self):
        """The service, from the registry's copy of the image (one not pushed yet exists on the hub's node only).
        With node-pinned storage a first start chooses the node here, so the service is pinned from its first task:
        a restart (a forced update) or a crash (restart policy any) would otherwise let Swarm move it off its
        volumes."""
        ref = self.registry_ref(self.image)
        self.extra_container_spec = {**self.extra_container_spec, "image": ref or self.image}
        constraints = list(self.extra_task_spec["placement"].get("Constraints") or [])
        if ref is None:
            self.log.warning(
                "%s is not in the stack's registry (yet): %s's lab runs on the hub's node", self.image, self.user.name
            )
            constraints.append(f"node.id == {await self.hub_node()}")
        else:
            await self.registry_login(ref)
            if self.pinned and not self.node_id:
                nodes = await self.docker("nodes")
                running = await self.docker("tasks", filters={"desired-state": "running"})
                constraints.append(f"node.id == {least_loaded(nodes, running, self.lab_gpus)}")
        if getattr(self, "group_folders", None):
            pinned = [c.split("==", 1)[1].strip() for c in constraints if c.startswith("node.id ==")]
            await self.prepare_group_folders(pinned[0] if pinned else await self.hub_node())
        self.extra_task_spec = {**self.extra_task_spec, "placement": Placement(constraints=sorted(set(constraints)))}
        return await super().create_object()

    # -- volumes on the node that holds them ------------------------------------------------------------
    async def remove_volumes(self, names: list[str]) -> list[dict[str, Any]]:
        """On the hub's node, directly; on another node, through a one-shot helper service placed there (the hub
        has only its own node's socket): the hub image, from the stack's registry, with that node's socket."""
        if not self.pinned or not self.node_id or self.node_id == await self.hub_node():
            return await super().remove_volumes(names)
        failed = [{"volume": name, "result": "failed"} for name in names]
        try:
            await self.placement()  # the node is there and ready, else the reason
            results = await self.on_node(
                self.node_id, ["python3", "-m", "hub_ext.helpers.volumes", "remove", "--project", self.project, *names]
            )
        except (SwarmRefused, RuntimeError, APIError) as exc:
            return [{**r, "reason": str(getattr(exc, "explanation", None) or exc)} for r in failed]
        finally:
            self.forget_sizes()  # what exists there has changed
        return results

    async def volume_sizes(self, names: list[str]) -> dict[str, int | None]:
        """On another node, through the same one-shot helper as a reset, at most once a minute per user; requests that
        come while one is measuring share it. A page view costs a few seconds the first time. When the node cannot
        answer, every volume shows with its size unknown rather than as absent."""
        if not self.pinned or not self.node_id or self.node_id == await self.hub_node():
            return await super().volume_sizes(names)
        key, loop = (self.node_id, tuple(names)), asyncio.get_running_loop()
        entry = _REMOTE_SIZES.get(key)
        if (
            entry is None
            or entry[1].get_loop() is not loop
            or (entry[1].done() and time.monotonic() - entry[0] > SIZES_TTL_S)
        ):
            entry = _REMOTE_SIZES[key] = (time.monotonic(), loop.create_task(self.measure_on_node(names)))
        return dict(await asyncio.shield(entry[1]))

    async def measure_on_node(self, names: list[str]) -> dict[str, int | None]:
        try:
            await self.placement()
            answer = await self.on_node(
                self.node_id, ["python3", "-m", "hub_ext.helpers.volumes", "sizes", "--project", self.project, *names]
            )
        except Exception as exc:  # noqa: BLE001 -- SwarmRefused, RuntimeError, docker.errors.APIError: sizes unknown
            self.log.warning("volume sizes of %s on node %s: %s", self.user.name, self.node_id[:12], exc)
            return dict.fromkeys(names)  # shown as "size unknown"; a reset says what is really there
        return {r["volume"]: r.get("size") for r in answer if "volume" in r}

    def forget_sizes(self) -> None:
        """What exists on the node changed (a reset): the next view measures again, and one measuring now is not
        kept."""
        for key in [k for k in _REMOTE_SIZES if k[0] == self.node_id]:
            _REMOTE_SIZES.pop(key, None)

    async def on_node(self, node: str, command: list[str], mounts: list[Mount] | None = None) -> list[dict[str, Any]]:
        """Run a hub_ext helper once on `node`, with the node's Docker socket (and `mounts`); its answer line,
        parsed (hub_ext.helpers.onnode)."""
        hub = await self.docker("inspect_container", self.hub_container)
        image = self.registry_ref(hub["Config"]["Image"])
        if image is None:
            raise RuntimeError(
                f"the hub's image is not in the stack's registry, so no helper can run on node {node[:12]}; "
                "run `invoke up --engine swarm` again on the manager"
            )
        await self.registry_login(image)
        template = helper_template(image, command, self.project, node, self.task_logs(), mounts or ())
        service = await self.docker(
            "create_service", template, name=helper_name(self.service_name), labels=helper_labels(self.project)
        )
        service_id = service["ID"]
        try:
            deadline = time.monotonic() + HELPER_TIMEOUT
            while True:
                tasks = await self.docker("tasks", filters={"service": service_id})
                state = task_state(tasks)
                if state in FINISHED:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the helper on node {node[:12]} did not finish within {HELPER_TIMEOUT} s "
                        f"({state or 'no task'})"
                    )
                await asyncio.sleep(0.2)
            logs = await asyncio.wrap_future(
                self.executor.submit(  # a stream: read to its end off the event loop
                    lambda: b"".join(self.client.service_logs(service_id, stdout=True, stderr=True))
                )
            )
            return helper_answer(logs.decode(errors="replace"), node, tasks)
        finally:
            await self.docker("remove_service", service_id)

    # -- start, readiness, restart -----------------------------------------------------------------------
    async def start_object(self):
        """Wait for the task's container to start, polling every `ready_poll_interval` (SwarmSpawner backs off from
        1 s to 11 s) and failing at once with the task's reason; then record the node (the hub joined the lab's
        network before the service was made, in ensure_network)."""
        started = time.monotonic()
        deadline, next_check = started + self.start_timeout, started + NODE_CHECK_SECONDS
        while True:
            task = await self.get_task()
            state = ((task or {}).get("Status") or {}).get("State", "")
            if state in STARTED:
                break
            if task is None or state not in WAITING:
                raise RuntimeError(f"the lab's service did not start: {task_error(task)}")
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(
                    f"the lab's service is still {state} after {self.start_timeout} s: {task_error(task)}"
                )
            if now > next_check:  # Swarm keeps a task it cannot place pending for ever, and one on a lost node waiting
                await self.placement()  # the user's node went down or left since the service was made: say so
                if state == "pending" and now - started > self.pending_timeout:
                    raise RuntimeError(
                        f"no node can take {self.user.name}'s lab after {self.pending_timeout} s: {task_error(task)}"
                    )
                next_check = now + NODE_CHECK_SECONDS
            await asyncio.sleep(self.ready_poll_interval)
        if self.pinned and task.get("NodeID"):
            self.node_id = task["NodeID"]

    def lab_alive(self, container: str):
        async def alive() -> None:
            task = await self.get_task()
            state = ((task or {}).get("Status") or {}).get("State", "")
            if state not in STARTED and state not in WAITING:
                raise RuntimeError(f"the lab stopped: {task_error(task)}; start your server again")

        return alive

    async def restart_lab(self) -> str:
        """Swarm has no restart of a task in place: a forced update replaces it on the same node, with the same
        volumes and network; the files stay, the processes (kernels) start afresh, as with a container restart."""
        before = (await self.get_task() or {}).get("ID")
        service = await self.docker("inspect_service", self.object_id)
        template = dict(service["Spec"]["TaskTemplate"])
        template["ForceUpdate"] = int(template.get("ForceUpdate") or 0) + 1
        await self.docker(
            "update_service",
            self.object_id,
            service["Version"]["Index"],
            task_template=template,
            fetch_current_spec=True,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            task = await self.get_task()
            if task and task.get("ID") != before and (task.get("Status") or {}).get("State") in STARTED:
                return self.object_id
            await asyncio.sleep(self.ready_poll_interval)
        raise RuntimeError("the lab's new task did not run within 120 s")

    async def join_hub(self, name: str, found: dict | None) -> None:
        """Connect the hub to the lab's network. A service's container joins only networks its node has: when
        the lab runs elsewhere, a short-lived helper container on this node brings the network here first."""
        if found is None:
            return
        subnet = ipaddress.ip_network(found["IPAM"]["Config"][0]["Subnet"])
        address = hub_address(subnet)
        # The lab reaches the hub at this fixed address: no DNS name, which Swarm gives a task only once it is healthy
        # and which a container joined by `network connect` may not get; the same again after the hub is recreated.
        self.hub_connect_url = f"http://{address}:{self.hub.port}"
        present = {info.get("IPv4Address", "").split("/")[0] for info in (found.get("Containers") or {}).values()}
        wanted = [(address, self.connect_hub)]
        if self.proxy_service:  # the proxy reaches the lab on it too: it routes the lab's traffic
            wanted.append((proxy_address(subnet), self.connect_proxy))
        missing = [(at, connect) for at, connect in wanted if at not in present]

        async def join() -> None:
            for at, connect in missing:
                await connect(found["Id"], at)

        if missing:
            try:
                await join()
            except RuntimeError as exc:
                if "not found" not in str(exc):
                    raise
                anchor = await self.anchor(found["Id"])  # the network is not on this node yet: bring it here
                try:
                    await join()
                finally:
                    await self.docker("remove_container", anchor, force=True)
        self._hub_joined = True

    async def connect_proxy(self, network: str, address: str) -> None:
        """The proxy's running container on this node joins a lab's network at `address`; being there is no error."""
        filters = {"label": [f"com.docker.swarm.service.name={self.proxy_service}"], "status": "running"}
        found = await self.docker("containers", filters=filters)
        if not found:
            raise RuntimeError(f"no running container of the proxy's service {self.proxy_service} on this node")
        try:
            await self.docker("connect_container_to_network", found[0]["Id"], network, ipv4_address=address)
        except Exception as exc:  # noqa: BLE001 -- docker.errors.APIError, through the executor
            if "already exists" not in str(exc):
                raise RuntimeError(f"the proxy cannot join the lab's network {network[:12]}: {exc}") from exc

    async def stop(self, now=False):
        """Remove the service, then wait (at most `stop_wait` s) until its container on this node is gone: Swarm
        stops it after the removal returns, and a volume reset straight after the stop would find the volume in use."""
        await super().stop(now=now)
        filters = {"label": [f"{PROJECT_LABEL}={self.project}", f"{USER_LABEL}={self.user.name}"]}
        deadline = time.monotonic() + self.stop_wait
        while await self.docker("containers", all=True, filters=filters) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)

    @property
    def uses_sandbox(self) -> bool:
        return False  # a service's task joins its overlay itself; Swarm has no container network mode for services

    async def remove_lab_network(self, keep_sandbox: bool = True) -> None:
        """Kept when the lab stops, with the hub on it: a removed service's task leaves the network only later, and
        a network removed and made again under the same name in that time is not found when the next task starts.
        Its /28 returns to the pool at `invoke down`."""

    async def anchor(self, network: str) -> str:
        hub = await self.docker("inspect_container", self.hub_container)
        created = await self.docker(
            "create_container",
            hub["Config"]["Image"],
            ["sleep", str(ANCHOR_SECONDS)],
            entrypoint=[],
            labels={PROJECT_LABEL: self.project},
            host_config=self.client.create_host_config(
                network_mode=network,
                auto_remove=True,
                log_config={"type": LOG_DRIVER, "config": dict(self.log_options or default_log_options())},
            ),
            networking_config=self.client.create_networking_config({network: self.client.create_endpoint_config()}),
        )
        await self.docker("start", created["Id"])
        return created["Id"]

    async def lab_environment(self) -> list[str]:
        service = await self.docker("inspect_service", self.object_id)
        return service["Spec"]["TaskTemplate"]["ContainerSpec"].get("Env") or []
