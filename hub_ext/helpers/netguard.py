"""The network guard: installs the labs' firewall rules (hub_ext.labs.networks) on the host and keeps them.

It runs as the stack's `netguard` service: the hub image, the host's network namespace, NET_ADMIN and
nothing else. It installs the rules, marks itself ready (the hub starts only then), puts them back if
something removes them (a firewall reload, a daemon restart), and removes them when it is stopped.

    python -m hub_ext.helpers.netguard --project hubforge --pool 10.213.0.0/16 [--allow 10.1.2.0/24 ...] [--publish
    443:8443 ...]

Labs may send DNS only to the host's resolvers, read from resolv.conf at every check (they change with DHCP), and
reach DNAT-ed ports only where they are the stack's own (--publish: the hub's ports, never the registry's).
"""

from __future__ import annotations

import argparse
import ipaddress
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

from hub_ext.labs.networks import GuardRules, guard_rules, upstream_resolvers

READY = Path("/tmp/hubforge-netguard-ready")
CHECK_EVERY = 10.0  # seconds between checks that the rules are still there
# What Docker gives a host-network container: the host's resolv.conf as it is (or the daemon's --dns list); where
# that names only systemd-resolved's stub, the real list is in SYSTEMD_UPSTREAM, mounted from the host when it has one.
RESOLV_CONF = Path("/etc/resolv.conf")
SYSTEMD_UPSTREAM = Path("/run/systemd/resolve/resolv.conf")


class GuardError(RuntimeError):
    """One line for the operator: what is wrong and what to do."""


def pick_iptables() -> str:
    """The iptables variant that holds Docker's rules: the host's Docker uses either nf_tables or legacy."""
    candidates = [name for name in ("iptables-nft", "iptables-legacy", "iptables") if shutil.which(name)]
    if not candidates:
        raise GuardError("no iptables in this image; rebuild the hub image with `invoke build`")
    for name in candidates:
        if subprocess.run([name, "-w", "-S", "DOCKER-USER"], capture_output=True).returncode == 0:
            return name
    raise GuardError(
        "the host has no DOCKER-USER chain: Docker does not manage iptables here "
        "(dockerd --iptables=false?); enable it, or set LAB_NETWORK_GUARD=0 and firewall the labs yourself"
    )


class Guard:
    def __init__(self, rules: GuardRules, iptables: str) -> None:
        self.rules = rules
        self.iptables = iptables

    def run(self, *args: str, check: bool = True) -> bool:
        done = subprocess.run([self.iptables, "-w", *args], capture_output=True, text=True)
        if check and done.returncode != 0:
            raise GuardError(f"{self.iptables} {' '.join(args)}: {done.stderr.strip() or done.returncode}")
        return done.returncode == 0

    def update(self, rules: GuardRules) -> bool:
        """Take new rules (the host's resolvers changed): installed at once, in one transaction. True when changed."""
        if rules == self.rules:
            return False
        self.rules = rules
        self.install()
        return True

    def installed(self) -> bool:
        chains_there = all(
            self.run("-S", chain, check=False) for chain in (self.rules.forward_chain, self.rules.local_chain)
        )
        return chains_there and all(self.run("-C", chain, *rule, check=False) for chain, rule in self.rules.jumps())

    def install(self) -> None:
        """Fill both chains in one transaction, then add each jump once (at the top of its chain)."""
        restore = self.iptables + "-restore" if self.iptables != "iptables" else "iptables-restore"
        done = subprocess.run(
            [restore, "-w", "--noflush"], input=self.rules.restore_script(), capture_output=True, text=True
        )
        if done.returncode != 0:
            raise GuardError(f"{restore} refused the rules: {done.stderr.strip()}")
        for chain, rule in self.rules.jumps():
            if not self.run("-C", chain, *rule, check=False):
                self.run("-I", chain, "1", *rule)

    def remove(self) -> None:
        for chain, rule in self.rules.jumps():
            for _ in range(16):  # every copy, but never loop forever
                if not self.run("-D", chain, *rule, check=False):
                    break
        for chain in (self.rules.forward_chain, self.rules.local_chain):
            if self.run("-S", chain, check=False):
                self.run("-F", chain, check=False)
                self.run("-X", chain, check=False)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hubforge-netguard", description=__doc__.splitlines()[0])
    parser.add_argument("--project", required=True)
    parser.add_argument("--pool", required=True, type=ipaddress.IPv4Network, help="LAB_SUBNET_POOL")
    parser.add_argument("--allow", action="append", default=[], type=ipaddress.IPv4Network, help="LAB_ALLOWED_RANGES")
    parser.add_argument(
        "--interface", default="", help="match by the bridge packets come from (Swarm: docker_gwbridge)"
    )
    parser.add_argument(
        "--publish",
        action="append",
        default=[],
        type=port_pair,
        metavar="HOST:CONTAINER",
        help="a port the stack publishes (the hub's https and http): DNAT-ed connections to it pass",
    )
    parser.add_argument(
        "--closed",
        action="append",
        default=[],
        type=int,
        metavar="PORT",
        help="a port of the host that labs never reach, at any address (the swarm registry's)",
    )
    parser.add_argument(
        "--resolver",
        action="append",
        type=ipaddress.IPv4Address,
        help="the labs' DNS goes only here (default: the host's resolvers, from resolv.conf)",
    )
    parser.add_argument("--once", action="store_true", help="install and exit (no watching, no removal)")
    parser.add_argument("--remove", action="store_true", help="remove the project's rules and exit")
    return parser.parse_args(argv)


