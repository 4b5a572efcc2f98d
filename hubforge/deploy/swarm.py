"""The swarm engine: the same rendered stack, deployed with `docker stack deploy` from a manager node.

The hub is a service pinned to a manager (it drives the swarm through the manager's socket); each lab is
a service of its own (hub_ext.spawn.swarm). `invoke up --engine swarm` makes this host a single-node swarm
when it is in none, so a fresh machine needs no step of its own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hub_ext.helpers.netguard import READY as GUARD_READY
from hub_ext.labs.runtime import log_options
from hub_ext.naming import PROJECT_LABEL, ROLE_LABEL, USER_LABEL
from hub_ext.settings.hub import HubConfig

from .. import proc
from ..errors import HubforgeError
from .engine import Stack, private_file
from .settings import port_free

NAMESPACE = "com.docker.stack.namespace"
SERVICE = "com.docker.swarm.service.name"
REMOVE_TIMEOUT = 60.0
REGISTRY_TIMEOUT = 90.0
IMAGE_MAP = "registry/images.json"  # in the run directory; the hub reads it at every spawn (hub_ext.spawn.swarm)
MANIFESTS = ", ".join(
    ("application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json")
)
AUTH_DIR = "registry-auth"  # in the run directory, 0700, outside the hub's bind: the registry's credentials
AUTH_USER = "hubforge"
# Distribution checks the password's bcrypt hash at every request of a push or pull, so the cost is the least bcrypt
# takes: the password is 256 random bits, which no cost factor makes any harder to guess.
HTPASSWD_ROUNDS = 4


def advertise_address() -> str:
    """The address this host reaches others from (the default route's source; nothing is sent), else loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: picks the outgoing interface, sends no packet
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def routing_mesh_available() -> bool:
    """Whether this kernel has IPVS, which Swarm's routing mesh and virtual IPs need: loaded, built in, or a module."""
    if Path("/proc/net/ip_vs").exists() or Path("/sys/module/ip_vs").exists():
        return True
    return any(Path("/lib/modules", os.uname().release).glob("kernel/net/netfilter/ipvs/ip_vs.ko*"))


def registry_manifest(
    registry: str, repository: str, digest: str, auth: Mapping[str, str], timeout: float = 10.0
) -> bytes | None:
    """The manifest that `registry` holds under `digest`, as its bytes, or None when it has none."""
    token = base64.b64encode(f"{auth['username']}:{auth['password']}".encode()).decode()
    request = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{digest}",
        headers={"Accept": MANIFESTS, "Authorization": f"Basic {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 -- our own registry, on loopback
            return answer.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise HubforgeError(
            f"the stack's registry at {registry} answered {exc.code} for {repository}@{digest}"
        ) from None


def built_here(manifest: bytes | None, digest: str, image_id: str) -> bool:
    """Whether `manifest`, fetched by `digest`, is the image this engine holds as `image_id`: its bytes hash to the
    digest (a node checks the same when it pulls), and it names the image's config, whose digest is the image id
    (with the classic image store, what `docker push` sends; with containerd's store the id is the manifest's own
    digest). The config lists every layer by its content's hash, so nothing else can be pulled under that digest."""
    if manifest is None or f"sha256:{hashlib.sha256(manifest).hexdigest()}" != digest:
        return False
    try:
        config = (json.loads(manifest).get("config") or {}).get("digest")
    except (ValueError, AttributeError):
        return False
    return image_id in (config, digest)


def stack_registry_name(ref: str) -> tuple[str, str]:
    """(repository, tag) of an image in the stack's registry: a built image's own (hubforge/hub, its key); a
    release's pinned by digest (registry.example.org/team/hub@sha256:<hex>) as team/hub, tagged with the digest."""
    if "@" in ref:
        name, digest = ref.split("@", 1)
        first, _, rest = name.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):  # a registry host, not a namespace
            name = rest
        return name, digest.replace(":", "-")
    repository, key = ref.rsplit(":", 1)
    return repository, key


def registry_answers(registry: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{registry}/v2/", timeout=2) as answer:  # noqa: S310
            return answer.status == 200
    except urllib.error.HTTPError as exc:
        return exc.code == 401  # it is up, and asks for credentials
    except OSError:
        return False


def htpasswd_line(username: str, password: str, rounds: int = HTPASSWD_ROUNDS) -> str:
    """One line of an htpasswd file as Distribution reads it: bcrypt, the only hash it takes."""
    import bcrypt  # only the swarm engine's first `up` needs it

    return f"{username}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()}\n"


def registry_credentials(folder: Path) -> dict[str, str]:
    """The registry's one user and password, made at random at the first `up` and kept in `folder` (0700): auth.json
    for the manager and the hub, which log in with it, and htpasswd for the registry, which checks it. Each is 0600."""
    folder.mkdir(mode=0o700, exist_ok=True)
    auth_file, htpasswd = folder / "auth.json", folder / "htpasswd"
    if not auth_file.exists():
        htpasswd.unlink(missing_ok=True)  # made for another password
        private_file(auth_file, json.dumps({"username": AUTH_USER, "password": secrets.token_urlsafe(32)}) + "\n")
    auth = json.loads(auth_file.read_text())
    if not htpasswd.exists():
        private_file(htpasswd, htpasswd_line(auth["username"], auth["password"]))
    return {"username": auth["username"], "password": auth["password"]}


def swarm_secret(name: str, path: Path) -> dict[str, str]:
    """A file given to a service as a swarm secret: its path, and a name that changes with its contents (a swarm
    secret cannot change in place, so a new one replaces it)."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return {"file": str(path.resolve()), "name": f"{name}_{digest}"}


def guard_command(
    project: str, hub: HubConfig, interface: str, https_port: int, http_port: int, registry_port: int | None = None
) -> list[str]:
    """The global guard's command. The only DNAT-ed connections it lets through are to the hub's own published
    ports, matched with the hub's container ports (8443, 8080): the registry's port (5000 inside) can never pass.
    The registry's published port is also closed to labs outright (--closed), at the node's public addresses too,
    where Docker's proxy would answer them."""
    return [
        "python3",
        "-m",
        "hub_ext.helpers.netguard",
        "--project",
        project,
        "--pool",
        str(hub.lab_subnet_pool),
        "--interface",
        interface,
        *(a for net in hub.lab_allowed_ranges for a in ("--allow", str(net))),
        "--publish",
        f"{https_port}:8443",
        "--publish",
        f"{http_port}:8080",
        *(("--closed", str(registry_port)) if registry_port else ()),
    ]


def node_summary(node: dict[str, Any]) -> dict[str, Any]:
    spec, description, status = node.get("Spec") or {}, node.get("Description") or {}, node.get("Status") or {}
    generic = (description.get("Resources") or {}).get("GenericResources") or []
    gpus = sum(
        int((r.get("DiscreteResourceSpec") or {}).get("Value", 0))
        for r in generic
        if "GPU" in (r.get("DiscreteResourceSpec") or {}).get("Kind", "").upper()
    )
    return {
        "id": node.get("ID", ""),
        "hostname": description.get("Hostname", "?"),
        "role": spec.get("Role", "?"),
        "availability": spec.get("Availability", "?"),
        "state": status.get("State", "?"),
        "address": status.get("Addr", ""),
        "gpus": gpus,
        "labels": spec.get("Labels") or {},
    }


def node_names(nodes: list[dict[str, Any]]) -> dict[str, str]:
    """Node id -> what status calls it: its hostname, with the id's start when several nodes share one."""
    counts: dict[str, int] = {}
    for node in nodes:
        counts[node["hostname"]] = counts.get(node["hostname"], 0) + 1
    return {n["id"]: n["hostname"] if counts[n["hostname"]] == 1 else f"{n['hostname']}/{n['id'][:6]}" for n in nodes}


def running_task(tasks: list[dict]) -> dict | None:
    """The task that runs (or is about to), else the newest."""
    live = [t for t in tasks if (t.get("DesiredState") == "running")]
    pool = live or tasks
    return max(pool, key=lambda t: t.get("UpdatedAt", "")) if pool else None


class SwarmStack(Stack):
    run_file = "stack.yml"
    template = "compose.yml.j2"
    guards_labs = True  # a global service: the guard on every node, matching what leaves through docker_gwbridge
    gateway_bridge = "docker_gwbridge"

    def in_swarm(self) -> bool:
        state = self.docker.swarm_state()
        return state.get("LocalNodeState") == "active" and bool(state.get("ControlAvailable"))

    @property
    def hub_service(self) -> str:
        return f"{self.options.project}_hub"

    def ensure_manager(self) -> None:
        state = self.docker.swarm_state()
        if state.get("LocalNodeState") in (None, "", "inactive"):
            address = advertise_address()
            self.say(f"this host is in no swarm: making it a single-node swarm (manager, advertised at {address})")
            self.docker.swarm_init(address)
        elif state.get("LocalNodeState") != "active":
            raise HubforgeError(
                f"this host's swarm membership is {state.get('LocalNodeState')!r}; "
                "wait for it to settle, or `docker swarm leave` and run `invoke up --engine swarm` again"
            )
        elif not state.get("ControlAvailable"):
            raise HubforgeError("this host is a swarm worker: run `invoke up --engine swarm` on a manager node")

    @property
    def registry(self) -> str:
        """Where every node pulls the stack's images: its own loopback (the routing mesh, or a forward, behind it)."""
        return f"127.0.0.1:{self.options.registry_port}"

    @property
    def routing_mesh(self) -> bool:
        return self.options.routing_mesh == "on" or (self.options.routing_mesh == "auto" and routing_mesh_available())

    def check_ports(self) -> None:
        self.ensure_manager()  # before anything asks the swarm
        for service in self.docker.services({NAMESPACE: self.options.project}):
            if service["Spec"]["Name"] == self.hub_service:
                return  # ours: `up` again updates the stack in place
        super().check_ports()
        if not port_free("0.0.0.0", self.options.registry_port):
            raise HubforgeError(
                f"port {self.options.registry_port} (the swarm's image registry) is already in use; choose "
                "another with hubforge.swarm_registry_port in invoke.yaml (nothing was started)"
            )

    def engine_variables(self) -> dict[str, Any]:
        if self.options.bind not in ("0.0.0.0", "::"):
            raise HubforgeError(
                f"--bind {self.options.bind} cannot be honoured on the swarm engine: Swarm publishes a service's "
                "ports on every address of its node; use --bind 0.0.0.0 (and a firewall) or the compose engine"
            )
        self.ensure_manager()
        image_map = self.options.run_dir / IMAGE_MAP
        image_map.parent.mkdir(exist_ok=True)
        if not image_map.exists():
            image_map.write_text("{}\n")  # the bind's source must exist; until the push, labs stay on this manager
        auth_dir = self.options.run_dir / AUTH_DIR
        registry_credentials(auth_dir)
        return {
            "manager_node": self.docker.swarm_node_id(),
            "registry_port": self.options.registry_port,
            "registry_mesh": self.routing_mesh,
            "registry_secrets": {
                "htpasswd": swarm_secret(f"{self.options.project}_registry_htpasswd", auth_dir / "htpasswd"),
                "auth": swarm_secret(f"{self.options.project}_registry_auth", auth_dir / "auth.json"),
            },
        }

    def distribute(
        self, images: Mapping[str, str], lab_images: Mapping[str, str], status: Callable[[str], None]
    ) -> None:
        """Push the hub's and the labs' images to the stack's registry and record the digest of each in images.json,
        from which the hub runs labs and helpers on any node. Workers pull on first use.

        A tag in the registry is never trusted: whoever reaches it could have pushed there. A digest is pinned only
        once its manifest there is checked to be the image built here (built_here), so an image stays pinned across
        `up`s while it checks out, and is pushed again (with the registry's credentials) when it does not."""
        deadline = time.monotonic() + REGISTRY_TIMEOUT
        while not registry_answers(self.registry):
            if time.monotonic() > deadline:
                raise HubforgeError(
                    f"the stack's registry did not answer at {self.registry} within {REGISTRY_TIMEOUT:.0f} s "
                    "(`invoke logs registry`); labs can still run on this manager"
                )
            status(f"waiting for the stack's registry at {self.registry}")
            time.sleep(0.5)
        auth = registry_credentials(self.options.run_dir / AUTH_DIR)
        self.docker.login(self.registry, auth["username"], auth["password"])  # the push, and the guard's service
        pinned = {}
        # the hub's image runs labs' helpers and the backup's on every node, and the backup image restic there
        for ref in sorted({images["hub"], *([images["backup"]] if "backup" in images else []), *lab_images.values()}):
            repository, key = stack_registry_name(ref)
            image_id = self.docker.inspect(ref)["Id"]
            digest = (self.pinned(ref) or "").removeprefix(f"{self.registry}/{repository}@")
            if not built_here(
                registry_manifest(self.registry, repository, digest, auth) if digest.startswith("sha256:") else None,
                digest,
                image_id,
            ):
                status(f"pushing {ref} to the stack's registry")
                started = time.monotonic()
                self.docker.tag(ref, f"{self.registry}/{repository}", key)
                digest = self.docker.push(f"{self.registry}/{repository}", key)
                if not built_here(registry_manifest(self.registry, repository, digest, auth), digest, image_id):
                    raise HubforgeError(
                        f"the stack's registry holds {repository}@{digest} where the push of {ref} reported it, "
                        f"but that is not the image built here ({image_id[:19]}); nothing was pinned "
                        "(`invoke logs registry`)"
                    )
                self.say(f"pushed {ref} to the stack's registry in {time.monotonic() - started:.1f} s")
            pinned[ref] = f"{self.registry}/{repository}@{digest}"
        image_map = self.options.run_dir / IMAGE_MAP
        staged = image_map.with_suffix(".tmp")
        staged.write_text(json.dumps(pinned, indent=1, sort_keys=True) + "\n")
        staged.replace(image_map)
        self.guard_nodes(pinned[images["hub"]])
        workers = [n for n in self.docker.nodes() if (n.get("Spec") or {}).get("Role") == "worker"]
        if workers and not self.routing_mesh:
            self.say(
                f"note: the routing mesh is off (no IPVS here): the {len(workers)} worker(s) reach the registry at "
                f'{self.registry} only through a forward of their own to this manager (README: "Running on several '
                'hosts")'
            )

    def hub_container(self) -> dict | None:
        found = self.hub_containers()
        found.sort(key=lambda c: (c.get("State") != "running", -c.get("Created", 0)))
        return found[0] if found else None

    def remove_hub(self) -> None:
        """The hub's service scaled to none (the next deploy sets it back to one), and its containers gone: the
        running one stopped by Swarm, the exited ones of earlier tasks removed, so none holds the data volume."""
        proc.run(["docker", "service", "scale", "--detach", f"{self.hub_service}=0"], what="docker service scale")
        deadline = time.monotonic() + REMOVE_TIMEOUT
        while any(c.get("State") in ("running", "restarting") for c in self.hub_containers()):
            if time.monotonic() > deadline:
                raise HubforgeError(f"the hub's container did not stop within {REMOVE_TIMEOUT:.0f} s")
            time.sleep(0.5)
        for container in self.hub_containers():
            self.docker.remove_container(container["Id"])

    def proxy_container(self) -> dict | None:
        """The proxy's container on this manager, the running one first."""
        found = self.docker.containers({NAMESPACE: self.options.project, SERVICE: f"{self.options.project}_proxy"})
        found.sort(key=lambda c: (c.get("State") != "running", -c.get("Created", 0)))
        return found[0] if found else None

    def hub_containers(self) -> list[dict]:
        return self.docker.containers({NAMESPACE: self.options.project, SERVICE: self.hub_service})

    def start(self, rendered: Mapping[str, Any]) -> None:
        proc.run(
            [
                "docker",
                "stack",
                "deploy",
                "--compose-file",
                str(self.options.run_dir / self.run_file),
                "--prune",
                "--resolve-image",
                "never",
                self.options.project,
            ],
            what="docker stack deploy",
        )

    def pinned(self, ref: str) -> str | None:
        """`ref` as the nodes pull it (images.json, written by `distribute`), or None before the push."""
        try:
            return json.loads((self.options.run_dir / IMAGE_MAP).read_text()).get(ref)
        except (OSError, ValueError, AttributeError):
            return None

    @property
    def guard_service(self) -> str:
        return f"{self.options.project}_netguard"

    def guard_nodes(self, hub_image: str) -> None:
        """The network guard of the compose engine, as a global service from the registry's hub image: every node,
        a node that joins later included, keeps its labs off link-local and private addresses (LAB_NETWORK_GUARD)."""
        _, hub = self.settings()
        if not hub.lab_network_guard:
            self.docker.remove_service(self.guard_service)
            return
        command = guard_command(
            self.options.project,
            hub,
            self.gateway_bridge,
            self.options.https_port,
            self.options.http_port,
            self.options.registry_port,
        )
        labels = {PROJECT_LABEL: self.options.project, ROLE_LABEL: "netguard"}
        if self.docker.ensure_host_service(
            self.guard_service,
            hub_image,
            command,
            labels,
            ["NET_ADMIN", "NET_RAW"],
            ready_file=str(GUARD_READY),
            log_options=log_options(hub.log_max_size, hub.log_max_files),
        ):
            self.say("the network guard runs on every node (a global service)")

    def lab_services(self) -> list[dict]:
        if not self.in_swarm():
            return []
        return [
            s
            for s in self.docker.services({PROJECT_LABEL: self.options.project})
            if (s["Spec"].get("Labels") or {}).get(USER_LABEL)
        ]

    def lab_logs_argv(self, name: str, follow: bool, tail: int) -> list[str] | None:
        """A lab is a service here: `docker service logs` reads its task's logs on whichever node it runs."""
        for service in self.lab_services():
            if name in (service["Spec"]["Labels"][USER_LABEL], service["Spec"]["Name"]):
                return ["docker", "service", "logs", f"--tail={tail}", *(["--follow"] if follow else []), service["ID"]]
        return super().lab_logs_argv(name, follow, tail)

    def lab_users(self) -> list[str]:
        return sorted({*(s["Spec"]["Labels"][USER_LABEL] for s in self.lab_services()), *super().lab_users()})

    def remove_labs(self) -> list[str]:
        removed = []
        for service in self.lab_services():
            if self.docker.remove_service(service["ID"]):
                removed.append(service["Spec"]["Name"])
        return removed + super().remove_labs()

    def remove(self, volumes: bool) -> None:
        if self.in_swarm():
            self.docker.remove_service(self.guard_service)  # not part of the stack file: made after the push
        if self.in_swarm() and self.docker.services({NAMESPACE: self.options.project}):
            proc.run(["docker", "stack", "rm", self.options.project], what="docker stack rm")
        deadline = time.monotonic() + REMOVE_TIMEOUT  # `stack rm` returns before the containers are gone
        while self.docker.containers({NAMESPACE: self.options.project}) and time.monotonic() < deadline:
            time.sleep(0.5)

    def services(self) -> list[dict[str, Any]]:
        if not self.in_swarm():
            return []
        nodes = node_names([node_summary(n) for n in self.docker.nodes()])
        services = []
        guard = self.docker.services({PROJECT_LABEL: self.options.project, ROLE_LABEL: "netguard"})
        for service in [*self.docker.services({NAMESPACE: self.options.project}), *guard]:
            task = running_task(self.docker.tasks(service["ID"]))
            status = (task or {}).get("Status") or {}
            container = (status.get("ContainerStatus") or {}).get("ContainerID", "")
            details = self.docker.inspect_container(container) if container else None
            services.append(
                {
                    "service": service["Spec"]["Name"].removeprefix(f"{self.options.project}_"),
                    "container": (details or {}).get("Name", "").lstrip("/") or container[:12] or "-",
                    "state": status.get("State", "no task"),
                    "health": ((details or {}).get("State") or {}).get("Health", {}).get("Status"),
                    "node": nodes.get((task or {}).get("NodeID", ""), "?"),
                }
            )
        return services

    def engine_state(self) -> dict[str, Any]:
        if not self.in_swarm():
            return {"nodes": [], "lab_placement": {}}
        nodes = [node_summary(n) for n in self.docker.nodes()]
        names = node_names(nodes)
        for node in nodes:
            node["name"] = names[node["id"]]
        placement = {}
        for service in self.lab_services():
            task = running_task(self.docker.tasks(service["ID"]))
            user = service["Spec"]["Labels"][USER_LABEL]
            placement[user] = {
                "service": service["Spec"]["Name"],
                "node": names.get((task or {}).get("NodeID", ""), "?"),
                "state": ((task or {}).get("Status") or {}).get("State", "no task"),
            }
        return {"nodes": nodes, "lab_placement": placement}

    def logs_argv(self, service: str | None, follow: bool, tail: int) -> list[str]:
        name = f"{self.options.project}_{service or 'hub'}"
        return ["docker", "service", "logs", f"--tail={tail}", *(["--follow"] if follow else []), name]
