"""The lab spawner: DockerSpawner plus hubforge's naming, volumes, built-in groups and GPU settings."""

from __future__ import annotations

import asyncio
import time

from dockerspawner import DockerSpawner
from jupyterhub import orm
from jupyterhub.utils import url_path_join
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Bool, Dict, Float, Integer, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from .config import GPU_MODES
from .gpu import GpuDecision, decide
from .naming import PROJECT_LABEL, escape_username, foreign_owner, user_names
from .runtime import BUILTIN_GROUPS, lab_runtime

USER_LABEL = "hubforge.user"
VOLUME_LABEL = "hubforge.volume"


_USER_LOCKS: dict[str, asyncio.Lock] = {}


def user_lock(name: str) -> asyncio.Lock:
    """One lock per user for start, restart, volume reset and revocation: none of them may interleave
    (a spawn between a reset's checks and its deletes would mount a half-reset set of volumes)."""
    return _USER_LOCKS.setdefault(name, asyncio.Lock())


def ensure_builtin_groups(db) -> list[str]:
    """Create the built-in groups that are missing (an admin may have deleted one); return those made."""
    made = []
    for name in BUILTIN_GROUPS:
        if orm.Group.find(db, name) is None:
            db.add(orm.Group(name=name))
            made.append(name)
    if made:
        db.commit()
    return made


async def lab_answers(server_url: str, timeout: float, interval: float, alive=None) -> bool:
    """Poll a lab's unauthenticated `<server_url>/api` until it answers; False once `timeout` has passed.

    `alive`, when given, is awaited before each poll and raises when waiting is pointless (the container died).
    """
    probe = url_path_join(server_url, "api")
    client = AsyncHTTPClient()
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            await alive()
        try:
            await client.fetch(probe, request_timeout=2, connect_timeout=1)
            return True
        except (HTTPClientError, OSError):
            pass  # not listening yet
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


class HubforgeSpawnerMixin(LoggingConfigurable):
    """Engine-neutral part: everything here is data handed to the engine's spawner.

    Mixed into DockerSpawner below; the same settings carry over to SwarmSpawner.
    """

    project = Unicode("hubforge", config=True, help="Compose project of the stack; labels every lab and volume.")
    volume_prefix = Unicode(
        "jupyterlab",
        config=True,
        help="Prefix of lab container and volume names: <prefix>-<escaped user>_<home|workspace|cache>.",
    )
    shared_volume = Unicode("jupyterhub_shared", config=True, help="Volume every lab mounts at /mnt/shared.")
    docker_socket = Unicode("/var/run/docker.sock", config=True, help="Host path of the Docker socket (docker-sock group).")
    docker_socket_gid = Integer(None, allow_none=True, config=True, help="Group id owning the Docker socket.")
    pids_limit = Integer(1024, config=True, help="Maximum number of processes in one lab.")
    cpu_shares = Integer(512, min=2, config=True, help="CPU weight of one lab under contention (the hub has 1024).")
    read_only_root = Bool(True, config=True, help="Labs get a read-only root filesystem and a tmpfs /tmp (LAB_READ_ONLY_ROOT).")
    gpu_mode = Unicode("auto", config=True, help="auto | on | off: whether labs get the host's GPUs.")
    gpu_probe = Dict(None, allow_none=True, config=True, help="The gpu-probe's JSON result, from `invoke up`.")
    lab_services = Dict(config=True, help="ENABLE_SERVICE_* flags passed to every lab's environment.")

    @validate("gpu_mode")
    def _valid_gpu_mode(self, proposal):
        value = GPU_MODES.get(str(proposal.value).lower())
        if value is None:
            raise ValueError(f"gpu_mode must be auto, on or off, got {proposal.value!r}")
        return value

    @property
    def gpu(self) -> GpuDecision:
        return decide(self.gpu_mode, self.gpu_probe)

    @property
    def names(self):
        return user_names(self.volume_prefix, self.user.name)

    def labels(self) -> dict[str, str]:
        return {PROJECT_LABEL: self.project, USER_LABEL: self.user.name}

    def current_groups(self) -> list[str]:
        ensure_builtin_groups(self.user.db)
        return sorted(group.name for group in self.user.groups)