def port_pair(raw: str) -> tuple[int, int]:
    host, _, container = raw.partition(":")
    try:
        pair = int(host), int(container or host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not HOST:CONTAINER, e.g. 443:8443") from None
    if not all(0 < port < 65536 for port in pair):
        raise argparse.ArgumentTypeError(f"{raw!r}: ports are 1-65535")
    return pair


def host_resolvers() -> tuple[str, ...] | None:
    """The resolvers a lab's DNS may go to, as Docker's embedded DNS picks them; None when unknown."""

    def read(path: Path) -> str | None:
        try:
            return path.read_text()
        except OSError:
            return None

    return upstream_resolvers(read(RESOLV_CONF) or "", read(SYSTEMD_UPSTREAM))


def rules_for(args: argparse.Namespace, resolvers: tuple[str, ...] | None) -> GuardRules:
    return guard_rules(
        args.project,
        args.pool,
        args.allow,
        interface=args.interface,
        published=args.publish,
        resolvers=resolvers,
        closed=args.closed,
    )


def resolvers_for(args: argparse.Namespace) -> tuple[str, ...] | None:
    return tuple(str(a) for a in args.resolver) if args.resolver else host_resolvers()


def describe(args: argparse.Namespace, resolvers: tuple[str, ...] | None) -> str:
    dns = (
        "any address (the host names only systemd-resolved's stub, and its upstream file is not mounted)"
        if resolvers is None
        else ", ".join(resolvers) or "no resolver of the host"
    )
    return (
        f"labs in {args.interface or args.pool} are kept off link-local and private addresses"
        f"{' except ' + ', '.join(map(str, args.allow)) if args.allow else ''}; their DNS goes only to {dns}; "
        f"the stack's published ports: {', '.join(f'{h}->{c}' for h, c in args.publish) or 'none'}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    stop = threading.Event()
    try:
        resolvers = resolvers_for(args)
        guard = Guard(rules_for(args, resolvers), pick_iptables())
        if args.remove:
            guard.remove()
            return 0
        guard.install()
        print(f"hubforge-netguard: {describe(args, resolvers)} ({guard.iptables})", flush=True)
        if args.once:
            return 0
        READY.write_text("ok\n")
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        while not stop.wait(CHECK_EVERY):
            resolvers = resolvers_for(args)
            if guard.update(rules_for(args, resolvers)):
                print(f"hubforge-netguard: the host's resolvers changed: {describe(args, resolvers)}", flush=True)
            elif not guard.installed():
                print("hubforge-netguard: the rules were gone (firewall reload?); installed them again", flush=True)
                guard.install()
        guard.remove()
        print("hubforge-netguard: stopped; the rules are removed", flush=True)
        return 0
    except GuardError as exc:
        print(f"hubforge-netguard: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
