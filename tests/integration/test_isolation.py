"""Labs are isolated from each other and from private and link-local addresses (issue 12, part 3).

Every probe starts inside a lab, as a user's code would. Nothing leaves this machine: the "outside"
addresses live on a dummy interface the module creates and removes -- 169.254.100.1 stands for the
cloud's metadata service, 192.0.2.10 (TEST-NET-1, never routed on the internet) for a public address.
"""

from __future__ import annotations

import io
import ipaddress
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ..support.livestack import approved_user

pytestmark = pytest.mark.integration

# A pool of the module's own: another project's guard on this host (a second stack, or one a killed run
# left behind, which Docker restarts with the daemon) blocks the default pool's labs, not these.
STACK_ENV = {"LAB_SUBNET_POOL": f"10.{random.randint(214, 250)}.{random.randint(0, 255)}.0/24"}

DUMMY = "hfiso0"
METADATA = "169.254.100.1"
PUBLIC = "192.0.2.10"

# Run inside a lab: exit 0 when host:port answers within 3 s. tcp: a connection is made; udp: a datagram (a DNS
# query for "hub") gets a reply.
PROBE = r"""
import socket, sys
protocol, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if protocol == "tcp":
        socket.create_connection((host, port), timeout=3).close()
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(3)
        sock.connect((host, port))
        sock.send(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03hub\x00\x00\x01\x00\x01")
        sock.recv(512)
except OSError as exc:
    print(f"no answer: {exc}")
    sys.exit(1)
print("answered")
"""


def answers(container, protocol: str, host: str, port: int, user: str = "lab") -> bool:
    """Whether host:port answers `protocol` ("tcp" or "udp") from inside `container` (3 s timeout)."""
    return container.exec_run(["python3", "-c", PROBE, protocol, host, str(port)], user=user).exit_code == 0


def reaches(container, host: str, port: int, user: str = "lab") -> bool:
    """Whether a TCP connection from inside `container` to host:port succeeds."""
    return answers(container, "tcp", host, port, user)


def endpoint(container) -> dict:
    """The lab's endpoint on its network: its network sandbox's, whose namespace it runs in (container:<id>)."""
    mode = container.attrs["HostConfig"]["NetworkMode"]
    if mode.startswith("container:"):
        container = container.client.containers.get(mode.split(":", 1)[1])
    (found,) = [n for n in container.attrs["NetworkSettings"]["Networks"].values() if n.get("IPAddress")]
    return found


def lab_address(container) -> str:
    return endpoint(container)["IPAddress"]


@pytest.fixture(scope="module")
def labs(live, admin):
    apis = {}
    for name in ("alice", "bob"):
        _, api = approved_user(live, admin, name)
        api.start(name)
        apis[name] = api
    return apis


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """A dummy interface (or a veth pair where the kernel has no dummy driver) holding METADATA and PUBLIC, with a tiny
    package index listening on all of the
    host's addresses (so also on the host's gateway in every lab network). Removed afterwards."""
    if shutil.which("ip") is None:
        pytest.skip("needs iproute2 (`ip`) to create a dummy interface")
    folder = tmp_path_factory.mktemp("index")
    wheel = "hfprobe-1.0-py3-none-any.whl"
    (folder / "simple" / "hfprobe").mkdir(parents=True)
    (folder / "simple" / "hfprobe" / "index.html").write_text(f'<a href="/{wheel}">{wheel}</a>\n')
    (folder / wheel).write_bytes(tiny_wheel())
    if subprocess.run(["ip", "link", "add", DUMMY, "type", "dummy"], capture_output=True).returncode != 0:
        # a kernel without the dummy driver (some VMs): a veth pair, whose far end stays unused, does the same
        subprocess.run(["ip", "link", "add", DUMMY, "type", "veth", "peer", "name", DUMMY + "p"], check=True)
        subprocess.run(["ip", "link", "set", DUMMY + "p", "up"], check=True)
    try:
        for address in (METADATA, PUBLIC):
            subprocess.run(["ip", "addr", "add", f"{address}/32", "dev", DUMMY], check=True)
        subprocess.run(["ip", "link", "set", DUMMY, "up"], check=True)
        server = ThreadingHTTPServer(("0.0.0.0", 0), partial(SimpleHTTPRequestHandler, directory=str(folder)))
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            server.server_close()
    finally:
        subprocess.run(["ip", "link", "del", DUMMY], check=False)


