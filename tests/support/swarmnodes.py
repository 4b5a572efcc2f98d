"""A multi-node swarm on this machine: more Docker engines, each in a network namespace of its own, joined to
this host's engine (the manager) over a bridge that only they share. Nothing leaves the machine: the namespaces
have no default route, and the bridge is forwarded to itself only.

What this kernel lacks is stood in for, and only that: it has no IPVS, so there is no routing mesh to give each
worker the stack's registry on its loopback. A DNAT rule in each worker's namespace sends 127.0.0.1:<port> to
the manager instead, which is what the mesh does on a host that has IPVS.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import docker

BRIDGE = "hfswarm0"
# Apart from LAB_SUBNET_POOL's default (10.213.0.0/16); the bridge's /24: .1 is this host (the manager), .2 and up
# the workers.
SUBNET = "10.198.77"
MANAGER = f"{SUBNET}.1"
ROOT = Path("/var/lib/hubforge-test-nodes")
START_TIMEOUT = 60


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True)


@dataclass
class Node:
    name: str
    address: str
    process: subprocess.Popen | None = None
    node_id: str = ""
    forwards: list[list[str]] = field(default_factory=list)

    @property
    def socket(self) -> str:
        return f"unix://{ROOT}/{self.name}.sock"  # the test's way in; inside its mount namespace, /var/run/docker.sock

    @property
    def netns(self) -> str:
        return f"/var/run/netns/{self.name}"

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.socket, timeout=60)

    def nsenter(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh("nsenter", f"--net={self.netns}", *argv, check=check)


class Cluster:
    """`count` workers; `start()` makes them and the swarm, `stop()` removes all of it (also after a failed start)."""

    def __init__(self, count: int = 2, prefix: str = "hfnode", join: int | None = None) -> None:
        self.join_at_start = count if join is None else join  # the others join later, with `join(node)`
        self.nodes = [Node(f"{prefix}{i}", f"{SUBNET}.{i + 2}") for i in range(count)]
        self.rule = ["DOCKER-USER", "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"]
        self.manager = docker.from_env()
        self.restore_at: str | None = None  # the advertised address of a swarm the host was in, made again by stop()

    # -- up ---------------------------------------------------------------------------------------------
    def host_swarm_problem(self) -> str:
        """Why the host's swarm must be left as it is ("" when the host is in none, or in one it may leave for the
        run and make again after it: a single-node swarm with no services, as `invoke up --engine swarm` and then
        `invoke down` leave one). A swarm with services, nodes or a worker's role is someone's: not touched."""
        swarm = self.manager.info()["Swarm"]
        if swarm["LocalNodeState"] == "inactive":
            return ""
        if not swarm.get("ControlAvailable"):
            return "this host is a worker of a swarm"
        if swarm.get("Nodes", 1) > 1:
            return f"this host's swarm has {swarm['Nodes']} nodes"
        services = self.manager.services.list()
        if services:
            return (
                f"this host's swarm runs {len(services)} services ({', '.join(sorted(s.name for s in services)[:3])}"
                f"{', ...' if len(services) > 3 else ''}); `invoke down --engine swarm` first"
            )
        return ""

    def start(self) -> None:
        swarm = self.manager.info()["Swarm"]
        if swarm["LocalNodeState"] != "inactive":  # a left-over single-node swarm (host_swarm_problem said so)
            self.restore_at = swarm["NodeAddr"]
            self.manager.swarm.leave(force=True)
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            raise RuntimeError(
                f"{BRIDGE} exists: another multi-node run is under way, or one was interrupted "
                f"(then: ip link delete {BRIDGE}; ip netns delete {self.nodes[0].name} ...)"
            )
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        sh("ip", "addr", "add", f"{MANAGER}/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        sh("iptables", "-I", *self.rule)  # Docker's FORWARD policy is DROP: let the nodes reach each other
        for node in self.nodes:
            self.make_namespace(node)
            self.start_engine(node)
        self.manager.swarm.init(advertise_addr=MANAGER, listen_addr=f"{MANAGER}:2377")
        for node in self.nodes[: self.join_at_start]:
            self.join(node)

    def join(self, node: Node) -> None:
        self.manager.swarm.reload()
        client = node.client()
        client.swarm.join(
            remote_addrs=[f"{MANAGER}:2377"],
            join_token=self.manager.swarm.attrs["JoinTokens"]["Worker"],
            advertise_addr=node.address,
            listen_addr=f"{node.address}:2377",
        )
        node.node_id = client.info()["Swarm"]["NodeID"]
        self.wait_ready([node])

    def make_namespace(self, node: Node) -> None:
        sh("ip", "netns", "add", node.name)
        host_end = f"{node.name}h"[:15]
        sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", node.name)
        sh("ip", "link", "set", host_end, "master", BRIDGE, "up")
        sh("ip", "-n", node.name, "addr", "add", f"{node.address}/24", "dev", "eth0")
        sh("ip", "-n", node.name, "link", "set", "eth0", "up")
        sh("ip", "-n", node.name, "link", "set", "lo", "up")

    def start_engine(self, node: Node) -> None:
        """dockerd in the node's network namespace and a mount namespace of its own, whose /run is private: there,
        /var/run/docker.sock is the node's own socket, as on a host of its own (a helper service that mounts the
        socket talks to the engine of the node it runs on). Its mounts vanish with it."""
        data = ROOT / node.name
        data.mkdir(parents=True, exist_ok=True)
        log = open(ROOT / f"{node.name}.log", "ab")  # noqa: SIM115 -- the engine's own log, for a failed test
        script = (
            'mount -t tmpfs -o mode=755 tmpfs /run && exec dockerd --data-root "$0" --exec-root /run/docker '
            '-H unix:///var/run/docker.sock -H "$1" --pidfile /run/docker.pid'
        )
        node.process = subprocess.Popen(
            [
                "nsenter",
                f"--net={node.netns}",
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                str(data),
                node.socket,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with contextlib.suppress(docker.errors.DockerException):
                node.client().ping()
                return
            if node.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the engine of {node.name} did not start; see {ROOT / node.name}.log")
            time.sleep(0.3)

    def wait_ready(self, nodes: list[Node], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = {n.attrs["ID"]: n.attrs["Status"]["State"] for n in self.manager.nodes.list()}
            if all(states.get(node.node_id) == "ready" for node in nodes):
                return
            time.sleep(0.5)
        raise RuntimeError(f"workers not ready within {timeout:.0f} s")

    def forward_registry(self, port: int) -> None:
        """What the routing mesh would give each worker: the stack's registry on its own 127.0.0.1."""
        for node in self.nodes:
            node.nsenter(
                "sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet"
            )  # per namespace; no procps needed
            rules = [
                [
                    "-t",
                    "nat",
                    "-A",
                    "OUTPUT",
                    "-d",
                    "127.0.0.1/32",
                    "-p",
                    "tcp",
                    "--dport",
                    str(port),
                    "-j",
                    "DNAT",
                    "--to-destination",
                    f"{MANAGER}:{port}",
                ],
                ["-t", "nat", "-A", "POSTROUTING", "-s", "127.0.0.1/32", "-o", "eth0", "-j", "MASQUERADE"],
            ]
            for rule in rules:
                node.nsenter("iptables", *rule)

    def leave(self, node: Node) -> None:
        """The worker leaves the swarm (as `docker swarm leave` on it would); the manager sees it down."""
        with contextlib.suppress(docker.errors.DockerException):
            node.client().swarm.leave(force=True)

    # -- down -------------------------------------------------------------------------------------------
    def stop(self) -> None:
        for node in self.nodes:
            self.leave(node)
        with contextlib.suppress(docker.errors.DockerException):
            self.manager.swarm.leave(force=True)
        if self.restore_at:  # the host is a single-node swarm again, advertised where it was
            self.manager.swarm.init(advertise_addr=self.restore_at)
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.terminate()
                try:
                    node.process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait(timeout=10)
            sh("ip", "netns", "delete", node.name, check=False)
            shutil.rmtree(ROOT / node.name, ignore_errors=True)
            Path(f"{ROOT}/{node.name}.sock").unlink(missing_ok=True)
        sh("iptables", "-D", *self.rule, check=False)
        sh("ip", "link", "delete", BRIDGE, check=False)


@contextlib.contextmanager
def started(count: int, join: int | None = None) -> Iterator[Cluster]:
    """A Cluster started for the block, and stopped however it ends (a failed start included)."""
    made = Cluster(count=count, join=join)
    try:
        made.start()
        yield made
    finally:
        made.stop()
