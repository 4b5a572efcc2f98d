"""The compose stack: render the run directory, start it with Compose v2, wait for health, report."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub_ext.config import ConfigError, from_environ, hub_host, parse_gpu_mode
from hub_ext.gpu import ALL_GPUS, decide
from hub_ext.naming import PROJECT_LABEL, ROLE_LABEL, default_volume_prefix
from hub_ext.networks import NETWORK_ROLE

from . import proc
from .docker_io import StackDocker
from .errors import HubforgeError
from .render import render

log = logging.getLogger(__name__)

HEALTH_TIMEOUT = 240
BOOTSTRAP_SECRET = "/srv/jupyterhub/data/admin-bootstrap-secret"  # in the hub's data volume only


@dataclass(frozen=True)
class StackOptions:
    """What `invoke up` was asked for."""

    project: str
    run_dir: Path
    https_port: int = 443
    http_port: int = 80
    bind: str = "0.0.0.0"
    gpu: str | None = None  # auto | on | off; None: ENABLE_GPU_SUPPORT from .env, else auto
    docker_socket: str = "/var/run/docker.sock"
    volume_prefix: str = ""  # "": default_volume_prefix(project)

    def __post_init__(self) -> None:
        if not self.volume_prefix:
            object.__setattr__(self, "volume_prefix", default_volume_prefix(self.project))


def validate_port(name: str, value: object) -> int:
    try:
        port = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise HubforgeError(f"{name}={value!r} is not a port number; use 1-65535") from None
    if not 1 <= port <= 65535:
        raise HubforgeError(f"{name}={value!r} is out of range; use 1-65535")
    return port


def validate_project(project: str) -> str:
    if not project or not all(ch.isalnum() or ch in "-_" for ch in project) or not project[0].isalnum() or project != project.lower():
        raise HubforgeError(f"--project={project!r} is not valid; use lower-case letters, digits, '-' and '_'")
    return project


# -- the run directory ---------------------------------------------------------------------------------
ENV_TEMPLATE = """\
# hubforge stack settings (Compose .env). Kept across `invoke up`; edit and run `invoke up` again.
# Every variable, with its default, is documented in the README ("Configuration").
# JUPYTERHUB_ADMIN=admin
# ENABLE_SIGNUP=1
# JUPYTERHUB_BASE_URL=/
# ENABLE_GPU_SUPPORT=2
# PASSWORD_MIN_LENGTH=8
# LOGIN_MAX_FAILURES=5
# LOGIN_LOCKOUT_SECONDS=600
# LOGIN_ADDRESS_LIMIT=30
# LAB_MEM_LIMIT=4G
# LAB_CPU_LIMIT=2
# LAB_PIDS_LIMIT=1024
# LAB_CPU_SHARES=128
# LAB_READ_ONLY_ROOT=1
# LAB_SERVER_PROXY=0
# HUB_MEM_LIMIT=2G
# HUB_CPU_LIMIT=2
# HUB_PIDS_LIMIT=2048
# ACTIVE_SERVER_LIMIT=0
# CONCURRENT_SPAWN_LIMIT=100
# LAB_START_CONCURRENCY=0
# LAB_START_TIMEOUT=600
# IDLE_CULLER_ENABLED=0
# IDLE_CULLER_TIMEOUT=3600
# JUPYTERHUB_LOGO_URI=
# HUBFORGE_PUBLIC_HOST=hub.localhost
# LAB_SUBDOMAINS=1
# SSL_CERT=
# SSL_KEY=
# LAB_SUBNET_POOL=10.213.0.0/16
# LAB_ALLOWED_RANGES=
# LAB_NETWORK_GUARD=1
# LAB_ADMIN_ACCESS=0
JUPYTERHUB_METRICS_TOKEN={metrics_token}
"""


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a Compose .env file (comments and blank lines skipped, quotes removed)."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise HubforgeError(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip().removeprefix("export ").strip()] = value
    return values


def compose_files(run_dir: Path) -> list[Path]:
    files = [run_dir / "compose.yml"]
    if (run_dir / "compose.override.yml").exists():
        files.append(run_dir / "compose.override.yml")
    return files


def compose_argv(project: str, run_dir: Path, *args: str) -> list[str]:
    argv = ["docker", "compose", "--project-name", project, "--project-directory", str(run_dir)]
    for path in compose_files(run_dir):
        argv += ["--file", str(path)]
    return argv + list(args)


def port_free(bind: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((bind, port))
        except OSError:
            return False
    return True


def resolve(name: str) -> set[str]:
    try:
        return {info[4][0] for info in socket.getaddrinfo(name, 443, proto=socket.IPPROTO_TCP)}
    except (socket.gaierror, UnicodeError):
        return set()


def subdomain_dns_problem(host: str, lookup: Callable[[str], set[str]] = resolve) -> str | None:
    """Why a lab's subdomain of `host` would not reach this hub, or None.

    Names under .localhost need no DNS: browsers send them to loopback themselves (RFC 6761). Any other
    host needs a wildcard record: a made-up subdomain must resolve to where the hub's own name does.
    """
    if host == "localhost" or host.endswith(".localhost"):
        return None
    probe = f"hubforge-dns-check.{host}"
    own, theirs = lookup(host), lookup(probe)
    if not own:
        return f"HUBFORGE_PUBLIC_HOST={host} does not resolve; add a DNS record for it (and *.{host}), or fix the name"
    if not theirs & own:
        found = ", ".join(sorted(theirs)) or "nothing"
        return (f"labs get their own subdomains, but {probe} resolves to {found}, not to {host} ({', '.join(sorted(own))}): "
                f"add a wildcard DNS record *.{host} for this host, or set LAB_SUBDOMAINS=0 in .env (labs then share the hub's origin)")
    return None


def socket_gid(path: str) -> int:
    try:
        info = os.stat(path)
    except OSError as exc:
        raise HubforgeError(f"cannot stat the Docker socket {path} ({exc.strerror}); is the daemon running?") from exc
    if not stat.S_ISSOCK(info.st_mode):
        raise HubforgeError(f"{path} is not a socket; set hubforge.docker_socket in invoke.yaml")
    return info.st_gid


def parse_probe(code: int | None, output: str) -> dict[str, Any]:
    """The probe's JSON, or a no-GPU result that says why there is none."""
    if code is None:
        return {"gpus": [], "driver": None, "cuda": None, "reason": f"Docker refused the GPU request: {output}"}
    try:
        result = json.loads(output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"gpus": [], "driver": None, "cuda": None, "reason": f"probe exited {code} without JSON: {output[:200]!r}"}
    result.setdefault("reason", None)
    return result


