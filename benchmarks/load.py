"""Load benchmark: simulated users take a browser's whole path through the hub, ramped up, with a bystander.

Run: python benchmarks/load.py --users 100 --ramp 60   (needs the images of `invoke build`; starts and removes
its own stack, so nothing is left behind)

Each user logs in through the form, starts the default server through /hub/spawn and its progress stream,
completes the lab's OAuth handshake, starts a kernel, runs cells over the kernel's websocket for the session's
length, then stops the kernel and the server (tests/support/loadsim.py has the protocol). Printed: p50, p95 and max for
each phase, the failures by phase with the first error of each kind, the hub's peak CPU and memory, the labs'
memory, and the worst /hub/health latency a bystander saw during the whole run, and what each arriving user cost in
CPU-seconds until their first cell ran, by part: lab, kernel, Docker, hub (tests/support/cpucost.py says how each is
read). `--storm N` first posts N logins at the same moment, reported the same way. `--json` prints the same figures
as one JSON object.

Every request comes from this host, so from one address: the stack runs with LOGIN_ADDRESS_LIMIT raised (the
per-address budget would otherwise refuse the signups themselves). `--env KEY=VALUE` sets any other setting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tests.support.cpucost import Meter  # noqa: E402
from tests.support.hubclient import HubSession, plain_get  # noqa: E402
from tests.support.livestack import PASSWORD, LiveStack, claim_admin, setting, start_stack, stop_stack  # noqa: E402
from tests.support.loadsim import Arrivals, Bystander, Plan, Record, Sampler, ramp, storm  # noqa: E402

DEFAULT_ENV = {"LAB_MEM_LIMIT": "1G", "LOGIN_ADDRESS_LIMIT": "1000000"}


def positive(kind):
    def parse(raw: str):
        value = kind(raw)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be 0 or more, got {raw!r}")
        return value

    return parse


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=positive(int), default=30, help="simulated users (default 30)")
    parser.add_argument(
        "--ramp", type=positive(float), default=30.0, help="seconds over which they arrive (default 30)"
    )
    parser.add_argument(
        "--session",
        type=positive(float),
        default=10.0,
        help="seconds each user works between the first cell and stopping (default 10)",
    )
    parser.add_argument("--think", type=positive(float), default=5.0, help="seconds between a user's cells (default 5)")
    parser.add_argument("--storm", type=positive(int), default=0, help="first, N logins posted at the same moment")
    parser.add_argument(
        "--spawn-timeout", type=positive(float), default=300.0, help="seconds a spawn may take (default 300)"
    )
    parser.add_argument(
        "--env",
        type=setting,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"a stack setting for .env (repeatable); defaults: {DEFAULT_ENV}",
    )
    parser.add_argument(
        "--nice",
        type=positive(int),
        default=10,
        help="the simulator's niceness (default 10): it stands in for browsers on other machines, so it "
        "yields the CPU to the hub and the labs; the bystander keeps normal priority",
    )
    parser.add_argument(
        "--hold-stops",
        action="store_true",
        help="no server stops before the last user's first cell: the CPU per arrival then holds arrivals alone",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    parser.add_argument("--logs", type=Path, default=None, metavar="DIR", help="save the hub's and labs' logs there")
    return parser.parse_args(argv)


def create_users(live: LiveStack, admin: HubSession, names: list[str], say) -> None:
    """Sign each user up through the form, a few at a time, then approve them as the admin."""

    def signup(name: str) -> None:
        response = HubSession(live.url).signup(name, PASSWORD)
        assert response.status_code == 200, f"signing up {name}: {response.status_code}"

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(signup, names))
    # One admin session, not shared between threads. The form token comes from the small home page, not from
    # /hub/authorize, which lists every account (configurable-http-proxy 4.6 on Node 18 sometimes drops a POST
    # that follows a large response on the same connection).
    token = admin.xsrf("hub/home")
    for name in names:
        response = admin.http.post(
            admin.url(f"hub/authorize/{name}/approve"), data={"_xsrf": token}, allow_redirects=False, timeout=30
        )
        assert response.status_code == 302, f"approving {name}: {response.status_code}"
    say(f"signed up and approved {len(names)} users in {time.monotonic() - started:.0f} s")


def event_loop_buckets(live: LiveStack) -> dict[float, float]:
    """JupyterHub's own measure of its event loop: how many 50 ms ticks came late, by how much (cumulative)."""
    scraped = plain_get(live.url + "hub/metrics", headers={"Authorization": f"token {live.metrics_token()}"})
    scraped.raise_for_status()
    buckets = {}
    for family in text_string_to_metric_families(scraped.text):
        for sample in family.samples:
            if sample.name == "jupyterhub_event_loop_interval_seconds_bucket":
                buckets[float(sample.labels["le"])] = sample.value
    return buckets


