"""The swarm engine: the same rendered stack, deployed with `docker stack deploy` from a manager node.

The hub is a service pinned to a manager (it drives the swarm through the manager's socket); each lab is
a service of its own (hub_ext.swarm). `invoke up --engine swarm` makes this host a single-node swarm
when it is in none, so a fresh machine needs no step of its own.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from hub_ext.naming import PROJECT_LABEL, USER_LABEL

from .. import proc
from ..errors import HubforgeError
from .engine import Stack

NAMESPACE = "com.docker.stack.namespace"
SERVICE = "com.docker.swarm.service.name"
REMOVE_TIMEOUT = 60.0


def advertise_address() -> str:
    """The address this host reaches others from (the default route's source; nothing is sent), else loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: picks the outgoing interface, sends no packet
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def node_summary(node: dict[str, Any]) -> dict[str, Any]:
    spec, description, status = node.get("Spec") or {}, node.get("Description") or {}, node.get("Status") or {}
    generic = (description.get("Resources") or {}).get("GenericResources") or []
    gpus = sum(int((r.get("DiscreteResourceSpec") or {}).get("Value", 0)) for r in generic
               if "GPU" in (r.get("DiscreteResourceSpec") or {}).get("Kind", "").upper())
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


def running_task(tasks: list[dict]) -> dict | None:
    """The task that runs (or is about to), else the newest."""
    live = [t for t in tasks if (t.get("DesiredState") == "running")]
    pool = live or tasks
    return max(pool, key=lambda t: t.get("UpdatedAt", "")) if pool else None


class SwarmStack(Stack):
    run_file = "stack.yml"
    template = "compose.yml.j2"
    guards_labs = False  # the network guard's rules match bridge sources; overlay traffic leaves through docker_gwbridge

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
            raise HubforgeError(f"this host's swarm membership is {state.get('LocalNodeState')!r}; "
                                "wait for it to settle, or `docker swarm leave` and run `invoke up --engine swarm` again")
        elif not state.get("ControlAvailable"):
            raise HubforgeError("this host is a swarm worker: run `invoke up --engine swarm` on a manager node")

    def check_ports(self) -> None:
        self.ensure_manager()  # before anything asks the swarm
        for service in self.docker.services({NAMESPACE: self.options.project}):
            if service["Spec"]["Name"] == self.hub_service:
                return  # ours: `up` again updates the stack in place
        super().check_ports()

    def engine_variables(self) -> dict[str, Any]:
        if self.options.bind not in ("0.0.0.0", "::"):
            raise HubforgeError(f"--bind {self.options.bind} cannot be honoured on the swarm engine: Swarm publishes a service's "
                                "ports on every address of its node; use --bind 0.0.0.0 (and a firewall) or the compose engine")
        self.ensure_manager()
        return {"manager_node": self.docker.swarm_node_id()}

    def hub_container(self) -> dict | None:
        found = [c for c in self.docker.containers({NAMESPACE: self.options.project, SERVICE: self.hub_service})]
        found.sort(key=lambda c: (c.get("State") != "running", -c.get("Created", 0)))
        return found[0] if found else None

    def start(self) -> None:
        proc.run(["docker", "stack", "deploy", "--compose-file", str(self.options.run_dir / self.run_file),
                  "--prune", "--resolve-image", "never", self.options.project], what="docker stack deploy")

    def lab_services(self) -> list[dict]:
        if not self.in_swarm():
            return []
        return [s for s in self.docker.services({PROJECT_LABEL: self.options.project})
                if (s["Spec"].get("Labels") or {}).get(USER_LABEL)]

    def remove_labs(self) -> list[str]:
        removed = []
        for service in self.lab_services():
            if self.docker.remove_service(service["ID"]):
                removed.append(service["Spec"]["Name"])
        return removed + super().remove_labs()

    def remove(self, volumes: bool) -> None:
        if self.in_swarm() and self.docker.services({NAMESPACE: self.options.project}):
            proc.run(["docker", "stack", "rm", self.options.project], what="docker stack rm")
        deadline = time.monotonic() + REMOVE_TIMEOUT  # `stack rm` returns before the containers are gone
        while self.docker.containers({NAMESPACE: self.options.project}) and time.monotonic() < deadline:
            time.sleep(0.5)

    def services(self) -> list[dict[str, Any]]:
        if not self.in_swarm():
            return []
        nodes = {n["ID"]: node_summary(n)["hostname"] for n in self.docker.nodes()}
        services = []
        for service in self.docker.services({NAMESPACE: self.options.project}):
            task = running_task(self.docker.tasks(service["ID"]))
            status = (task or {}).get("Status") or {}
            container = (status.get("ContainerStatus") or {}).get("ContainerID", "")
            details = self.docker.inspect_container(container) if container else None
            services.append({
                "service": service["Spec"]["Name"].removeprefix(f"{self.options.project}_"),
                "container": (details or {}).get("Name", "").lstrip("/") or container[:12] or "-",
                "state": status.get("State", "no task"),
                "health": ((details or {}).get("State") or {}).get("Health", {}).get("Status"),
                "node": nodes.get((task or {}).get("NodeID", ""), "?"),
            })
        return services

    def engine_state(self) -> dict[str, Any]:
        if not self.in_swarm():
            return {"nodes": [], "lab_placement": {}}
        nodes = [node_summary(n) for n in self.docker.nodes()]
        names = {n["id"]: n["hostname"] for n in nodes}
        placement = {}
        for service in self.lab_services():
            task = running_task(self.docker.tasks(service["ID"]))
            user = service["Spec"]["Labels"][USER_LABEL]
            placement[user] = {"service": service["Spec"]["Name"], "node": names.get((task or {}).get("NodeID", ""), "?"),
                               "state": ((task or {}).get("Status") or {}).get("State", "no task")}
        return {"nodes": nodes, "lab_placement": placement}

    def logs_argv(self, service: str | None, follow: bool, tail: int) -> list[str]:
        name = f"{self.options.project}_{service or 'hub'}"
        return ["docker", "service", "logs", f"--tail={tail}", *(["--follow"] if follow else []), name]