class HubforgeSpawner(HubforgeSpawnerMixin, DockerSpawner):
    """DockerSpawner whose per-user settings are recomputed from scratch before every start."""

    @default("escape")
    def _escape_default(self):
        return escape_username

    @default("name_template")
    def _name_template_default(self):
        return self.names.container  # a literal: the naming function already escaped the user

    @default("remove")
    def _remove_default(self):
        return True  # data lives in volumes, never in containers

    @default("use_internal_ip")
    def _internal_ip_default(self):
        return True

    ready_poll_interval = Float(
        0.1,
        config=True,
        help="""Seconds between the spawner's own checks that the new lab answers.

        JupyterHub's readiness check backs off exponentially (0.2, 0.4, 0.8, 1.6 s...), so a lab that is
        up after 2.4 s is first seen at about 4.8 s. Polling here, and returning once the lab answers,
        lets JupyterHub's first check succeed at once.""",
    )

    restarting = False  # set by hub_ext's restart in place: a stopped container then is expected, not a death

    async def poll(self):
        """None while the lab runs; otherwise its exit status, and its container is removed.

        JupyterHub marks a server whose poll says it stopped as stopped, but never calls stop() for it
        (User.stop stops only what still runs). A lab that died on its own -- killed, out of memory, or
        stopped by a daemon restart -- would stay behind as an exited container. Remove it here, at the
        poll that finds it dead: every `poll_interval` seconds, and at the hub's start.
        """
        if self.restarting:
            return None
        status = await super().poll()
        if status is not None and self.remove and self.object_id:
            self.log.warning("lab %s of %s is dead (%s): removing its container; the volumes stay",
                             self.object_name, self.user.name, status)
            try:
                await self.remove_object()
            except Exception as exc:  # noqa: BLE001 -- the next start replaces it anyway; say why it stayed
                self.log.warning("cannot remove the dead lab %s: %s", self.object_name, exc)
            else:
                self.object_id = ""
        return status

    async def start(self):
        async with user_lock(self.user.name):
            return await self._start()

    async def _start(self):
        await self.apply_runtime()
        ip, port = await super().start()
        # JupyterHub's own check follows; a lab that is not up by start_timeout is its to report
        await lab_answers(url_path_join(f"http://{ip}:{port}", self.server.base_url if self.server else "/"),
                          self.start_timeout, self.ready_poll_interval)
        return ip, port

    async def apply_runtime(self) -> None:
        """Idempotent: set volumes, host config and environment for the user's *current* groups."""
        names = self.names
        groups = self.current_groups()
        runtime = lab_runtime(
            names=names,
            groups=groups,
            shared_volume=self.shared_volume,
            gpu=self.gpu,
            pids_limit=self.pids_limit,
            cpu_shares=self.cpu_shares,
            read_only_root=self.read_only_root,
            docker_socket=self.docker_socket,
            docker_socket_gid=self.docker_socket_gid,
            services=self.lab_services,
        )
        if not hasattr(self, "_base_settings"):  # what the operator configured, kept once
            self._base_settings = (dict(self.extra_host_config or {}), dict(self.environment or {}),
                                   dict(self.extra_create_kwargs or {}))
        base_host, base_env, base_create = self._base_settings
        self.name_template = names.container
        self.volumes = runtime.volumes
        self.extra_host_config = {**base_host, **runtime.host_config}
        self.environment = {**base_env, **runtime.environment}
        labels = {**base_create.get("labels", {}), **self.labels()}
        self.extra_create_kwargs = {**base_create, "labels": labels}
        for kind, volume in names.volumes.items():
            await self.ensure_volume(volume, {**self.labels(), VOLUME_LABEL: kind})
        await self.ensure_volume(self.shared_volume, {PROJECT_LABEL: self.project, VOLUME_LABEL: "shared"})
        self.log.info("runtime for %s: groups=%s gpu=%s", self.user.name, groups, self.gpu.enabled)

    async def ensure_volume(self, name: str, labels: dict[str, str]) -> None:
        """Create a volume with labels, so `invoke down` and the volume manager can find it.

        Docker still fills a new, empty volume from the image's folder at the first mount.
        """
        try:
            found = await self.docker("inspect_volume", name)
        except Exception as exc:  # docker.errors.NotFound: create it; anything else: let Docker create it
            if getattr(getattr(exc, "response", None), "status_code", None) != 404:
                self.log.warning("cannot inspect volume %s: %s", name, exc)
                return
            await self.docker("create_volume", name, labels=labels)
            return
        owner = foreign_owner(found, self.project)
        if owner:
            raise RuntimeError(f"volume {name} belongs to the hubforge project {owner!r}, not {self.project!r}: "
                               "its data is never mounted here (two projects with one volume prefix: see the README's \"Projects\")")
