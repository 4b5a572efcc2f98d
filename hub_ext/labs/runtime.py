"""Per-user lab runtime as data: volumes, host config and environment from the user's merged group policy and the
GPUs handed to the lab."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hub_ext.labs.gpu import lab_gpu_options
from hub_ext.labs.policy import Policy
from hub_ext.naming import GROUPS_MOUNT, SHARED_MOUNT, UserNames
from hub_ext.settings.hub import DEFAULT_LOG_MAX_FILES, DEFAULT_LOG_MAX_SIZE

LAB_SOCKET = "/var/run/docker.sock"
SERVER_PROXY_EXTENSION = "jupyter_server_proxy"
LOG_DRIVER = "json-file"  # set on every container the stack runs, whatever the daemon's default: its rotation is ours


def log_options(max_size: str, max_files: int) -> dict[str, str]:
    """json-file's rotation (LOG_MAX_SIZE, LOG_MAX_FILES): a container that prints without end keeps at most
    max_size x max_files of log on the host. The same options for a container, a service's task and a Compose
    service."""
    return {"max-size": max_size, "max-file": str(max_files)}


def default_log_options() -> dict[str, str]:
    return log_options(DEFAULT_LOG_MAX_SIZE, DEFAULT_LOG_MAX_FILES)


@dataclass(frozen=True)
class LabRuntime:
    volumes: dict[str, dict[str, str]]  # source (volume name or host path) -> {"bind": path, "mode": rw|ro}
    host_config: dict[str, Any]
    environment: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()  # extra arguments of the lab's server


def lab_runtime(
    *,
    names: UserNames,
    policy: Policy,
    shared_volume: str,
    gpus: list[str] | str | None = None,
    folders: Mapping[str, tuple[str, str]] | None = None,
    cpu_shares: int = 128,
    read_only_root: bool = True,
    docker_socket: str = "/var/run/docker.sock",
    docker_socket_gid: int | None = None,
    services: Mapping[str, str] | None = None,
    disable_ipv6: bool = False,
    server_proxy: bool = False,
    logs: Mapping[str, str] | None = None,
) -> LabRuntime:
    """Everything a lab container gets, computed fresh from its inputs on every spawn.

    `policy` is the user's merged group policy (hub_ext.labs.policy): its processes, Docker rights and environment
    (memory and CPUs are the spawner's own mem_limit and cpu_limit); `folders` maps each group folder's volume to
    (group, "rw" | "ro"); `gpus` is what hub_ext.labs.gpu.allocate handed out.
    Nothing is carried over from an earlier spawn, so leaving a group removes what it granted.
    """
    volumes = {name: {"bind": path, "mode": "rw"} for name, path in names.mounts().items()}
    volumes[shared_volume] = {"bind": SHARED_MOUNT, "mode": "rw"}
    for volume, (group, mode) in sorted((folders or {}).items()):
        volumes[volume] = {"bind": f"{GROUPS_MOUNT}/{group}", "mode": mode}
    # The spawner removes the container itself when the server stops (DockerSpawner.remove). Docker's
    # AutoRemove is off because `docker restart` of an AutoRemove container races with the removal:
    # now and then the container is gone, or "marked for removal and cannot be started", after a restart.
    # cpu_shares: under contention a lab weighs half of the hub (1024), so a busy host still answers logins
    host_config: dict[str, Any] = {
        "pids_limit": policy.pids_limit,
        "cpu_shares": cpu_shares,
        "auto_remove": False,
        "log_config": {"type": LOG_DRIVER, "config": dict(logs or default_log_options())},
    }
    if read_only_root:  # the image cannot be changed from inside: only the volumes and a private /tmp are writable
        host_config["read_only"] = True
        host_config["tmpfs"] = {"/tmp": "mode=1777,nosuid,nodev"}  # in RAM: counts against the lab's memory limit
    if policy.docker_privileged:
        host_config["privileged"] = True  # all capabilities: dropping any would contradict the grant
    else:
        host_config["privileged"] = False
        host_config["cap_drop"] = ["ALL"]  # Jupyter runs as uid 1000 and needs no capability
        host_config["security_opt"] = ["no-new-privileges:true"]
    if policy.docker_sock:
        volumes[docker_socket] = {"bind": LAB_SOCKET, "mode": "rw"}
        if docker_socket_gid is not None:
            host_config["group_add"] = [str(docker_socket_gid)]
    if disable_ipv6:  # lab networks are IPv4 only; link-local IPv6 would reach the host around the guard's rules
        host_config["sysctls"] = {"net.ipv6.conf.all.disable_ipv6": "1"}
    device_requests, gpu_env = lab_gpu_options(gpus)
    host_config["device_requests"] = device_requests
    environment = {**dict(policy.environment), **gpu_env, **dict(services or {})}
    # jupyter-server-proxy (/proxy/<port>/ for web apps a user runs) ships in the lab but is off in its image:
    # its import alone (aiohttp) costs about 0.25 s of CPU at every lab start. LAB_SERVER_PROXY=1 turns it on.
    args = (f"--ServerApp.jpserver_extensions={SERVER_PROXY_EXTENSION}=True",) if server_proxy else ()
    return LabRuntime(volumes, host_config, environment, args)
