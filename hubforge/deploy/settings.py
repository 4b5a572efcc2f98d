"""What every engine shares: the options of `invoke up`, the .env file, ports, DNS, the socket and the GPU probe."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub_ext.naming import default_volume_prefix
from hub_ext.settings.hub import ENGINES

from ..errors import HubforgeError

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
    engine: str = "compose"  # compose | swarm (ENGINES)
    volume_prefix: str = ""  # "": default_volume_prefix(project)
    registry_port: int = 5000  # swarm: the image registry's port on every node (hubforge.swarm_registry_port)
    routing_mesh: str = "auto"  # swarm: auto | on | off -- publish the registry through the routing mesh (IPVS)
    monitoring: bool = False  # `invoke up --monitoring`: MONITORING=1 for this run, whatever .env says

    def __post_init__(self) -> None:
        if not self.volume_prefix:
            object.__setattr__(self, "volume_prefix", default_volume_prefix(self.project))


def validate_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise HubforgeError(f"--engine={engine!r} is not an engine; use {' or '.join(ENGINES)}")
    return engine


ROUTING_MESH = ("auto", "on", "off")


def validate_routing_mesh(value: str) -> str:
    if value not in ROUTING_MESH:
        raise HubforgeError(f"hubforge.swarm_routing_mesh={value!r} is not valid; use auto, on or off")
    return value


def recorded_engine(run_dir: Path) -> str | None:
    """The engine the stack in `run_dir` was last started with (stack.json), if any."""
    try:
        engine = json.loads((run_dir / "stack.json").read_text()).get("engine")
    except (OSError, ValueError, AttributeError):
        return None
    return engine if engine in ENGINES else None


def validate_port(name: str, value: object) -> int:
    try:
        port = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise HubforgeError(f"{name}={value!r} is not a port number; use 1-65535") from None
    if not 1 <= port <= 65535:
        raise HubforgeError(f"{name}={value!r} is out of range; use 1-65535")
    return port


def validate_project(project: str) -> str:
    if (
        not project
        or not all(ch.isalnum() or ch in "-_" for ch in project)
        or not project[0].isalnum()
        or project != project.lower()
    ):
        raise HubforgeError(f"--project={project!r} is not valid; use lower-case letters, digits, '-' and '_'")
    return project


# -- the run directory ---------------------------------------------------------------------------------


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
        return (
            f"labs get their own subdomains, but {probe} resolves to {found}, not to {host} "
            f"({', '.join(sorted(own))}): "
            f"add a wildcard DNS record *.{host} for this host, or set LAB_SUBDOMAINS=0 in .env (labs then share the "
            "hub's origin)"
        )
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
        return {
            "gpus": [],
            "driver": None,
            "cuda": None,
            "reason": f"probe exited {code} without JSON: {output[:200]!r}",
        }
    result.setdefault("reason", None)
    return result


def config_digest(hub_config: str, config_d: Path) -> str:
    """A digest of the hub's mounted configuration: a label on the hub, so Compose recreates it when
    jupyterhub_config.py (after an upgrade) or a config.d/*.py file changes, as it does for .env."""
    digest = hashlib.sha256(hub_config.encode())
    for extra in sorted(config_d.glob("*.py")):
        digest.update(extra.name.encode() + b"\0" + extra.read_bytes())
    return digest.hexdigest()[:20]