def config_digest(hub_config: str, config_d: Path) -> str:
    """A digest of the hub's mounted configuration: a label on the hub, so Compose recreates it when
    jupyterhub_config.py (after an upgrade) or a config.d/*.py file changes, as it does for .env."""
    digest = hashlib.sha256(hub_config.encode())
    for extra in sorted(config_d.glob("*.py")):
        digest.update(extra.name.encode() + b"\0" + extra.read_bytes())
    return digest.hexdigest()[:20]


# -- execute -------------------------------------------------------------------------------------------
class Stack:
    def __init__(self, options: StackOptions, docker: StackDocker, root: Path, say: Callable[[str], None]) -> None:
        self.options = options
        self.docker = docker
        self.root = root
        self.say = say

    @property
    def state_file(self) -> Path:
        return self.options.run_dir / "stack.json"

    def hub_container(self) -> dict | None:
        found = self.docker.containers({"com.docker.compose.project": self.options.project, "com.docker.compose.service": "hub"})
        return found[0] if found else None

    def check_ports(self) -> None:
        hub = self.hub_container()
        ours = set()
        if hub and hub.get("State") == "running":
            ours = {p.get("PublicPort") for p in hub.get("Ports", [])}
        for flag, port in (("--port", self.options.https_port), ("--http-port", self.options.http_port)):
            if port not in ours and not port_free(self.options.bind, port):
                raise HubforgeError(f"port {port} on {self.options.bind} is already in use; choose another with {flag} (nothing was started)")

    def settings(self) -> tuple[dict[str, str], Any]:
        """The .env values, created with a fresh metrics token on the first `up`, and checked."""
        env_path = self.options.run_dir / ".env"
        if not env_path.exists():  # private from its first byte: it holds the metrics token
            with os.fdopen(os.open(env_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as env_file:
                env_file.write(ENV_TEMPLATE.format(metrics_token=secrets.token_hex(24)))
        values = read_env_file(env_path)
        if self.options.gpu is not None:
            values["ENABLE_GPU_SUPPORT"] = self.options.gpu
        try:
            return values, from_environ(values)
        except ConfigError as exc:
            raise HubforgeError(f"{env_path}: {exc}") from None

    def probe_gpu(self, mode: str, probe_image: str) -> dict[str, Any] | None:
        if mode != "auto":
            return None
        self.say("probing for GPUs (gpu-probe with a GPU device request)")
        return parse_probe(*self.docker.run_gpu_probe(probe_image, [dict(ALL_GPUS)]))

    def render(self, variables: Mapping[str, Any]) -> None:
        run_dir = self.options.run_dir
        (run_dir / "config.d").mkdir(parents=True, exist_ok=True)
        hub_config = (self.root / "stack" / "jupyterhub_config.py").read_text()
        (run_dir / "jupyterhub_config.py").write_text(hub_config)
        template = (self.root / "stack" / "compose.yml.j2").read_text()
        variables = {**variables, "config_digest": config_digest(hub_config, run_dir / "config.d")}
        (run_dir / "compose.yml").write_text(render({"compose.yml.j2": template}, "compose.yml.j2", variables))

    def prepare(self, images: Mapping[str, str], lab_images: Mapping[str, str]) -> dict[str, Any]:
        """Check settings and ports, probe GPUs, render the run directory. Starts nothing."""
        options = self.options
        options.run_dir.mkdir(parents=True, exist_ok=True)
        values, hub = self.settings()
        gpu_mode = parse_gpu_mode(values.get("ENABLE_GPU_SUPPORT", "auto"))
        if hub.lab_subdomains:
            problem = subdomain_dns_problem(hub_host(hub))
            if problem:
                raise HubforgeError(f"{problem} (nothing was started)")
        self.check_ports()
        probe = self.probe_gpu(gpu_mode, images["gpu-probe"])
        decision = decide(gpu_mode, probe)
        self.render({
            "run_dir": str(options.run_dir),
            "project": options.project,
            "hub_image": images["hub"],
            "lab_images": dict(lab_images),
            "network": f"{options.project}_net",
            "shared_volume": f"{options.project}_shared",
            "volume_prefix": options.volume_prefix,
            "docker_gid": socket_gid(options.docker_socket),
            "docker_socket": options.docker_socket,
            "https_port": options.https_port,
            "http_port": options.http_port,
            "bind": options.bind,
            "gpu_mode": gpu_mode,
            "gpu_probe": probe,
            "base_url": hub.base_url,
            "hub_mem_limit": hub.hub_mem_limit,
            "hub_cpus": min(hub.hub_cpu_limit, float(self.docker.cpu_count())),
            "hub_pids_limit": hub.hub_pids_limit,
            "network_guard": hub.lab_network_guard,
            "lab_subnet_pool": hub.lab_subnet_pool,
            "lab_allowed_ranges": list(hub.lab_allowed_ranges),
        })
        host = hub_host(hub)
        port = "" if options.https_port == 443 else f":{options.https_port}"
        state = {
            "project": options.project,
            "url": f"https://{host}{port}{hub.base_url}",
            "https_port": options.https_port,
            "http_port": options.http_port,
            "admin": hub.admin,
            "signup": hub.enable_signup,
            "network_guard": hub.lab_network_guard,
            "lab_origin": f"https://<user>.{host}{port}/" if hub.lab_subdomains else "shared with the hub (LAB_SUBDOMAINS=0)",
            "gpu": decision.as_dict(),
            "images": dict(images),
            "lab_images": dict(lab_images),
            "run_dir": str(options.run_dir),
        }
        previous = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        if "bootstrap_shown" in previous:  # the secret was printed by an earlier `up`: not again
            state["bootstrap_shown"] = previous["bootstrap_shown"]
        self.state_file.write_text(json.dumps(state, indent=1))
        return state

    def up(self, images: Mapping[str, str], lab_images: Mapping[str, str], status: Callable[[str], None]) -> dict[str, Any]:
        state = self.prepare(images, lab_images)
        try:
            proc.run(compose_argv(self.options.project, self.options.run_dir, "up", "--detach", "--remove-orphans"),
                     what="docker compose up")
        except HubforgeError:
            self.explain_guard()
            raise
        self.wait_healthy(status)
        secret = self.bootstrap_secret()
        state["admin_unclaimed"] = secret is not None
        if secret is not None:
            digest = hashlib.sha256(secret.encode()).hexdigest()
            if state.get("bootstrap_shown") != digest:  # shown once, like an unlock key; it stays readable in the data volume
                state["bootstrap_secret"] = secret
            state["bootstrap_shown"] = digest
            self.state_file.write_text(json.dumps({k: v for k, v in state.items() if k != "bootstrap_secret"}, indent=1))
        return state

    def explain_guard(self) -> None:
        """When the network guard could not start, its own line says why (Compose only says it exited)."""
        for guard in self.docker.containers({PROJECT_LABEL: self.options.project, ROLE_LABEL: "netguard"}):
            if guard.get("State") in ("exited", "dead", "restarting"):
                last = (self.docker.logs(guard["Id"], tail=1).strip() or "(no output)").removeprefix("hubforge-netguard: ")
                raise HubforgeError(f"the network guard did not start: {last} (`invoke logs netguard` has the rest)")

    def bootstrap_secret(self) -> str | None:
        """The admin's one-time signup secret while the admin is unclaimed, read from the running hub."""
        hub = self.hub_container()
        if not hub or hub.get("State") != "running":
            return None
        code, output = self.docker.exec_output(hub["Id"], ["cat", BOOTSTRAP_SECRET])
        return output.strip() if code == 0 and output.strip() else None

    def wait_healthy(self, status: Callable[[str], None], timeout: float = HEALTH_TIMEOUT) -> None:
        started = time.monotonic()
        while True:
            hub = self.hub_container()
            details = self.docker.inspect_container(hub["Id"]) if hub else None
            state = (details or {}).get("State", {})
            health = state.get("Health", {}).get("Status", "starting")
            elapsed = time.monotonic() - started
            if state.get("Status") == "running" and health == "healthy":
                return
            if details and (state.get("Status") in ("exited", "dead") or state.get("Restarting")):
                tail = self.docker.logs(hub["Id"], tail=15).strip()
                raise HubforgeError(f"the hub stopped while starting; its last lines:\n{tail}\n(see `invoke logs hub`)")
            if elapsed > timeout:
                tail = self.docker.logs(hub["Id"], tail=15).strip() if hub else "(no hub container)"
                raise HubforgeError(f"the hub was not healthy after {timeout:.0f}s (state {health}); last lines:\n{tail}")
            status(f"waiting for the hub to become healthy ({health}, {elapsed:.0f}s)")
            time.sleep(1)

    def lab_containers(self) -> list[dict]:
        return [c for c in self.docker.containers({PROJECT_LABEL: self.options.project})
                if c.get("Labels", {}).get("hubforge.user")]

    def down(self, volumes: bool, user_volumes: bool) -> list[str]:
        """Stop and remove the stack's containers (labs too); volumes only when asked. Returns what went."""
        removed = []
        for lab in self.lab_containers():
            self.docker.remove_container(lab["Id"])
            removed.append(lab["Names"][0].lstrip("/"))
        if (self.options.run_dir / "compose.yml").exists():
            args = ["down", "--remove-orphans"] + (["--volumes"] if volumes else [])
            proc.run(compose_argv(self.options.project, self.options.run_dir, *args), what="docker compose down")
        else:
            for container in self.docker.containers({"com.docker.compose.project": self.options.project}):
                self.docker.remove_container(container["Id"])
        for network in self.docker.networks({PROJECT_LABEL: self.options.project, ROLE_LABEL: NETWORK_ROLE}):
            if self.docker.remove_network(network["Id"]):
                removed.append(network["Name"])
        if volumes:
            for volume in self.docker.volumes({PROJECT_LABEL: self.options.project}):
                kind = volume.get("Labels", {}).get("hubforge.volume")
                is_user = bool(volume.get("Labels", {}).get("hubforge.user"))
                if (is_user and user_volumes) or (not is_user and kind):
                    if self.docker.remove_volume(volume["Name"]):
                        removed.append(volume["Name"])
        return removed

    def status(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self.state_file.read_text()) if self.state_file.exists() else {"project": self.options.project}
        services = []
        for container in self.docker.containers({"com.docker.compose.project": self.options.project}):
            details = self.docker.inspect_container(container["Id"]) or {}
            services.append({
                "service": container["Labels"].get("com.docker.compose.service"),
                "container": container["Names"][0].lstrip("/"),
                "state": container.get("State"),
                "health": details.get("State", {}).get("Health", {}).get("Status"),
            })
        labs = []
        for container in self.lab_containers():
            details = self.docker.inspect_container(container["Id"]) or {}
            labs.append({
                "user": container["Labels"].get("hubforge.user"),
                "container": container["Names"][0].lstrip("/"),
                "image": container.get("Image"),
                "state": container.get("State"),
                "health": details.get("State", {}).get("Health", {}).get("Status"),
                "device_requests": (details.get("HostConfig") or {}).get("DeviceRequests") or [],
            })
        state["services"] = services
        state["labs"] = labs
        state["admin_unclaimed"] = self.bootstrap_secret() is not None
        state.pop("bootstrap_shown", None)
        state["running"] = any(s["service"] == "hub" and s["state"] == "running" for s in services)
        return state