def tiny_wheel() -> bytes:
    """A valid, empty wheel, so `pip download` has a real package to fetch."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        wheel.writestr("hfprobe/__init__.py", "")
        wheel.writestr("hfprobe-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: hfprobe\nVersion: 1.0\n")
        wheel.writestr(
            "hfprobe-1.0.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        wheel.writestr("hfprobe-1.0.dist-info/RECORD", "")
    return buffer.getvalue()


def test_a_lab_cannot_reach_another_labs_server(live, labs):
    alice, bob = live.lab("alice"), live.lab("bob")
    assert reaches(live.hub(), lab_address(bob), 8888, user=""), "the hub itself must reach bob's server"
    assert not reaches(alice, lab_address(bob), 8888), "alice reached bob's Jupyter server directly"
    assert not reaches(alice, "hub", 8001), "alice reached the proxy's API"  # the hub's own ports: only 8081 and 8443


def test_a_lab_cannot_reach_a_server_another_user_started(live, labs):
    alice, bob = live.lab("alice"), live.lab("bob")
    bob.exec_run(["python3", "-m", "http.server", "8765", "--bind", "0.0.0.0"], user="lab", detach=True)
    deadline = time.monotonic() + 20
    while not reaches(bob, "127.0.0.1", 8765):
        assert time.monotonic() < deadline, "bob's http.server did not start"
        time.sleep(0.5)
    assert not reaches(alice, lab_address(bob), 8765), "alice reached bob's http.server"


def test_a_lab_reaches_the_hub_and_its_own_server_through_the_proxy(live, labs):
    alice = live.lab("alice")
    assert reaches(alice, "hub", 8081), "a lab must reach the hub's API"
    assert labs["alice"].request("GET", "user/alice/api/status").status_code == 200


def test_link_local_and_private_addresses_are_blocked_while_the_internet_is_not(live, labs, outside):
    port = outside
    alice = live.lab("alice")
    gateway = endpoint(alice)["Gateway"]
    with socket.create_connection((METADATA, port), timeout=3):
        pass  # the host reaches the "metadata service"
    assert not reaches(alice, METADATA, port), "a lab reached a link-local address (the metadata service's range)"
    assert not reaches(alice, gateway, port), "a lab reached the host on its private gateway address"
    assert reaches(alice, PUBLIC, port), "a lab must reach public addresses (users pip install)"
    download = alice.exec_run(
        [
            "python3",
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--index-url",
            f"http://{PUBLIC}:{port}/simple/",
            "--trusted-host",
            PUBLIC,
            "--dest",
            "/tmp/download",
            "hfprobe",
        ],
        user="lab",
    )
    assert download.exit_code == 0, download.output.decode()[-800:]
    assert b"Saved /tmp/download/hfprobe-1.0-py3-none-any.whl" in download.output


# -- private services behind the host (issue 25, part 9) --------------------------------------------------------
# A private network of this machine alone: a namespace behind a veth pair (a libvirt or kube-proxy backend, as far as
# a lab can tell) and one more address on the dummy interface. Outside the module's lab pool and Docker's own pools.
BACKEND_NS = "hfiso-backend"
BACKEND_HOST, BACKEND = "10.197.31.1", "10.197.31.2"  # the host's end of the veth, the namespace's end
PRIVATE_DNS = "10.197.31.9"  # on the dummy interface: a DNS server of the operator's, not the host's resolver
FORWARD_PORT, BACKEND_PORT = 18080, 8000  # PUBLIC:18080 is DNAT-ed to BACKEND:8000 by a rule of the test's own

BACKEND_SERVER = r"""
import socket, sys, threading
host = sys.argv[1]
def tcp(server):
    while True:
        server.accept()[0].close()
def udp(server):
    while True:
        data, peer = server.recvfrom(512)
        server.sendto(data, peer)
for port in map(int, sys.argv[2:]):
    datagrams = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    datagrams.bind((host, port))
    threading.Thread(target=tcp, args=(socket.create_server((host, port)),), daemon=True).start()
    threading.Thread(target=udp, args=(datagrams,), daemon=True).start()