def stalls(before: dict[float, float], after: dict[float, float]) -> dict:
    """Late ticks of the hub's event loop between two scrapes: over 100 ms, over 250 ms, and the longest's bucket."""
    late = {le: after.get(le, 0) - before.get(le, 0) for le in after}
    total = late.get(float("inf"), 0)
    over = lambda bound: int(total - late.get(bound, total))  # noqa: E731 -- ticks later than `bound`
    bounds = sorted(late)
    longest = next((b for b in bounds if late[b] >= total), None) if total else None
    below = max((b for b in bounds if b < longest), default=0.0) if longest is not None else None
    return {
        "ticks": int(total),
        "over_100ms": over(0.1),
        "over_250ms": over(0.25),
        "longest_s": None if longest is None else [below, longest],
    }


def scenario(
    live: LiveStack, coroutine_factory, deadline_s: float, meter: Meter | None = None
) -> tuple[dict, dict, dict, float]:
    """Run one scenario with a fresh bystander and sampler: (record summary, bystander, resources, seconds); with a
    meter, the resources hold the CPU per arriving user (its window opens as the scenario starts)."""
    record = Record()
    sampler = Sampler(live.hub().id)
    loop_before = event_loop_buckets(live)
    with Bystander(live.url.replace("hub.localhost", "127.0.0.1") + "hub/health") as bystander:
        time.sleep(1.0)  # the bystander's process is up and polling
        sampler.start()
        if meter is not None:
            meter.begin()
        started = time.monotonic()

        async def bounded():
            return await asyncio.wait_for(coroutine_factory(record), deadline_s)

        try:
            extra = asyncio.run(bounded())
        except asyncio.TimeoutError:
            extra = None
            record.failures.setdefault("run", Counter())["deadline"] += 1
            record.first_error[("run", "deadline")] = f"the run passed its deadline of {deadline_s:.0f} s"
        finally:
            if meter is not None:
                meter.end(0, 0)  # ignored when the arrivals closed the window; closes it (and acct) otherwise
        elapsed = time.monotonic() - started
        time.sleep(0.5)
        health = bystander.result()
    health["hub_event_loop"] = stalls(loop_before, event_loop_buckets(live))
    summary = record.summary()
    if extra is not None:
        summary["all_answered_s"] = round(extra, 2)
    resources = sampler.summary()
    if meter is not None:
        resources["cpu_per_arrival"] = meter.summary()
    return summary, health, resources, elapsed


