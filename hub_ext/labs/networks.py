"""Lab networks as data: one small bridge per lab, shared with the hub only, and the guard's firewall rules.

Isolation between labs comes from Docker itself: containers on different bridge networks cannot reach
each other, and the hub joins each lab's network to talk to it. What Docker does not block -- a lab
reaching the host's private addresses, the cloud's metadata service at 169.254.169.254 or anything else
on the operator's private networks -- the network guard blocks with the rules described here
(hub_ext.helpers.netguard applies them).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network

from hub_ext.naming import PROJECT_LABEL, ROLE_LABEL

NETWORK_ROLE = "lab-network"  # hubforge.role of a lab's network
SUBNET_PREFIX = 29  # 8 addresses: network, gateway, lab, hub, and room to spare

# What a lab may not reach unless the operator allows it by name (LAB_ALLOWED_RANGES): link-local (the
# cloud metadata service), the private ranges of RFC 1918, and shared address space (carrier NAT, VPNs).
BLOCKED_RANGES = ("169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")


def used_subnets(networks: Iterable[Mapping]) -> list[IPv4Network]:
    """The IPv4 subnets of Docker networks (entries of `docker network ls`/inspect, as the API returns them)."""
    found = []
    for network in networks:
        for config in (network.get("IPAM") or {}).get("Config") or []:
            subnet = config.get("Subnet")
            if not subnet:
                continue
            parsed = ipaddress.ip_network(subnet, strict=False)
            if parsed.version == 4:
                found.append(parsed)
    return found


def free_subnet(
    pool: IPv4Network, used: Iterable[IPv4Network], prefix: int = SUBNET_PREFIX, skip: Iterable[IPv4Network] = ()
) -> IPv4Network | None:
    """The first /`prefix` of `pool` that overlaps none of `used` (nor `skip`), or None when the pool is full."""
    taken = [net for net in (*used, *skip) if net.overlaps(pool)]
    for candidate in pool.subnets(new_prefix=prefix):
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    return None


def pool_capacity(pool: IPv4Network, prefix: int = SUBNET_PREFIX) -> int:
    return 2 ** (prefix - pool.prefixlen) if pool.prefixlen <= prefix else 0


def network_spec(subnet: IPv4Network) -> dict[str, str]:
    """The IPAM pool of one lab network (docker.types.IPAMPool's arguments): the subnet, its first address the
    gateway."""
    return {"subnet": str(subnet), "gateway": str(next(subnet.hosts()))}


def overlay_spec(subnet: IPv4Network) -> dict[str, str]:
    """A lab's overlay network: Swarm hands out addresses from the lower half only (iprange), and the upper half
    keeps one fixed address for the hub (hub_address), which joins with `network connect` outside Swarm's allocator."""
    lower = next(subnet.subnets(prefixlen_diff=1))
    return {**network_spec(subnet), "iprange": str(lower)}


def hub_address(subnet: IPv4Network) -> str:
    """The hub's address on a lab's overlay: the subnet's last usable one, outside the range Swarm allocates from."""
    return str(subnet.broadcast_address - 1)


def proxy_address(subnet: IPv4Network) -> str:
    """The proxy's address on a lab's overlay (Swarm: a service of its own beside the hub): the one before the hub's,
    also outside the range Swarm allocates from."""
    return str(subnet.broadcast_address - 2)


# -- the network guard's rules ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class GuardRules:
    """Firewall rules for one project's labs, as iptables arguments.

    Two chains: `forward` filters what labs send through the host (jumped to from DOCKER-USER, which
    Docker evaluates before its own rules), `local` what labs send to the host itself (from INPUT).
    Every rule returns (lets the packet on to Docker's rules) or rejects; none accepts, so Docker's own
    isolation between networks stays in force.
    """

    pool: IPv4Network
    forward_chain: str
    local_chain: str
    forward: tuple[tuple[str, ...], ...]
    local: tuple[tuple[str, ...], ...]
    interface: str = ""  # match packets by the bridge they come from instead of the pool (Swarm: docker_gwbridge)

    def jumps(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """(built-in chain, rule) pairs that send the labs' packets into this project's chains."""
        source = ("-i", self.interface) if self.interface else ("-s", str(self.pool))
        return (("DOCKER-USER", (*source, "-j", self.forward_chain)), ("INPUT", (*source, "-j", self.local_chain)))

    def restore_script(self) -> str:
        """An `iptables-restore --noflush` script: declares (and so empties) both chains and fills them at once."""
        lines = ["*filter", f":{self.forward_chain} - [0:0]", f":{self.local_chain} - [0:0]"]
        lines += [" ".join(("-A", self.forward_chain, *rule)) for rule in self.forward]
        lines += [" ".join(("-A", self.local_chain, *rule)) for rule in self.local]
        return "\n".join(lines + ["COMMIT", ""])


def chain_names(project: str) -> tuple[str, str]:
    """Per-project chain names within iptables' 28 characters; long names get a digest to stay unique."""
    tag = project if len(project) <= 20 else project[:12] + hashlib.sha256(project.encode()).hexdigest()[:8]
    return f"HF-{tag}-FWD", f"HF-{tag}-IN"


def guard_rules(
    project: str,
    pool: IPv4Network,
    allowed: Iterable[IPv4Network] = (),
    blocked: Iterable[str] = BLOCKED_RANGES,
    interface: str = "",
    published: Iterable[tuple[int, int]] = (),
    resolvers: Iterable[str] | None = (),
    closed: Iterable[int] = (),
) -> GuardRules:
    """Rules that keep labs (sources in `pool`) off link-local and private addresses, except `allowed`.

    On Swarm a lab's packets to anywhere but its overlay leave through the node's `docker_gwbridge`, from an
    address of that bridge: there `interface` selects them instead of the pool (every swarm task on the node).

    Allowed through: replies; DNS to the host's `resolvers` only (Docker's embedded DNS at 127.0.0.11 sends
    what it cannot answer itself from inside the lab's namespace, so those packets come from the lab's address,
    often to a private resolver); the stack's own `published` ports, as (host port, container port) pairs of
    connections Docker's port mapping DNAT-ed (any other forward on the host -- libvirt, kube-proxy, the Swarm
    ingress, one made by hand -- stays blocked like the private address it leads to); the allowed ranges; and --
    through the host only -- the lab's own network, where the hub is (other labs' networks stay unreachable by
    Docker's isolation). The host's own addresses, its gateway on each lab network included, are blocked like
    any other private address.

    `closed` ports of the host (the swarm registry's) are refused at every address of the host, public ones
    included: Docker's proxy answers a lab there through INPUT, and a DNAT-ed connection arrives through FORWARD.
    """
    allowed = tuple(allowed)
    blocked_nets = [ipaddress.ip_network(b) for b in blocked]
    if not any(pool.subnet_of(b) for b in blocked_nets if b.version == 4):
        blocked_nets.append(pool)  # a pool outside the private ranges: the host's gateways there are still the host
    common = (
        ("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN"),
        *dns_rules(resolvers),
        *(("-d", str(net), "-j", "RETURN") for net in allowed),
    )
    reject = []
    for net in blocked_nets:
        reject.append(("-d", str(net), "-p", "tcp", "-j", "REJECT", "--reject-with", "tcp-reset"))
        reject.append(("-d", str(net), "-j", "REJECT", "--reject-with", "icmp-admin-prohibited"))
    forward_chain, local_chain = chain_names(project)
    # After Docker's DNAT the packet goes to the container's port; the original port is conntrack's to tell
    published_rules = tuple(
        (
            "-p",
            "tcp",
            "--dport",
            str(target),
            "-m",
            "conntrack",
            "--ctstate",
            "DNAT",
            "--ctorigdstport",
            str(port),
            "-j",
            "RETURN",
        )
        for port, target in sorted(set(published))
    )
    closed = sorted(set(closed))
    closed_local = tuple(
        ("-p", "tcp", "--dport", str(port), "-j", "REJECT", "--reject-with", "tcp-reset") for port in closed
    )
    closed_forward = tuple(
        (
            "-p",
            "tcp",
            "-m",
            "conntrack",
            "--ctstate",
            "DNAT",
            "--ctorigdstport",
            str(port),
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        )
        for port in closed
    )
    forward = (*common[:1], *closed_forward, *published_rules, *common[1:], ("-d", str(pool), "-j", "RETURN"), *reject)
    return GuardRules(
        pool, forward_chain, local_chain, tuple(forward), (*common[:1], *closed_local, *common[1:], *reject), interface
    )


def dns_rules(resolvers: Iterable[str] | None) -> tuple[tuple[str, ...], ...]:
    """Port 53 to each of `resolvers` (UDP and TCP); None: to any address (the host's resolvers are unknown)."""
    if resolvers is None:
        return (("-p", "udp", "--dport", "53", "-j", "RETURN"), ("-p", "tcp", "--dport", "53", "-j", "RETURN"))
    return tuple(
        ("-d", f"{address}/32", "-p", proto, "--dport", "53", "-j", "RETURN")
        for address in sorted(set(resolvers), key=ipaddress.IPv4Address)
        for proto in ("udp", "tcp")
    )


STUB_RESOLVERS = frozenset(
    {"127.0.0.53", "127.0.0.54"}
)  # systemd-resolved's stubs: Docker reads its upstream file instead


def upstream_resolvers(resolv_conf: str, upstream: str | None = None) -> tuple[str, ...] | None:
    """The resolvers Docker's embedded DNS forwards a lab's queries to, from the host's resolv.conf as Docker reads it:
    IPv4 nameservers, loopback ones dropped (a lab's namespace cannot reach them; Docker drops them too). Where
    resolv.conf names only systemd-resolved's stub, Docker uses the real list (/run/systemd/resolve/resolv.conf,
    `upstream`); None when that is needed but not given: the resolvers are then unknown."""
    names = [
        line.split()[1]
        for line in resolv_conf.splitlines()
        if line.split()[:1] == ["nameserver"] and len(line.split()) > 1
    ]
    if names and set(names) <= STUB_RESOLVERS:
        return None if upstream is None else upstream_resolvers(upstream)
    found = []
    for name in names:
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            continue
        if address.version == 4 and not address.is_loopback and str(address) not in found:
            found.append(str(address))
    return tuple(found)


# -- a lab's network sandbox -------------------------------------------------------------------------------------
SANDBOX_ROLE = "lab-sandbox"  # hubforge.role of the container that holds a lab's network namespace
SANDBOX_LABEL = "hubforge.sandbox-of"  # whose it is (not hubforge.user: it is no lab, and nothing counts it as one)
SANDBOX_COMMAND = ("sleep", "infinity")


def sandbox_name(lab_container: str) -> str:
    """The container that holds the network namespace of the lab so named. No lab is so named: an escaped user name
    has a dash only before two hex digits (escapism), and "ne" is not."""
    return f"{lab_container}-net"


# Host settings of a container's network namespace: Docker refuses them for a lab in a sandbox's, so the sandbox
# takes them (docker-py's create_host_config names -> the API's)
NAMESPACE_SETTINGS = {"dns": "Dns", "dns_search": "DnsSearch", "dns_opt": "DnsOptions", "extra_hosts": "ExtraHosts"}


def namespace_settings(host_config: Mapping) -> dict:
    """The operator's DNS and /etc/hosts settings of a lab (docker-py names), in the API's form for its sandbox."""
    found = {}
    for name, api in NAMESPACE_SETTINGS.items():
        value = host_config.get(name)
        if value:
            found[api] = [f"{h}:{a}" for h, a in value.items()] if isinstance(value, Mapping) else list(value)
    return found


def sandbox_spec(
    image: str,
    network: str,
    project: str,
    user: str,
    disable_ipv6: bool,
    log_options: Mapping[str, str],
    settings: Mapping[str, list] | None = None,
) -> dict:
    """`create_container` arguments, in Docker's API form, of a lab's network sandbox (Kubernetes calls it a pod's
    sandbox; its "pause" container holds it).

    It joins the lab's network once and stays, with the network, while the stack is up: the lab's own container
    joins its namespace (`network_mode: container:<sandbox>`) at each start. So a start or a stop changes nothing in
    the host's network: no bridge comes or goes, no veth, no address (a host-side veth gets an IPv6 link-local one),
    which a browser on the host sees as a network change and aborts its requests for. The process only sleeps: no
    capability, no writable file, a few pids and a little memory.
    """
    host_config = {
        "NetworkMode": network,
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"],
        "ReadonlyRootfs": True,
        "Memory": 16 * 2**20,
        "PidsLimit": 8,
        "Init": False,
        "LogConfig": {"Type": "json-file", "Config": dict(log_options)},
        **(settings or {}),
    }
    if disable_ipv6:  # the lab's namespace is this one: IPv6 off there keeps it off in the lab
        host_config["Sysctls"] = {"net.ipv6.conf.all.disable_ipv6": "1"}
    return {
        "image": image,
        "command": list(SANDBOX_COMMAND),
        "entrypoint": [],
        "user": "65534:65534",
        "labels": {PROJECT_LABEL: project, ROLE_LABEL: SANDBOX_ROLE, SANDBOX_LABEL: user},
        "healthcheck": {"Test": ["NONE"]},
        "host_config": host_config,
        "networking_config": {"EndpointsConfig": {network: {}}},
    }