print("listening", flush=True)
threading.Event().wait()
"""


def answers_udp(container, host: str, port: int, user: str = "lab") -> bool:
    """Whether a datagram from inside `container` to host:port gets an answer."""
    return answers(container, "udp", host, port, user)


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture(scope="module")
def private_backends(outside):
    """BACKEND in a namespace of the module's own (TCP and UDP echo on 53 and BACKEND_PORT), PRIVATE_DNS on the dummy
    interface (the same on 53), and a host port forward PUBLIC:FORWARD_PORT -> BACKEND:BACKEND_PORT. All removed
    after."""
    dnat = [
        "PREROUTING",
        "-d",
        f"{PUBLIC}/32",
        "-p",
        "tcp",
        "--dport",
        str(FORWARD_PORT),
        "-j",
        "DNAT",
        "--to-destination",
        f"{BACKEND}:{BACKEND_PORT}",
    ]
    servers = []
    try:
        run("ip", "netns", "add", BACKEND_NS)
        run("ip", "link", "add", "hfisob0", "type", "veth", "peer", "name", "hfisob1", "netns", BACKEND_NS)
        run("ip", "addr", "add", f"{BACKEND_HOST}/29", "dev", "hfisob0")
        run("ip", "link", "set", "hfisob0", "up")
        run("ip", "-n", BACKEND_NS, "addr", "add", f"{BACKEND}/29", "dev", "hfisob1")
        run("ip", "-n", BACKEND_NS, "link", "set", "hfisob1", "up")
        run("ip", "-n", BACKEND_NS, "route", "add", "default", "via", BACKEND_HOST)
        run("ip", "addr", "add", f"{PRIVATE_DNS}/32", "dev", DUMMY)
        run("iptables", "-w", "-t", "nat", "-I", *dnat[:1], "1", *dnat[1:])
        for namespace, host, ports in ((BACKEND_NS, BACKEND, ("53", str(BACKEND_PORT))), (None, PRIVATE_DNS, ("53",))):
            prefix = ["ip", "netns", "exec", namespace] if namespace else []
            server = subprocess.Popen(
                [*prefix, sys.executable, "-c", BACKEND_SERVER, host, *ports], stdout=subprocess.PIPE, text=True
            )
            servers.append(server)
            assert server.stdout.readline().strip() == "listening", f"the listener on {host} did not start"
        for host, port in ((BACKEND, BACKEND_PORT), (BACKEND, 53), (PRIVATE_DNS, 53)):
            socket.create_connection(
                (host, port), timeout=3
            ).close()  # the host reaches them: the lab's view is the test
        yield
    finally:
        for server in servers:
            server.kill()
            server.wait(timeout=10)
        subprocess.run(["iptables", "-w", "-t", "nat", "-D", *dnat], capture_output=True)
        subprocess.run(["ip", "addr", "del", f"{PRIVATE_DNS}/32", "dev", DUMMY], capture_output=True)
        subprocess.run(["ip", "netns", "del", BACKEND_NS], capture_output=True)  # takes the veth pair with it
        subprocess.run(["ip", "link", "del", "hfisob0"], capture_output=True)


def test_a_host_port_forward_to_a_private_backend_is_refused_from_a_lab(live, labs, private_backends):
    """Before issue 25 every DNAT-ed connection passed the guard: libvirt's, kube-proxy's, the Swarm ingress's, this
    one."""
    assert reaches(live.hub(), PUBLIC, FORWARD_PORT, user=""), (
        "the forward must work for a container the guard does not watch"
    )
    assert not reaches(live.lab("alice"), PUBLIC, FORWARD_PORT), (
        "a lab reached a private backend through a host port forward"
    )


def test_labs_send_dns_only_to_the_hosts_resolvers_and_still_resolve_names(live, labs, private_backends):
    alice = live.lab("alice")
    assert answers_udp(live.hub(), PRIVATE_DNS, 53, user=""), (
        "the private DNS server must answer a container the guard does not watch"
    )
    for host in (PRIVATE_DNS, BACKEND):  # on the host itself (INPUT), and behind it (forwarded)
        assert not reaches(alice, host, 53), f"a lab opened TCP port 53 of the private address {host}"
        assert not answers_udp(alice, host, 53), (
            f"a lab's datagram to port 53 of the private address {host} was answered"
        )
    resolved = alice.exec_run(["python3", "-c", "import socket; print(socket.gethostbyname('hub'))"], user="lab")
    assert resolved.exit_code == 0, f"a lab cannot resolve the hub's name: {resolved.output.decode()}"
    # What Docker's embedded DNS cannot answer it asks the host's resolvers, from inside the lab: those stay open.
    # (Checked
    # on the rules, not with a query: the test sends nothing off this machine.)
    resolvers = [
        line.split()[1]
        for line in Path("/etc/resolv.conf").read_text().splitlines()
        if line.startswith("nameserver") and "." in line and not line.split()[1].startswith("127.")
    ]
    chain = subprocess.run(
        ["iptables", "-w", "-S", f"HF-{live.project}-FWD"], capture_output=True, text=True, check=True
    ).stdout
    for resolver in resolvers:
        assert f"-d {resolver}/32 -p udp -m udp --dport 53 -j RETURN" in chain, chain
    assert not [line for line in chain.splitlines() if "--dport 53" in line and " -d " not in line], chain


LOG_FLOOD = 2**30  # bytes a lab prints (issue 25, part 8)


def test_a_lab_that_prints_without_end_keeps_at_most_the_configured_log(live, labs):
    """Container logs were unbounded json-file: a lab printing without end filled /var/lib/docker. Now 10m x 3
    (defaults)."""
    bob = live.lab("bob")
    line = "x" * 4095  # long lines: the daemon's cost is per line, and the bytes are what fill the disk
    started = time.monotonic()
    flood = bob.exec_run(
        ["sh", "-c", f"yes {line} | head -c {LOG_FLOOD} > /proc/1/fd/1"], user="lab"
    )  # into PID 1's stdout: the log
    assert flood.exit_code == 0, flood.output.decode()[-400:]
    bob.reload()
    folder = Path(bob.attrs["LogPath"]).parent
    size = sum(f.stat().st_size for f in folder.glob("*-json.log*"))
    print(f"{LOG_FLOOD >> 20} MiB printed in {time.monotonic() - started:.1f} s; {size / 2**20:.1f} MiB of log kept")
    assert bob.attrs["HostConfig"]["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "10m", "max-file": "3"}}
    assert size <= 3 * (10 * 2**20 + 2**16), f"{size} bytes of log remain after {LOG_FLOOD} printed (at most 3 x 10m)"


def test_the_hub_keeps_its_own_default_route(live, labs):
    """The hub is on every lab's network; its way out must stay its own network's gateway."""
    hub, holder = live.hub(), live.hub_network_holder()  # the proxy's namespace, which the hub shares
    stack_gateway = holder.attrs["NetworkSettings"]["Networks"][f"{live.project}_net"]["Gateway"]
    routes = hub.exec_run(["cat", "/proc/net/route"]).output.decode().splitlines()[1:]
    default = next(line.split() for line in routes if line.split()[1] == "00000000")
    via = str(ipaddress.IPv4Address(bytes.fromhex(default[2])[::-1]))
    assert via == stack_gateway, f"the hub's default route goes via {via}, a lab network's gateway"
    assert len(holder.attrs["NetworkSettings"]["Networks"]) >= 3  # its own, alice's and bob's


def test_the_guard_removes_its_rules_when_stopped_and_restores_them(live, labs, outside):
    port = outside
    guard = next(c for c in live.containers() if c.labels.get("hubforge.role") == "netguard")
    alice = live.lab("alice")
    guard.stop(timeout=10)
    try:
        chains = subprocess.run(["iptables", "-w", "-S"], capture_output=True, text=True).stdout
        assert f"HF-{live.project}-FWD" not in chains, "a stopped guard left its rules behind"
        others = [line for line in chains.splitlines() if "-j HF-" in line]
        assert reaches(alice, METADATA, port), (
            f"without the guard the block is gone (the test must see it change); other guards' jumps: {others}"
        )
    finally:
        guard.start()
    deadline = time.monotonic() + 30
    while reaches(alice, METADATA, port):
        assert time.monotonic() < deadline, "the restarted guard did not block the metadata address again"
        time.sleep(1)