def report(title: str, summary: dict, health: dict, resources: dict, elapsed: float, users: int) -> None:
    print(
        f"\n{title}: {summary['completed']}/{users} completed in {elapsed:.1f} s"
        + (f" (all answered in {summary['all_answered_s']:.2f} s)" if "all_answered_s" in summary else "")
    )
    print(f"  {'phase':<12} {'ok':>5} {'failed':>6} {'p50 s':>8} {'p95 s':>8} {'max s':>8}")
    for name, phase in summary["phases"].items():
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(
            f"  {name:<12} {phase['ok']:>5} {phase['failed']:>6} {fmt(phase['p50_s']):>8} {fmt(phase['p95_s']):>8} "
            f"{fmt(phase['max_s']):>8}"
        )
    for name, phase in summary["phases"].items():
        for error in phase["errors"]:
            print(f"  failed in {name}: {error['count']} x {error['kind']}; first: {error['first']}")
    print(
        f"  bystander /hub/health: {health['polls']} polls, p50 {health['p50_ms']} ms, p99 {health['p99_ms']} ms, "
        f"worst {health['max_ms']} ms, {health['errors']} errors"
        + (f" (first: {health['first_error']})" if health["errors"] else "")
    )
    print(
        "    its worst waits (ms at s into the run): " + ", ".join(f"{ms} at {at:g}" for ms, at in health["worst_at_s"])
    )
    loop = health["hub_event_loop"]
    if loop["longest_s"]:
        print(
            f"  hub event loop (JupyterHub's own 50 ms ticks): {loop['over_100ms']} late by over 100 ms, "
            f"{loop['over_250ms']} by over 250 ms; the latest by {loop['longest_s'][0]:g}-{loop['longest_s'][1]:g} s"
        )
    print(
        f"  hub: peak memory {resources['hub_memory_peak_mib']} MiB, peak CPU {resources['hub_cpu_peak_cores']} cores "
        f"(mean {resources['hub_cpu_mean_cores']})"
    )
    if resources["labs_seen"]:
        print(
            f"  labs: {resources['labs_seen']} seen, per lab p50 {resources['lab_memory_p50_mib']} MiB, max "
            f"{resources['lab_memory_max_mib']} MiB; at most {resources['labs_running_peak']} running together, "
            f"{resources['labs_memory_total_mib']} MiB in all"
        )


