"""The network guard: installs the labs' firewall rules (hub_ext.networks) on the host and keeps them.

It runs as the stack's `netguard` service: the hub image, the host's network namespace, NET_ADMIN and
nothing else. It installs the rules, marks itself ready (the hub starts only then), puts them back if
something removes them (a firewall reload, a daemon restart), and removes them when it is stopped.

    python -m hub_ext.netguard --project hubforge --pool 10.213.0.0/16 [--allow 10.1.2.0/24 ...]
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

from .networks import GuardRules, guard_rules

READY = Path("/tmp/hubforge-netguard-ready")
CHECK_EVERY = 10.0  # seconds between checks that the rules are still there


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
    raise GuardError("the host has no DOCKER-USER chain: Docker does not manage iptables here "
                     "(dockerd --iptables=false?); enable it, or set LAB_NETWORK_GUARD=0 and firewall the labs yourself")


class Guard:
    def __init__(self, rules: GuardRules, iptables: str) -> None:
        self.rules = rules
        self.iptables = iptables

    def run(self, *args: str, check: bool = True) -> bool:
        done = subprocess.run([self.iptables, "-w", *args], capture_output=True, text=True)
        if check and done.returncode != 0:
            raise GuardError(f"{self.iptables} {' '.join(args)}: {done.stderr.strip() or done.returncode}")
        return done.returncode == 0

    def installed(self) -> bool:
        chains_there = all(self.run("-S", chain, check=False) for chain in (self.rules.forward_chain, self.rules.local_chain))
        return chains_there and all(self.run("-C", chain, *rule, check=False) for chain, rule in self.rules.jumps())

    def install(self) -> None:
        """Fill both chains in one transaction, then add each jump once (at the top of its chain)."""
        restore = self.iptables + "-restore" if self.iptables != "iptables" else "iptables-restore"
        done = subprocess.run([restore, "-w", "--noflush"], input=self.rules.restore_script(), capture_output=True, text=True)
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
    parser.add_argument("--interface", default="", help="match by the bridge packets come from (Swarm: docker_gwbridge)")
    parser.add_argument("--once", action="store_true", help="install and exit (no watching, no removal)")
    parser.add_argument("--remove", action="store_true", help="remove the project's rules and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    stop = threading.Event()
    try:
        guard = Guard(guard_rules(args.project, args.pool, args.allow, interface=args.interface), pick_iptables())
        if args.remove:
            guard.remove()
            return 0
        guard.install()
        print(f"hubforge-netguard: labs in {args.interface or args.pool} are kept off link-local and private addresses"
              f"{' except ' + ', '.join(map(str, args.allow)) if args.allow else ''} ({guard.iptables})", flush=True)
        if args.once:
            return 0
        READY.write_text("ok\n")
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        while not stop.wait(CHECK_EVERY):
            if not guard.installed():
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
