"""Spawn benchmark: start request -> lab API answering through the proxy, 10 sequential and 20 concurrent.

Run: python benchmarks/spawn.py [--engine swarm] [--policies groups|quota]   (needs the images of `invoke build`;
starts and removes its own stack; on swarm, makes this host a single-node swarm when it is in none and leaves it after)
Prints p50/p95 for both runs, a second start of the sequential users, the hub's memory and an idle lab's memory.

--policies groups: every user is in two of five groups with policies (memory, CPUs, processes, environment), so each
spawn resolves and merges them; --policies quota: every user's group also gives home and workspace quotas, so each
first spawn makes two quota'd volumes (the figure "creating a quota'd volume the first time").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.hubclient import HubAPI  # noqa: E402
from tests.support.livestack import admin_api, claim_admin, setting, start_stack, stop_stack  # noqa: E402
from tests.support.loadsim import memory_bytes, percentile  # noqa: E402


def memory_mb(container) -> float:
    return memory_bytes(container.stats(stream=False, one_shot=True)) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("compose", "swarm"), default="compose")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        choices=range(0, 5),
        help="swarm: this many more engines, in network namespaces of their own, join as workers (as in the tests)",
    )
    parser.add_argument("--policies", choices=("none", "groups", "quota"), default="none")
    parser.add_argument(
        "--env", type=setting, action="append", default=[], metavar="KEY=VALUE", help="a stack setting (repeatable)"
    )
    args = parser.parse_args()
    engine = args.engine
    if args.workers and engine != "swarm":
        parser.error("--workers needs --engine swarm")
    import docker

    was_member = docker.from_env().info()["Swarm"]["LocalNodeState"] == "active"
    cluster = None
    if args.workers:
        from tests.support.swarmnodes import Cluster

        if was_member:
            parser.error("--workers makes its own swarm: this host is in one already (`docker swarm leave --force`)")
        cluster = Cluster(count=args.workers)
        try:
            cluster.start()
        except Exception:
            cluster.stop()
            raise
    with tempfile.TemporaryDirectory(prefix="hubforge-spawn-bench-") as tmp:
        live = start_stack(Path(tmp), {"LAB_MEM_LIMIT": "1G", **dict(args.env)}, engine=engine)
        if cluster is not None:
            cluster.forward_registry(live.stack.options.registry_port)
        try:
            admin = claim_admin(live)
            api = admin_api(live, admin)
            users = [f"seq{i}" for i in range(10)] + [f"par{i}" for i in range(20)]
            assert api.request("POST", "hub/api/users", json={"usernames": users}).status_code == 201
            if args.policies != "none":
                give_policies(api, users, quota=args.policies == "quota")

            sequential = [api.start(users[0])]
            time.sleep(5)  # idle: nothing talks to it, and the start-up settles
            idle_lab = idle_memory(live, users[0])  # measured before other labs share the host's memory
            for name in users[1:10]:
                sequential.append(api.start(name))
            for name in users[:10]:
                api.stop(name)
            again = []
            for name in users[:10]:  # second starts: the volumes (and on swarm the lab's network) exist
                again.append(api.start(name))
                api.stop(name)

            with ThreadPoolExecutor(max_workers=20) as pool:
                results = list(pool.map(lambda name: _try(api, name), users[10:]))
            concurrent = [r for r in results if isinstance(r, float)]
            failures = [r for r in results if not isinstance(r, float)]
            hub = live.hub()
            print(
                f"engine {engine}, policies {args.policies}"
                + (f", {args.workers} workers + the manager" if args.workers else "")
            )
            if engine == "swarm":
                placement = live.stack.engine_state()["lab_placement"]
                spread: dict[str, int] = {}
                for name in users[10:]:
                    node = placement.get(name, {}).get("node", "?")
                    spread[node] = spread.get(node, 0) + 1
                print(
                    "concurrent labs per node: "
                    + ", ".join(f"{node} {count}" for node, count in sorted(spread.items()))
                )
            print(
                f"sequential spawns (10): p50 {statistics.median(sequential):.2f} s, p95 "
                f"{percentile(sequential, 0.95):.2f} s, "
                f"max {max(sequential):.2f} s"
            )
            print(f"second starts (10): p50 {statistics.median(again):.2f} s, p95 {percentile(again, 0.95):.2f} s")
            print(
                f"concurrent spawns (20): {len(concurrent)}/20 succeeded, p50 {statistics.median(concurrent):.2f} s, "
                f"p95 {percentile(concurrent, 0.95):.2f} s, max {max(concurrent):.2f} s"
            )
            for failure in failures:
                print(f"  failed: {failure}")
            if failures:  # the hub's own reasons
                errors = [
                    line
                    for line in live.hub().logs(tail=5000).decode(errors="replace").splitlines()
                    if "Unhandled error starting" in line
                ]
                for line in errors[:5]:
                    print(f"  hub: {line[:300]}")
            print(
                f"hub memory with 20 labs running: {memory_mb(hub):.0f} MiB; an idle lab: "
                + (f"{idle_lab:.0f} MiB" if idle_lab is not None else "(on a worker, not measured)")
            )
        finally:
            stop_stack(live)
            if cluster is not None:
                cluster.stop()
            elif engine == "swarm" and not was_member:
                docker.from_env().swarm.leave(force=True)


def give_policies(api: HubAPI, users: list[str], quota: bool) -> None:
    """Five groups with policies; each user in two of them (and, with `quota`, in one that sets both quotas)."""
    for index in range(5):
        policy = {
            "mem_limit": f"{512 + 128 * index}M",
            "cpu_limit": 1 + index % 2,
            "pids_limit": 512 + index,
            "environment": {f"GROUP_{index}": "1"},
        }
        members = [name for number, name in enumerate(users) if number % 5 in (index, (index + 1) % 5)]
        assert api.request("PUT", f"hub/api/hubforge/policies/bench{index}", json=policy).status_code == 201
        assert api.request("POST", f"hub/api/groups/bench{index}/users", json={"users": members}).status_code == 200
    if quota:
        assert (
            api.request(
                "PUT", "hub/api/hubforge/policies/quota", json={"home_quota": "1G", "workspace_quota": "2G"}
            ).status_code
            == 201
        )
        assert api.request("POST", "hub/api/groups/quota/users", json={"users": users}).status_code == 200


def idle_memory(live, user: str) -> float | None:
    """The lab's memory, when it runs on this host's engine (with workers it may not)."""
    import docker

    try:
        return memory_mb(live.lab(user))
    except docker.errors.NotFound:
        return None


def _try(api: HubAPI, name: str):
    try:
        return api.start(name, timeout=300)
    except AssertionError as exc:
        return f"{name}: {exc}"


if __name__ == "__main__":
    main()