def report_cpu(cost: dict) -> None:
    """The table of CPU-seconds per arriving user, with what each figure does not hold."""
    if not cost.get("arrivals"):
        print("  CPU per arriving user: no user ran a first cell, nothing to divide")
        return
    per, median = cost["per_user_s"], cost["median_s"]
    print(
        f"\n  CPU-seconds per arriving user until the first cell ({cost['arrivals']} arrivals in a "
        f"{cost['window_s']:g} s window, {cost['labs_read']} labs read)"
    )
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    rows = [
        (
            "lab",
            per["lab"],
            median["lab"],
            f"the lab container less its kernel; the server alone p50 {fmt(median['lab_server'])}",
        ),
        ("kernel", per["kernel"], median["kernel"], "ipykernel processes, at the first cell"),
        ("docker", per["docker"], None, "dockerd, containerd, shims, runc, docker-proxy (window / arrivals)"),
        ("hub", per["hub"], None, "the hub container: JupyterHub and its proxy (window / arrivals)"),
    ]
    print(f"    {'part':<10} {'mean s':>8} {'p50 s':>8}  how")
    for name, mean, p50, how in rows:
        print(f"    {name:<10} {fmt(mean):>8} {fmt(p50):>8}  {how}")
    print(f"    {'total':<10} {cost['total_s']:>8.3f} {'':>8}  lab + kernel + docker + hub")
    print(f"    {'simulator':<10} {fmt(per['simulator']):>8} {'':>8}  this process (the browsers' stand-in)")
    print(f"    {'rest':<10} {fmt(per['rest']):>8} {'':>8}  the host's other busy time (a remainder, see below)")
    print(f"    {'machine':<10} {fmt(cost['machine_per_user_s']):>8} {'':>8}  all cores' busy time / arrivals")
    notes = []
    if cost["stops_within"]:
        notes.append(
            f"{cost['stops_within']} servers stopped within the window: their stops are in docker and hub "
            "(--hold-stops measures arrivals alone)"
        )
    if not cost["exited_measured"]:
        notes.append(f"processes that exited (runc, shims) are not counted: acct(2) failed ({cost['exited_error']})")
    if not cost["hub_measured"]:
        notes.append("the hub's cgroup was not found: hub is not measured")
    if cost["labs_missed"]:
        notes.append(f"{len(cost['labs_missed'])} labs not found at their first cell (not in lab and kernel)")
    if cost["dockerd_seen"] > 1:
        notes.append(f"{cost['dockerd_seen']} Docker engines ran on the host: docker holds all of them")
    notes.append(
        "rest holds the labs' work after each first cell, the bystander, the kernel and other work on the host"
    )
    for note in notes:
        print(f"    note: {note}")


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    env = {**DEFAULT_ENV, **dict(args.env)}
    say = (
        (lambda message: print(message, file=sys.stderr, flush=True)) if args.json else (lambda m: print(m, flush=True))
    )
    plan = Plan(
        session_s=args.session, think_s=args.think, spawn_timeout_s=args.spawn_timeout, hold_stops=args.hold_stops
    )
    names = [f"load{i:03d}" for i in range(max(args.users, args.storm))]
    results: dict = {
        "users": args.users,
        "ramp_s": args.ramp,
        "session_s": args.session,
        "storm": args.storm,
        "hold_stops": args.hold_stops,
        "env": env,
    }
    os.nice(min(args.nice, 19))  # the bystander is spawned below with its own normal priority restored
    with tempfile.TemporaryDirectory(prefix="hubforge-load-bench-") as tmp:
        say(f"starting a stack ({', '.join(f'{k}={v}' for k, v in env.items())}) ...")
        try:
            live = start_stack(Path(tmp), env)
        except AssertionError as exc:  # the images of the current keys are missing: says which command builds them
            say(f"load.py: {exc}")
            return 2
        try:
            admin = claim_admin(live)
            create_users(live, admin, names, say)
            if args.storm:
                say(f"storm: {args.storm} logins at the same moment ...")
                logins = [(name, PASSWORD) for name in names[: args.storm]]
                results["storm_result"] = dict(
                    zip(
                        ("result", "bystander", "resources", "seconds"),
                        scenario(live, lambda record: storm(live.url, logins, record, 120), 300),
                    )
                )
            if args.users:
                say(f"ramp: {args.users} users over {args.ramp:.0f} s, {args.session:.0f} s sessions ...")
                users = [(name, PASSWORD) for name in names[: args.users]]
                deadline = args.ramp + args.session + args.spawn_timeout + 300
                proxy = live.stack.proxy_container()  # its own container since issue 32: counted with the hub
                meter = Meter((live.hub().id,) + ((proxy["Id"],) if proxy else ()))

                def arrivals(expected: int) -> Arrivals:
                    return Arrivals(expected, meter.first_cell, lambda a: meter.end(a.cells, a.stops_within))

                results["ramp_result"] = dict(
                    zip(
                        ("result", "bystander", "resources", "seconds"),
                        scenario(
                            live,
                            lambda record: ramp(live.url, users, args.ramp, plan, record, arrivals),
                            deadline,
                            meter,
                        ),
                    )
                )
        finally:
            if args.logs:
                live.dump_logs(args.logs, tail="all")
            stop_stack(live)
    own = resource.getrusage(resource.RUSAGE_SELF)
    results["simulator_cpu_s"] = round(own.ru_utime + own.ru_stime, 1)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        if "storm_result" in results:
            r = results["storm_result"]
            report(
                f"{args.storm} simultaneous logins",
                r["result"],
                r["bystander"],
                r["resources"],
                r["seconds"],
                args.storm,
            )
        if "ramp_result" in results:
            r = results["ramp_result"]
            report(
                f"{args.users} users over {args.ramp:.0f} s",
                r["result"],
                r["bystander"],
                r["resources"],
                r["seconds"],
                args.users,
            )
            if "cpu_per_arrival" in r["resources"]:
                report_cpu(r["resources"]["cpu_per_arrival"])
        print(f"\nthe simulator itself used {results['simulator_cpu_s']} s of CPU (it shares the host's cores)")
    failed = any(
        phase["failed"]
        for r in ("storm_result", "ramp_result")
        if r in results
        for phase in results[r]["result"]["phases"].values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
