"""The lab spawner: DockerSpawner plus hubforge's naming, volumes, built-in groups and GPU settings."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import html
import ipaddress
import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from docker.errors import APIError
from docker.types import IPAMConfig, IPAMPool
from dockerspawner import DockerSpawner
from jupyterhub import orm
from jupyterhub.utils import url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Bool, Dict, Float, Integer, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from hub_ext.helpers.quota import LOOP_CAPABILITIES, LOOP_DEVICE_RULES, device_link, quota_file
from hub_ext.helpers.volumes import FOLDER, measure, own_command, parse_answer, remove_volume
from hub_ext.labs.gpu import GpuDecision, NoFreeGpu, allocate, decide
from hub_ext.labs.networks import (
    NAMESPACE_SETTINGS,
    NETWORK_ROLE,
    SUBNET_PREFIX,
    free_subnet,
    namespace_settings,
    network_spec,
    sandbox_name,
    sandbox_spec,
    used_subnets,
)
from hub_ext.labs.policy import Effective, Policy, PolicyError, effective_policy, size_bytes
from hub_ext.labs.runtime import lab_runtime
from hub_ext.naming import (
    ACCOUNT_LABEL,
    BUILTIN_GROUPS,
    GPUS_LABEL,
    GROUP_LABEL,
    LAB_UID,
    MOUNTS,
    PROJECT_LABEL,
    QUOTA_LABEL,
    ROLE_LABEL,
    USER_LABEL,
    VOLUME_LABEL,
    account_id,
    escape_username,
    foreign_owner,
    group_folder_volume,
    lab_network_name,
    stale_owner,
    user_names,
)
from hub_ext.settings.hub import GPU_MODES, default_of

_NETWORK_LOCK = asyncio.Lock()  # one subnet allocation at a time in this hub
_GPU_LOCK = asyncio.Lock()  # one GPU hand-out at a time in this hub
_OWN_IMAGE: dict[str, str] = {}  # hub_container -> its image, when hub_image is not set
_IMAGE_TITLES: dict[str, str] = {}  # image reference -> the picker's text (an image's tag names its content)
_QUOTA_APPLIED: dict[str, int] = {}  # quota'd volume -> the size this hub last made it (a restart checks again)
_GPU_CLAIMS: dict[str, list[str]] = {}  # user -> GPUs handed to their lab, until it stops (labels cover a hub restart)
QUOTA_KINDS = {"home": "home_quota", "workspace": "workspace_quota"}  # the volumes a policy's quotas hold
QUOTAS_ENV = "HUBFORGE_QUOTAS"  # the lab's quota'd volumes, for its status bar (images/lab/hubforge-notify)
SIZES_TTL_S = 60
_SIZES = ThreadPoolExecutor(max_workers=1, thread_name_prefix="volume-sizes")
_usage: dict[str, Any] = {"at": -SIZES_TTL_S, "future": None}


async def disk_usage(client) -> dict:
    """`docker system df` of this node, at most once a minute for the whole hub, on a thread of its own.

    It measures every volume on the host, which takes long on a busy one: run on DockerSpawner's single
    executor it would queue every spawn behind it, and uncached any user could trigger it at will.
    Concurrent callers share one measurement.
    """
    now, loop = time.monotonic(), asyncio.get_running_loop()
    future = _usage["future"]
    stale = (
        future is None
        or future.get_loop() is not loop
        or (
            future.done() and (future.cancelled() or future.exception() is not None or now - _usage["at"] > SIZES_TTL_S)
        )
    )
    if stale:
        future = loop.run_in_executor(_SIZES, client.df)
        _usage.update(at=now, future=future)
    return await asyncio.shield(future)


_USER_LOCKS: dict[str, asyncio.Lock] = {}


def image_of(found: dict | None) -> str:
    """The image reference a lab was made with: a container's (Config.Image) or a Swarm service's."""
    if not found:
        return ""
    if "Config" in found:
        return (found.get("Config") or {}).get("Image") or ""
    spec = ((found.get("Spec") or {}).get("TaskTemplate") or {}).get("ContainerSpec") or {}
    return spec.get("Image") or ""


def not_found(exc: BaseException) -> bool:
    """Whether a Docker call failed because its object does not exist (docker.errors.NotFound, as it comes
    back through DockerSpawner's executor)."""
    return getattr(getattr(exc, "response", None), "status_code", None) == 404


async def container_running(spawner, container: str) -> None:
    """Raise, with the reason, unless the container is running (it may stop or vanish while a lab starts or
    restarts)."""
    try:
        state = (await spawner.docker("inspect_container", container))["State"]
    except Exception as exc:  # docker.errors.NotFound, through DockerSpawner's executor
        if not_found(exc):
            raise RuntimeError("the lab's container is gone; start your server again") from None
        raise
    if not state.get("Running"):
        raise RuntimeError(
            f"the lab's container stopped (exit code {state.get('ExitCode')}); "
            "see `invoke logs <user>`, then start your server again"
        )


async def server_token(spawner) -> str:
    """The lab's own API token (JUPYTERHUB_API_TOKEN in its environment), which the hub made at its spawn.

    The spawner holds it from the spawn on; a hub recreated while the lab ran reads it back from the
    container's environment once (Docker shows it to the hub, as it shows everything) and keeps it.
    """
    if not spawner.api_token and getattr(spawner, "object_id", None):
        try:
            env = await spawner.lab_environment()
        except Exception as exc:  # noqa: BLE001 -- gone meanwhile: the delivery says why it failed
            spawner.log.warning("cannot read the server token of %s's lab: %s", spawner.user.name, exc)
            return ""
        found = next((line.split("=", 1)[1] for line in env if line.startswith("JUPYTERHUB_API_TOKEN=")), "")
        spawner.api_token = found
    return spawner.api_token


class StartSlots:
    """At most `size` labs start at once; the others wait their turn, first come first served.

    A lab's start is CPU-bound (its Python server imports for about a second). Twenty labs that start
    together share the cores and all finish late; taken a few at a time, the first are ready at once and the
    median wait halves, with the same total. `position` says how many are ahead of a waiting lab.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.running = 0
        self.waiting: collections.deque[asyncio.Future] = collections.deque()

    def position(self, ticket: asyncio.Future) -> int:
        """How many waiting labs are ahead of `ticket` (0: it is next); -1 once it is not waiting."""
        try:
            return self.waiting.index(ticket)
        except ValueError:
            return -1

    async def acquire(self, ticket: asyncio.Future | None = None) -> None:
        if self.running < self.size and not self.waiting:
            self.running += 1
            return
        ticket = ticket or asyncio.get_running_loop().create_future()
        self.waiting.append(ticket)
        try:
            await ticket  # release() hands its slot over by resolving the ticket
        except BaseException:
            if ticket in self.waiting:
                self.waiting.remove(ticket)
            elif ticket.done() and not ticket.cancelled():
                self.release()  # the slot was handed over just as we gave up: pass it on
            raise

    def release(self) -> None:
        while self.waiting:
            ticket = self.waiting.popleft()
            if not ticket.done():
                ticket.set_result(None)  # the slot passes to the next in line; running stays the same
                return
        self.running -= 1


_START_SLOTS: dict[int, StartSlots] = {}
_DOCKER_POOL: dict[int, ThreadPoolExecutor] = {}


def start_slots(size: int) -> StartSlots:
    """The hub's one set of start slots (every spawner has the same configured size)."""
    return _START_SLOTS.setdefault(size, StartSlots(size))


def user_lock(name: str) -> asyncio.Lock:
    """One lock per user for start, restart, volume reset and revocation: none of them may interleave
    (a spawn between a reset's checks and its deletes would mount a half-reset set of volumes)."""
    return _USER_LOCKS.setdefault(name, asyncio.Lock())


async def stop_every_server(user, proxy, log) -> tuple[list[str], list[str]]:
    """Stop every server of `user` (revocation, discard, an OIDC member who lost access), never raising: a start still
    pending is cancelled (JupyterHub refuses to stop a pending server, and a user can hold a start pending on
    purpose) and then stopped. Returns the servers stopped and, for each that could not be, why."""
    stopped, errors = [], []
    for server_name, spawner in list(user.spawners.items()):
        try:
            if spawner.pending == "spawn":
                future = spawner._spawn_future  # JupyterHub's own DELETE .../server interrupts a start the same way
                if future is not None and not future.done():
                    future.cancel()
                getattr(spawner, "cancel_start", lambda: False)()  # ... which does not reach the spawner's start
            if spawner.pending == "stop":
                continue  # already on its way down
            # the lock: a start in its Docker phase finishes first (and is then stopped); one queued behind this
            # revocation asks the authenticator first (may_start) and is refused
            async with user_lock(user.name):
                if spawner.active or spawner.pending:
                    with contextlib.suppress(Exception):  # a start interrupted before the proxy knew of it
                        await proxy.delete_user(user, server_name)
                    await user.stop(server_name)
                    stopped.append(server_name or "default")
        except Exception as exc:  # noqa: BLE001 -- report it; the caller goes on (credentials are already gone)
            log.exception("stopping %s's server %r failed", user.name, server_name)
            errors.append(f"{server_name or 'default'}: {exc}")
    return stopped, errors


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


ALIVE_INTERVAL_S = 1.0  # seconds between the Docker checks that a starting lab's container still runs


async def lab_answers(
    server_url: str, timeout: float, interval: float, alive=None, alive_interval: float = ALIVE_INTERVAL_S
) -> bool:
    """Poll a lab's unauthenticated `<server_url>/api` until it answers; False once `timeout` has passed.

    `alive`, when given, is awaited before the first poll and then at most every `alive_interval` seconds, and raises
    when waiting is pointless (the container died). Not before every poll: it is a Docker call (an inspection, on
    Swarm a task listing) that costs the hub and the daemon CPU, while a poll of a lab that is not listening yet is
    one refused connection; a dead lab is still reported within `alive_interval`.
    """
    probe = url_path_join(server_url, "api")
    client = AsyncHTTPClient()
    deadline = time.monotonic() + timeout
    checked = None
    while True:
        if alive is not None and (checked is None or time.monotonic() - checked >= alive_interval):
            checked = time.monotonic()
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
    docker_socket = Unicode(
        "/var/run/docker.sock", config=True, help="Host path of the Docker socket (docker-sock group)."
    )
    docker_socket_gid = Integer(None, allow_none=True, config=True, help="Group id owning the Docker socket.")
    pids_limit = Integer(default_of("LAB_PIDS_LIMIT"), config=True, help="Maximum number of processes in one lab.")
    log_options = Dict(
        config=True,
        help="""json-file options of every lab's log (LOG_MAX_SIZE, LOG_MAX_FILES): rotated, so a lab that prints
        without end cannot fill the host's disk. Empty: 10m x 3.""",
    )
    cpu_shares = Integer(
        default_of("LAB_CPU_SHARES"),
        min=2,
        config=True,
        help="CPU weight of one lab under contention (the hub has 1024).",
    )
    read_only_root = Bool(
        default_of("LAB_READ_ONLY_ROOT"),
        config=True,
        help="Labs get a read-only root filesystem and a tmpfs /tmp (LAB_READ_ONLY_ROOT).",
    )
    gpu_mode = Unicode(
        default_of("ENABLE_GPU_SUPPORT"), config=True, help="auto | on | off: whether labs get the host's GPUs."
    )
    gpu_probe = Dict(None, allow_none=True, config=True, help="The gpu-probe's JSON result, from `invoke up`.")
    lab_services = Dict(config=True, help="ENABLE_SERVICE_* flags passed to every lab's environment.")
    lab_images = Dict(
        config=True,
        help="""Every lab image of the stack, name -> reference (HUBFORGE_LAB_IMAGES). A group policy's `images` and
        `default_image` name them; a user may pick among those their policy allows.""",
    )
    quota_dir = Unicode(
        default_of("LAB_QUOTA_DIR"),
        config=True,
        help="""Host folder of the files that hold quota'd volumes (LAB_QUOTA_DIR): each project has its own
        subfolder, each volume a sparse file `<volume>.img` there.""",
    )
    idle_timeout = Integer(
        0,
        min=0,
        config=True,
        help="The default policy's idle-cull timeout in seconds (IDLE_CULLER_TIMEOUT; 0: never culled).",
    )
    server_proxy = Bool(
        default_of("LAB_SERVER_PROXY"),
        config=True,
        help="""Turn on jupyter-server-proxy in the labs (LAB_SERVER_PROXY): web apps a user runs are then reached at
        /proxy/<port>/. Off by default: it costs about 0.25 s of CPU at every lab start.""",
    )
    stack_network = Unicode("hubforge_net", config=True, help="The stack's own network, where the hub is.")
    lab_networks = Bool(
        True,
        config=True,
        help="""Each lab on its own network, shared with the hub only, so no lab reaches another.

        Off: every lab on the stack network (the pre-isolation layout), which lets labs reach each other.""",
    )
    lab_sandboxes = Bool(
        default_of("LAB_SANDBOXES"),
        config=True,
        help="""Each lab joins the network namespace of a small sandbox container that stays on the lab's network
        while the stack is up (LAB_SANDBOXES; with lab_networks): a lab's start or stop then changes nothing in the
        host's network, which a browser on the host would see as a network change. The first start of a user makes
        their network and sandbox. Off: the lab's container joins the network itself, which goes when the lab stops.""",
    )
    subnet_pool = Unicode(
        default_of("LAB_SUBNET_POOL"),
        config=True,
        help="IPv4 range carved into one /29 per lab network (LAB_SUBNET_POOL).",
    )
    hub_container = Unicode(
        config=True,
        help="""The container that joins every lab's network for the hub: the hub's own, or the proxy's whose
        network namespace the hub shares (Compose). Default: this host name, which is that container's id.""",
    )
    hub_image = Unicode(
        "",
        config=True,
        help="""The hub's image, which one-shot helpers and network sandboxes run (`invoke up` sets it). Empty: the
        image of hub_container, asked of Docker once.""",
    )
    hub_alias = Unicode("hub", config=True, help="The hub's name on each lab network (hub_connect_url uses it).")
    disable_ipv6 = Bool(
        os.path.exists("/proc/sys/net/ipv6/conf/all/disable_ipv6"),
        config=True,
        help="""Turn IPv6 off inside labs (their networks are IPv4 only): no link-local IPv6 path to the host
        around the guard's IPv4 rules. Default: on wherever the kernel has IPv6.""",
    )

    @default("hub_container")
    def _hub_container_default(self):
        return socket.gethostname()

    async def own_image(self) -> str:
        """The hub's image (hub_image), or hub_container's, asked of Docker once per hub."""
        if not self.hub_image:
            found = _OWN_IMAGE.get(self.hub_container)
            if found is None:
                found = (await self.docker("inspect_container", self.hub_container))["Config"]["Image"]
                _OWN_IMAGE[self.hub_container] = found
            return found
        return self.hub_image

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

    def volume_labels(self, kind: str) -> dict[str, str]:
        """A user's volume: the user's labels, its kind, and the account it is made for (naming.account_id)."""
        return {
            **self.labels(),
            VOLUME_LABEL: kind,
            ACCOUNT_LABEL: account_id(getattr(self.user.orm_user, "created", None)),
        }

    def shared_volume_labels(self) -> dict[str, str]:
        """The volume every lab mounts at /mnt/shared, on either engine."""
        return {PROJECT_LABEL: self.project, VOLUME_LABEL: "shared"}

    def start_refusal(self) -> str | None:
        """Why this user may not start now, or None: an account revoked while its start waited (a start that was
        queued behind the revocation must not bring the lab back). Asked of the authenticator, when it can tell."""
        may_start = getattr(self.user.authenticator, "may_start", None)
        return may_start(self.user.name) if may_start is not None else None

    async def delete_forever(self):
        """JupyterHub calls this when the user is deleted, by any route (the admin page, the REST API, Discard): the
        user's home, workspace and cache go too, on whichever node holds them, so that whoever later takes the name
        starts empty (KubeSpawner deletes a deleted user's volume claims the same way)."""
        results = await self.remove_volumes(list(self.names.volumes.values()))
        await self.remove_lab_network(keep_sandbox=False)
        failed = [f"{r['volume']}: {r.get('reason')}" for r in results if r["result"] == "failed"]
        if failed:  # the account label still keeps them from the next owner (ensure_volume refuses them)
            self.log.error("deleted user %s: volumes NOT removed: %s", self.user.name, "; ".join(failed))
        else:
            self.log.info(
                "deleted user %s: volumes removed: %s",
                self.user.name,
                ", ".join(r["volume"] for r in results if r["result"] == "removed") or "none existed",
            )
        return results

    def current_groups(self) -> list[str]:
        return sorted(group.name for group in self.user.groups)

    # -- group policies (hub_ext.labs.policy) ---------------------------------------------------------------
    def base_settings(self) -> dict[str, Any]:
        """What the operator configured, kept at the first spawn: every spawn starts from it, so a policy's values
        never leak into the next start."""
        if not hasattr(self, "_base_settings"):
            self._base_settings = {
                "host": dict(self.extra_host_config or {}),
                "env": dict(self.environment or {}),
                "create": dict(self.extra_create_kwargs or {}),
                "args": list(self.args or []),
                "mem_limit": getattr(self, "mem_limit", None),
                "cpu_limit": getattr(self, "cpu_limit", None),
                "image": getattr(self, "image", None),
            }
        return self._base_settings

    @property
    def default_gpus(self) -> int | str | None:
        """GPUs of a lab whose groups set none: all of the host's, as before group policies (when GPUs are on)."""
        return "all"

    def default_policy(self) -> Policy:
        """The policy of a user in no group: the stack's settings (LAB_MEM_LIMIT, LAB_CPU_LIMIT, LAB_PIDS_LIMIT,
        ENABLE_GPU_SUPPORT, every lab image, IDLE_CULLER_TIMEOUT), so that existing stacks keep their meaning."""
        base = self.base_settings()
        images = tuple(self.lab_images)
        return Policy(
            mem_limit=str(base["mem_limit"]) if base["mem_limit"] else None,
            cpu_limit=base["cpu_limit"] or None,
            pids_limit=self.pids_limit,
            gpus=self.default_gpus,
            images=images,
            default_image="default" if "default" in images else (images[0] if images else None),
            idle_timeout=self.idle_timeout,
            max_session=0,
        )

    def effective(self) -> Effective:
        """This user's policy now: the default merged with the policies of their current groups. A policy that is
        not valid (written around the API, into the database) stops the start with its one line. (The built-in groups
        are made at the hub's start and again when one is deleted, hub_ext.web.audited, not here: the culler asks
        this for every running lab every minute.)"""
        try:
            return effective_policy(self.default_policy(), self.user.groups)
        except PolicyError as exc:
            raise web.HTTPError(409, f"{exc}: an admin corrects it on /hub/policies") from None

    def policy_images(self, policy: Policy) -> dict[str, str]:
        """The lab images this user may pick (name -> reference): the policy's, among the stack's."""
        if not self.lab_images:
            return {}
        names = [name for name in (policy.images or tuple(self.lab_images)) if name in self.lab_images]
        return {name: self.lab_images[name] for name in names}

    async def hand_out_gpus(self, wanted: int | str | None) -> list[str] | str | None:
        """The GPUs for this lab: none, all, or that many of the host's that no running lab holds (by the labels of
        the project's labs, and the hand-outs of starts under way)."""
        async with _GPU_LOCK:
            _GPU_CLAIMS.pop(self.user.name, None)
            if wanted in (None, 0, "all") or not self.gpu.enabled:
                return allocate(wanted, self.gpu, [])
            labs = await self.docker("containers", filters={"label": [f"{PROJECT_LABEL}={self.project}", GPUS_LABEL]})
            held = [
                device
                for lab in labs
                if (lab.get("Labels") or {}).get(USER_LABEL) != self.user.name
                for device in (lab.get("Labels") or {}).get(GPUS_LABEL, "").split(",")
                if device
            ]
            held += [device for user, devices in _GPU_CLAIMS.items() if user != self.user.name for device in devices]
            try:
                devices = allocate(wanted, self.gpu, held)
            except NoFreeGpu as exc:
                raise web.HTTPError(503, str(exc)) from None
            if isinstance(devices, list):
                _GPU_CLAIMS[self.user.name] = devices
            return devices

    def release_gpus(self) -> None:
        _GPU_CLAIMS.pop(self.user.name, None)

    def group_folder_labels(self, group: str) -> dict[str, str]:
        return {PROJECT_LABEL: self.project, VOLUME_LABEL: "group", GROUP_LABEL: group}

    async def ensure_group_folder(self, volume: str, group: str) -> None:
        """A group's folder: made at its first member's start, labelled with the group, and owned by the lab's user
        (a new volume is root's) by a one-shot container of the hub's image, with no network."""
        labels = self.group_folder_labels(group)
        try:
            found = await self.docker("inspect_volume", volume)
        except Exception as exc:  # noqa: BLE001 -- docker.errors.NotFound: make it
            if not not_found(exc):
                raise
            found = None
        if found is not None:
            owner = foreign_owner(found, self.project)
            if owner:
                raise RuntimeError(f"volume {volume} belongs to the hubforge project {owner!r}, not {self.project!r}")
            if (found.get("Labels") or {}).get(GROUP_LABEL) == group:
                return
        await self.docker("create_volume", volume, labels=labels)
        await self.own_folder(volume)

    async def own_folder(self, volume: str) -> None:
        answer = await self.run_helper(own_command(LAB_UID), [f"{volume}:{FOLDER}:rw"], ["CHOWN", "FOWNER"])
        if not answer or answer[0].get("result") != "owned":
            raise RuntimeError(f"could not make group folder {volume} the lab user's: {answer}")

    async def run_helper(
        self, command: list[str], binds: list[str], caps: list[str] | None = None, devices: list[str] | None = None
    ) -> list:
        """Run a one-shot helper of the hub's image on this host, as root with no network, only `caps` and these
        binds; its answer line (hub_ext.helpers.volumes.RESULT_PREFIX), parsed."""
        image = await self.own_image()
        host_config = {  # Docker's API form: no client round trip to build it
            "Binds": binds,
            "CapDrop": ["ALL"],
            "CapAdd": list(caps or []),
            "DeviceCgroupRules": list(devices or []),
            "ReadonlyRootfs": True,
            "NetworkMode": "none",
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "1m", "max-file": "1"}},
        }
        helper = await self.docker(
            "create_container",
            image,
            command=command,
            user="0:0",
            host_config=host_config,
            labels={PROJECT_LABEL: self.project, ROLE_LABEL: "helper"},
        )
        try:
            await self.docker("start", helper["Id"])
            await self.docker("wait", helper["Id"], timeout=120)
            logs = await self.docker("logs", helper["Id"])
            return parse_answer(logs.decode(errors="replace")) or []
        finally:
            await self.docker("remove_container", helper["Id"], force=True)


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

    @default("options_form")
    def _options_form_default(self):
        return lambda spawner: spawner.image_form()

    async def image_form(self) -> str:
        """The spawn page's picker: the images this user's policy allows, each with what it is and its size (from the
        image's own description label), its default (the lean `default` unless a policy says) selected; none for
        one image."""
        policy = self.effective().policy
        images = self.policy_images(policy)
        if len(images) <= 1:
            return ""
        options = []
        for name, ref in images.items():
            title = await self.image_title(name, ref)
            selected = " selected" if name == policy.default_image else ""
            options.append(f'<option value="{html.escape(name)}"{selected}>{html.escape(title)}</option>')
        return (
            '<label for="image">Lab image</label>'
            f'<select class="form-control" id="image" name="image" required autofocus>{"".join(options)}</select>'
        )

    async def image_title(self, name: str, ref: str) -> str:
        """`name: description (size)`, from the image as Docker holds it; the name alone when Docker cannot say."""
        if ref not in _IMAGE_TITLES:
            try:
                found = await self.docker("inspect_image", ref)
            except Exception:  # noqa: BLE001 -- not on this node, or the daemon is busy: the name will do
                return name
            labels = (found.get("Config") or {}).get("Labels") or {}
            description = labels.get("org.opencontainers.image.description", "")
            size = f"{found.get('Size', 0) / 1e6:.0f} MB" if found.get("Size") else ""
            details = ", ".join(part for part in (description, size) if part)
            _IMAGE_TITLES[ref] = f"{name}: {details}" if details else name
        return _IMAGE_TITLES[ref]

    @default("use_internal_ip")
    def _internal_ip_default(self):
        return True

    @default("network_name")
    def _network_name_default(self):
        """The lab's own network; derived from the name, so a restarted hub finds running labs on it."""
        return lab_network_name(self.stack_network, self.user.name) if self.lab_networks else self.stack_network

    docker_threads = Integer(
        8,
        min=1,
        config=True,
        help="""Threads for the hub's Docker calls, shared by every lab.

        DockerSpawner sends every call of every spawner through one thread, so concurrent spawns queue behind
        each other's network and container calls while the daemon could serve them side by side.""",
    )
    start_concurrency = Integer(
        default_of("LAB_START_CONCURRENCY"),
        min=0,
        config=True,
        help="""Most labs starting at the same moment (LAB_START_CONCURRENCY); the others wait in arrival order and
        their progress page says how many are ahead. 0: one less than the host's CPU cores (at least one), which
        leaves a core to the hub and to the users who are already working.""",
    )

    @property
    def executor(self) -> ThreadPoolExecutor:
        """One pool of `docker_threads` threads for the whole hub, instead of DockerSpawner's single thread
        (docker-py's client is safe across threads: each call takes its own connection from the pool)."""
        return _DOCKER_POOL.setdefault(
            self.docker_threads, ThreadPoolExecutor(self.docker_threads, thread_name_prefix="docker")
        )

    @default("client_kwargs")
    def _client_kwargs_default(self):
        return {"max_pool_size": max(10, self.docker_threads)}  # a connection for each thread

    start_slot_seconds = Float(
        20,
        min=1,
        config=True,
        help="""Longest a start keeps its start slot while its lab has yet to answer (seconds). A lab is ready in one or
        two seconds of CPU; one that takes longer is waiting for something, or is held pending on purpose by its owner
        (a server config in their home that never returns), and must not keep everyone else's start waiting.""",
    )

    @property
    def slots(self) -> StartSlots:
        return start_slots(self.start_concurrency or max(1, (os.cpu_count() or 2) - 1))

    _start_ticket: asyncio.Future | None = None  # this spawn's place in the start queue (None: not queued yet)

    async def progress(self):
        """The spawn page's messages: the place in the queue while waiting for a start slot, then the start."""
        said = None
        for _ in range(100_000):  # bounded; ends when the lab's turn comes or the spawn ends
            if not self.pending:
                return
            ticket = self._start_ticket
            ahead = self.slots.position(ticket) if ticket is not None else None
            if ticket is not None and ahead < 0:
                break  # its turn: starting
            if ahead is not None and ahead != said:
                said = ahead
                yield {
                    "progress": 10,
                    "message": f"Waiting to start: {ahead} lab{'' if ahead == 1 else 's'} ahead of yours",
                }
            await asyncio.sleep(0.25)
        yield {"progress": 50, "message": "Starting your lab..."}

    ready_poll_interval = Float(
        0.1,
        config=True,
        help="""Seconds between the spawner's own checks that the new lab answers.

        JupyterHub's readiness check backs off exponentially (0.2, 0.4, 0.8, 1.6 s...), so a lab that is
        up after 2.4 s is first seen at about 4.8 s. Polling here, and returning once the lab answers,
        lets JupyterHub's first check succeed at once.""",
    )

    restarting = False  # set by hub_ext's restart in place: a stopped container then is expected, not a death
    _hub_joined = False  # whether this hub container is on the lab's network (a recreated hub is on none)
    running_image = ""  # the image the lab's container (or service) runs, as Docker last said at a poll or start

    async def get_object(self):
        found = await super().get_object()
        self.running_image = image_of(found)
        return found

    @property
    def outdated_image(self) -> bool:
        """Whether the running lab's image is none of the stack's lab images any more: the stack was upgraded (or a
        flavour dropped) since it started. The home page tells its user that a stop and start brings the new one."""
        if not (self.active and self.running_image and self.lab_images):
            return False
        images = self.current_lab_images()  # Swarm may pin a service's tag to the digest it resolved: tag@sha256:...
        return self.running_image not in images and self.running_image.split("@", 1)[0] not in images

    def current_lab_images(self) -> set[str]:
        """Every reference a lab started now could run: the stack's lab images, as this engine names them."""
        return set(self.lab_images.values())

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
        if status is None and self.lab_networks and not self._hub_joined:
            await self.join_hub(self.network_name, await self.inspect_network(self.network_name))
        if status is not None and self.remove and self.object_id:
            self.log.warning(
                "lab %s of %s is dead (%s): removing its container; the volumes stay",
                self.object_name,
                self.user.name,
                status,
            )
            try:
                await self.remove_object()
            except Exception as exc:  # noqa: BLE001 -- the next start replaces it anyway; say why it stayed
                self.log.warning("cannot remove the dead lab %s: %s", self.object_name, exc)
            else:
                self.object_id = ""
                await self.remove_lab_network()
        return status

    async def stop(self, now=False):
        await super().stop(now=now)
        self.release_gpus()
        if self.remove:
            await self.remove_lab_network()

    _start_task: asyncio.Task | None = None  # the start under way (JupyterHub shields it from cancelling its spawn)

    async def start(self):
        self._start_task = asyncio.current_task()
        try:
            async with user_lock(self.user.name):
                return await self._start()
        finally:
            self._start_task = None

    def cancel_start(self) -> bool:
        """Interrupt a start under way (a revocation): it stops waiting -- for a slot, for Docker, for the lab to
        answer -- and lets go of the user's lock. JupyterHub's own cancel of a pending spawn does not reach it:
        User.spawn waits for start() through gen.with_timeout, which protects it from cancellation."""
        task = self._start_task
        if task is None or task.done():
            return False
        task.cancel()
        return True

    async def _start(self):
        self._start_ticket = None
        refusal = self.start_refusal()
        if refusal:
            raise web.HTTPError(403, refusal)
        try:
            await self.apply_runtime()
        except BaseException:
            self.release_gpus()
            raise
        ticket = self._start_ticket = asyncio.get_running_loop().create_future()
        await self.slots.acquire(ticket)
        held = True
        try:
            ip, port = await super().start()
            # JupyterHub's own check follows; a lab that is not up by start_timeout is its to report. A lab whose
            # container exits (a bad image, out of memory) fails at once with the reason instead of at the timeout.
            url = url_path_join(f"http://{ip}:{port}", self.server.base_url if self.server else "/")
            alive = self.lab_alive(self.object_id)
            in_slot = min(self.start_timeout, self.start_slot_seconds)
            if not await lab_answers(url, in_slot, self.ready_poll_interval, alive=alive):
                # Not busy starting (that takes a second or two of CPU): waiting for something, or held on purpose by
                # its owner's own server config. The next lab in line takes the slot; this one keeps its time to answer.
                self.slots.release()
                held = False
                await lab_answers(url, self.start_timeout - in_slot, self.ready_poll_interval, alive=alive)
        finally:
            if held:
                self.slots.release()
        return ip, port

    async def lab_environment(self) -> list[str]:
        """The lab's environment as Docker holds it (NAME=value lines)."""
        return (await self.docker("inspect_container", self.object_id))["Config"]["Env"] or []

    def lab_alive(self, container: str):
        """An awaitable check for lab_answers: raises, with the reason, once `container` is not running."""
        return lambda: container_running(self, container)

    async def restart_lab(self) -> str:
        """Restart the lab in place (same container, same volumes); returns what now runs it."""
        await self.docker("restart", self.object_id, timeout=10)
        return self.object_id

    async def apply_runtime(self) -> None:
        """Idempotent: set volumes, limits, image, host config and environment from the user's *current* groups'
        policies (hub_ext.labs.policy), starting each time from what the operator configured."""
        names = self.names
        base = self.base_settings()
        effective = self.effective()
        policy = effective.policy
        images = self.policy_images(policy)
        if self.lab_images and not images:
            raise web.HTTPError(
                409, f"no lab image of this stack is allowed by the policy of {', '.join(effective.groups)}"
            )
        chosen = (self.user_options or {}).get("image")
        if chosen and self.lab_images and chosen not in images:
            allowed = ", ".join(images) or "none"
            raise web.HTTPError(400, f"Image {chosen} not in allowed list: {allowed} (by the policies of your groups)")
        self.allowed_images = images
        if images:
            self.image = images.get(policy.default_image or "", next(iter(images.values())))
        else:
            self.image = base["image"]
        self.mem_limit = size_bytes(policy.mem_limit) if policy.mem_limit else None
        self.cpu_limit = policy.cpu_limit
        gpus = await self.hand_out_gpus(policy.gpus)
        folders = {
            group_folder_volume(self.volume_prefix, group): (group, mode) for group, mode in effective.folders.items()
        }
        runtime = lab_runtime(
            names=names,
            policy=policy,
            shared_volume=self.shared_volume,
            gpus=gpus,
            folders=folders,
            cpu_shares=self.cpu_shares,
            read_only_root=self.read_only_root,
            docker_socket=self.docker_socket,
            docker_socket_gid=self.docker_socket_gid,
            services=self.lab_services,
            disable_ipv6=self.disable_ipv6 and not self.uses_sandbox,  # else the sandbox's namespace has it off
            server_proxy=self.server_proxy,
            logs=self.log_options,
        )
        self.name_template = names.container
        self.volumes = runtime.volumes
        self.extra_host_config = {**base["host"], **runtime.host_config}
        self.environment = {**base["env"], **runtime.environment}
        self.args = [*base["args"], *runtime.args]
        labels = {**base["create"].get("labels", {}), **self.labels()}
        if isinstance(gpus, list):
            labels[GPUS_LABEL] = ",".join(gpus)
        self.extra_create_kwargs = {**base["create"], "labels": labels}
        self.policy_applied = effective
        quotas = {
            volume: (kind, size_bytes(getattr(policy, QUOTA_KINDS[kind])))
            for kind, volume in names.volumes.items()
            if getattr(policy, QUOTA_KINDS.get(kind, ""), None)
        }
        for kind, volume in names.volumes.items():
            if volume not in quotas:
                await self.ensure_volume(volume, self.volume_labels(kind))
        wanted = {volume: (self.volume_labels(kind), size) for volume, (kind, size) in quotas.items()}
        held_volumes = await self.ensure_quota_volumes(wanted) if wanted else set()
        held = {
            kind: {"mount": MOUNTS[kind], "quota": size}
            for volume, (kind, size) in quotas.items()
            if volume in held_volumes
        }
        if held:  # for the lab's status bar (hubforge_notify's hubforge/usage)
            self.environment = {**self.environment, QUOTAS_ENV: json.dumps(held, sort_keys=True)}
        await self.ensure_volume(self.shared_volume, self.shared_volume_labels())
        self.group_folders = {volume: group for volume, (group, _) in folders.items()}
        for volume, (group, _) in folders.items():
            await self.ensure_group_folder(volume, group)
        if self.lab_networks:
            await self.ensure_network(self.network_name)
        if self.uses_sandbox:
            lab_host = {k: v for k, v in self.extra_host_config.items() if k not in NAMESPACE_SETTINGS}
            await self.ensure_sandbox(namespace_settings(self.extra_host_config))
            self.extra_host_config = {**lab_host, "network_mode": f"container:{self.sandbox_name}"}
            # Docker refuses exposed ports for a container in another's namespace; the hub reaches the port anyway
            self.extra_create_kwargs = {**self.extra_create_kwargs, "ports": None}
        self.log.info(
            "runtime for %s: groups=%s mem=%s cpus=%s gpus=%s image=%s folders=%s",
            self.user.name,
            list(effective.groups),
            policy.mem_limit,
            policy.cpu_limit,
            gpus,
            self.image,
            sorted(effective.folders),
        )

    creates_volumes = True  # False where the engine makes them at the mount, on whichever node the lab lands

    async def ensure_volume(
        self, name: str, labels: dict[str, str], driver_opts: dict[str, str] | None = None, before_create=None
    ) -> dict | None:
        """Create a volume with labels, so `invoke down` and the volume manager can find it (with the local driver's
        options when given, after awaiting `before_create`); returns an existing volume's inspection, after checking
        whose it is, {} when it made the volume, or None when it could not tell.

        Docker still fills a new, empty volume from the image's folder at the first mount.
        """
        try:
            found = await self.docker("inspect_volume", name)
        except Exception as exc:  # docker.errors.NotFound: create it; anything else: let Docker create it
            if not not_found(exc):
                self.log.warning("cannot inspect volume %s: %s", name, exc)
                return None
            if self.creates_volumes:
                if before_create is not None:
                    await before_create()
                options = {"driver": "local", "driver_opts": driver_opts} if driver_opts else {}
                await self.docker("create_volume", name, labels=labels, **options)
                return {}
            return None
        owner = foreign_owner(found, self.project)
        if owner:
            raise RuntimeError(
                f"volume {name} belongs to the hubforge project {owner!r}, not {self.project!r}: "
                'its data is never mounted here (two projects with one volume prefix: see the README\'s "Projects")'
            )
        earlier = stale_owner(found, labels.get(ACCOUNT_LABEL, ""))
        if earlier:
            raise RuntimeError(
                f"volume {name} was made for an earlier user named {self.user.name!r} (account {earlier}), "
                f"which was deleted: its files are never mounted for a new owner; an admin removes it with "
                f"`docker volume rm {name}`"
            )
        return found

    # -- storage quotas (hub_ext.helpers.quota) -----------------------------------------------------------------
    @property
    def project_quota_dir(self) -> str:
        return os.path.join(self.quota_dir, self.project)

    async def ensure_quota_volumes(self, wanted: dict[str, tuple[dict[str, str], int]]) -> set[str]:
        """Volumes that hold at most their size (volume -> (labels, bytes)); returns those held to it. A new one is a
        fresh filesystem in its own file; an existing one is grown (files kept) or shrunk to the policy's size when it
        changed. A shrink below what is used is refused by the helper and the volume keeps its size: no file is ever
        lost to a quota. A volume made before its quota stays as it is (docs: it comes under the quota when reset).
        One helper does the work of every volume of this start, and none runs when nothing changed."""
        ops, held = [], set()
        for name, (labels, size) in wanted.items():
            image = quota_file(self.project_quota_dir, name)
            options = {"type": "ext4", "device": str(device_link(image))}
            found = await self.ensure_volume(name, {**labels, QUOTA_LABEL: str(size)}, options)
            if found is None:
                raise RuntimeError(f"cannot tell whether the quota'd volume {name} exists: the start stops here")
            device = (found.get("Options") or {}).get("device") if found else str(image)
            if not device:
                self.log.warning("volume %s predates its quota and is not held to it: it is when reset", name)
                continue
            held.add(name)
            if not found or _QUOTA_APPLIED.get(name) != size:  # new, or not sized and attached by this hub yet
                ops.append({"volume": name, "file": device, "size": size, "new": not found})
        if not ops:
            return held
        specs = json.dumps([{key: op[key] for key in ("file", "size", "new")} for op in ops])
        answers = await self.run_helper(
            ["python3", "-m", "hub_ext.helpers.quota", "prepare-all", specs], *self.quota_helper_access()
        )
        for op, answer in zip(ops, answers + [{"result": "failed", "reason": "no answer"}] * len(ops)):
            result = answer.get("result")
            if result in ("made", "grown", "shrunk", "unchanged"):
                _QUOTA_APPLIED[op["volume"]] = op["size"]
                self.log.info(
                    "quota of %s: %s, %d bytes, on %s", op["volume"], result, op["size"], answer.get("device")
                )
            elif result == "refused":  # attached at its old size
                self.log.warning("quota of %s stays as it was: %s", op["volume"], answer.get("reason"))
            else:
                raise RuntimeError(f"the quota'd volume {op['volume']} cannot be used: {answer.get('reason', answer)}")
        return held

    async def quota_usage(self) -> dict[str, dict[str, Any]]:
        """For each volume kind the user's policy gives a quota: the quota, whether the volume is held to it (made
        under it), and what is used (from the running lab's df, else from the volume's own filesystem)."""
        try:
            policy = self.effective().policy
        except web.HTTPError:
            return {}
        found = {}
        for kind, field in QUOTA_KINDS.items():
            quota = getattr(policy, field)
            if not quota:
                continue
            entry: dict[str, Any] = {"quota_bytes": size_bytes(quota), "used_bytes": None, "held": False}
            try:
                volume = await self.docker("inspect_volume", self.names.volumes[kind])
            except Exception:  # noqa: BLE001 -- not made yet
                found[kind] = entry
                continue
            device = (volume.get("Options") or {}).get("device")
            entry["held"] = bool(device)
            if device:
                answer = await self.volume_use(kind, device)
                if answer.get("result") == "measured":
                    entry["used_bytes"], entry["filesystem_bytes"] = answer["used"], answer["size"]
            found[kind] = entry
        return found

    async def volume_use(self, kind: str, device: str) -> dict[str, Any]:
        """Size and use of a quota'd volume: from the running lab's df while it is mounted (the superblock on disk
        lags then), else from the volume's own filesystem."""
        return await self.mounted_usage(MOUNTS[kind]) if self.active else await self.quota_helper(["usage", device])

    async def mounted_usage(self, mount: str) -> dict[str, Any]:
        """Size and use of a volume the running lab has mounted, as its `df` says."""
        created = await self.docker("exec_create", self.object_id, ["df", "-B1", "--output=size,used", mount])
        out = (await self.docker("exec_start", created["Id"])).decode(errors="replace").split()
        if len(out) == 4 and out[2].isdigit() and out[3].isdigit():
            return {"result": "measured", "size": int(out[2]), "used": int(out[3])}
        return {"result": "failed", "reason": " ".join(out)[-200:]}

    def quota_helper_access(self) -> tuple[list[str], list[str], list[str]]:
        """What the quota helper gets (binds, capabilities, device rules): the project's quota folder and, to attach
        and detach loop devices, CAP_SYS_ADMIN and the host's /dev with only loop devices allowed (block major 7, and
        /dev/loop-control)."""
        return (
            [f"{self.project_quota_dir}:{self.project_quota_dir}:rw", "/dev:/dev"],
            list(LOOP_CAPABILITIES),
            list(LOOP_DEVICE_RULES),
        )

    async def quota_helper(self, command: list[str]) -> dict[str, Any]:
        answer = await self.run_helper(
            ["python3", "-m", "hub_ext.helpers.quota", *command], *self.quota_helper_access()
        )
        return answer[0] if answer else {"result": "failed", "reason": "the quota helper gave no answer"}

    async def remove_quota_files(self, removed: list[dict[str, Any]], devices: dict[str, str]) -> None:
        """After volumes were removed: delete the files that held the quota'd ones (their data goes with them)."""
        for result in removed:
            device = devices.get(result["volume"])
            if result["result"] == "removed" and device:
                _QUOTA_APPLIED.pop(result["volume"], None)
                answer = await self.quota_helper(["remove", device])
                if answer.get("result") not in ("removed", "none"):
                    self.log.error("the file %s of removed volume %s is left: %s", device, result["volume"], answer)

    async def remove_volumes(self, names: list[str]) -> list[dict[str, Any]]:
        """Delete these volumes of the user's (a reset, a discarded account), in order; one result each. A quota'd
        volume's file goes too."""
        devices = {}
        for name in names:
            with contextlib.suppress(Exception):  # not found: nothing to remove
                device = ((await self.docker("inspect_volume", name)).get("Options") or {}).get("device")
                if device:
                    devices[name] = device
        results = [await remove_volume(self.docker, name, self.project) for name in names]
        await self.remove_quota_files(results, devices)
        return results

    async def volume_sizes(self, names: list[str]) -> dict[str, int | None]:
        """Which of these volumes of the user's exist, with their sizes (None: not measured yet).

        Which exist is asked each time (a cheap listing by name); sizes come from the shared measurement of
        `disk_usage`, which may be up to a minute old and then lacks a volume made since."""
        found = await self.docker("volumes", filters={"name": names})
        return measure((found or {}).get("Volumes") or [], await disk_usage(self.client), names, self.project)

    # -- the lab's own network ------------------------------------------------------------------------
    async def inspect_network(self, name: str) -> dict | None:
        try:
            return await self.docker("inspect_network", name)
        except Exception as exc:
            if not_found(exc):
                return None
            raise

    async def ensure_network(self, name: str) -> None:
        """The lab's network exists, is ours, and the hub is on it. A new one takes the first free /29 of
        the pool; two hubs (projects) sharing a pool skip each other's subnets, as they skip any network's."""
        async with _NETWORK_LOCK:
            found = await self.inspect_network(name)
            if found is None:
                found = await self.create_lab_network(name)  # new: nobody is on it yet
            else:
                owner = foreign_owner(found, self.project)
                if owner:
                    raise RuntimeError(
                        f"network {name} belongs to the hubforge project {owner!r}, not {self.project!r}; "
                        "give each project its own stack network"
                    )
        await self.join_hub(name, found)

    network_prefix = SUBNET_PREFIX  # each lab network's size: a /29 bridge holds the gateway, the lab and the hub
    network_options: dict = {"driver": "bridge"}

    def ipam_pool(self, subnet) -> dict[str, str]:
        return network_spec(subnet)

    async def create_lab_network(self, name: str) -> dict:
        """Make the lab's network on the first free subnet of the pool; returns what an inspection would (Id, IPAM)."""
        pool = ipaddress.ip_network(self.subnet_pool)
        refused: list = []
        for _ in range(8):  # another program may take a subnet between our listing and our create
            used = used_subnets(await self.docker("networks"))
            subnet = free_subnet(pool, used, prefix=self.network_prefix, skip=refused)
            if subnet is None:
                raise RuntimeError(
                    f"no free /{self.network_prefix} left in LAB_SUBNET_POOL={self.subnet_pool} for {self.user.name}'s "
                    "lab network; "
                    "stop unused labs or set a larger LAB_SUBNET_POOL"
                )
            try:
                created = await self.docker(
                    "create_network",
                    name,
                    ipam=IPAMConfig(pool_configs=[IPAMPool(**self.ipam_pool(subnet))]),
                    labels={**self.labels(), ROLE_LABEL: NETWORK_ROLE},
                    check_duplicate=True,
                    **self.network_options,
                )
                self.log.info("lab network %s for %s: %s", name, self.user.name, subnet)
                return {
                    "Id": created["Id"],
                    "Name": name,
                    "IPAM": {"Config": [{"Subnet": str(subnet)}]},
                    "Containers": {},
                }
            except APIError as exc:
                if "overlap" not in str(exc).lower():
                    raise
                refused.append(subnet)
        raise RuntimeError(f"cannot find a free subnet in LAB_SUBNET_POOL={self.subnet_pool}: every try overlapped")

    async def join_hub(self, name: str, found: dict | None) -> None:
        """Connect the hub to the lab's network (`found`: its inspection), under its alias, unless it is there
        already."""
        if found is None:
            return  # a lab from before isolation, still on the stack network
        if not any(
            cid.startswith(self.hub_container) or info.get("Name") == self.hub_container
            for cid, info in (found.get("Containers") or {}).items()
        ):
            await self.connect_hub(name)
        self._hub_joined = True

    async def connect_hub(self, network: str, address: str | None = None) -> None:
        """The hub joins a lab's network under its alias (at `address`, when the engine picks the hub's address
        there), on either engine; already being there is no error."""
        where = {"ipv4_address": address} if address else {}
        try:
            await self.docker(
                "connect_container_to_network", self.hub_container, network, aliases=[self.hub_alias], **where
            )
        except Exception as exc:  # noqa: BLE001 -- docker.errors.APIError, through the executor
            if "already exists" not in str(exc):
                raise RuntimeError(
                    f"the hub ({self.hub_container}) cannot join the lab's network {network[:12]}: {exc}; "
                    "set c.HubforgeSpawner.hub_container to the hub's container name"
                ) from exc

    async def remove_lab_network(self, keep_sandbox: bool = True) -> None:
        """Best effort: the hub leaves, the network goes (its /29 returns to the pool). A failure is logged.

        Where labs run in sandboxes, the network and its sandbox stay when the lab stops (`keep_sandbox`): they go
        when the user is deleted, and at `invoke down`."""
        if not self.lab_networks:
            return
        if self.uses_sandbox:
            if keep_sandbox:
                return
            await self.remove_sandbox()
        name = self.network_name
        try:
            try:
                await self.docker("disconnect_container_from_network", self.hub_container, name, force=True)
            except Exception:  # noqa: BLE001 -- not connected, or no such network: nothing to leave
                pass
            await self.docker("remove_network", name)
        except Exception as exc:  # noqa: BLE001 -- the next start reuses it; `invoke down` removes it
            if not not_found(exc):  # no network (a lab from before isolation): nothing to remove
                self.log.warning("cannot remove the lab network %s: %s", name, exc)
        self._hub_joined = False

    # -- the lab's network sandbox (hub_ext.labs.networks.sandbox_spec) ----------------------------------------------
    @property
    def uses_sandbox(self) -> bool:
        return self.lab_networks and self.lab_sandboxes

    @property
    def sandbox_name(self) -> str:
        return sandbox_name(self.names.container)

    async def inspect_sandbox(self) -> dict | None:
        try:
            return await self.docker("inspect_container", self.sandbox_name)
        except Exception as exc:
            if not_found(exc):
                return None
            raise

    async def ensure_sandbox(self, settings: dict | None = None) -> None:
        """The user's sandbox runs on their lab network: made at their first start (with the operator's DNS and hosts
        `settings`), started again after a daemon restart, made anew if it is on another network (the network was made
        again)."""
        found = await self.inspect_sandbox()
        if found is not None:
            if self.network_name in ((found.get("NetworkSettings") or {}).get("Networks") or {}):
                if not (found.get("State") or {}).get("Running"):
                    await self.docker("start", found["Id"])
                return
            self.log.warning("the network sandbox of %s is on another network: making it again", self.user.name)
            await self.docker("remove_container", found["Id"], force=True)
        spec = sandbox_spec(
            await self.own_image(),
            self.network_name,
            self.project,
            self.user.name,
            self.disable_ipv6,
            self.log_options or {"max-size": "1m", "max-file": "1"},
            settings,
        )
        try:
            created = await self.docker("create_container", name=self.sandbox_name, **spec)
        except APIError as exc:
            if "already in use" not in str(exc):  # another hub process made it in the meantime: use that one
                raise
            created = await self.inspect_sandbox() or {}
        await self.docker("start", created["Id"])
        self.log.info("network sandbox %s for %s on %s", self.sandbox_name, self.user.name, self.network_name)

    async def remove_sandbox(self) -> None:
        """The sandbox goes (the user was deleted); best effort, like its network after it."""
        try:
            await self.docker("remove_container", self.sandbox_name, force=True)
        except Exception as exc:  # noqa: BLE001 -- `invoke down` removes what stays
            if not not_found(exc):
                self.log.warning("cannot remove the network sandbox %s: %s", self.sandbox_name, exc)

    async def get_ip_and_port(self):
        """The lab has the sandbox's address: its own container is in the sandbox's namespace, on no network."""
        if not self.uses_sandbox:
            return await super().get_ip_and_port()
        found = await self.docker("inspect_container", self.sandbox_name)
        return found["NetworkSettings"]["Networks"][self.network_name]["IPAddress"], self.port
